/* Load-time checks of an untrusted eBPF filter program (--bpf-object),
 * run before rte_bpf ever sees it. Control thread only; allocates.
 *
 * rte_bpf 22.11's own validator checks far less than the kernel's: it lets a
 * program store to its context and to the packet (so it can aim the data
 * pointer at the context itself, or anywhere, and read through it), add two
 * pointers, read half a pointer, and leak pointer bits through arithmetic,
 * comparisons and the verdict (tests/filters/bpf_object_test.cc
 * "RteBpfAloneAcceptsThem"). It also walks every path of the program, so
 * its time grows exponentially with the branches in it.
 * verify_filter() is our own check, one forward pass over the program
 * (linear in its size), and accepts only programs that:
 *   - read the context (filters::Packet) field by field: `data` as a whole
 *     8-byte pointer, caplen and wirelen as numbers; nothing outside its 16
 *     bytes and nothing that splits the pointer;
 *   - never store to the context or the packet (filters are read-only; the
 *     512-byte stack is theirs);
 *   - read the packet only at offsets whose range it can bound, below
 *     kVerifierPacketSpan; the largest end offset is `packet_reach`. The
 *     program then runs on a per-worker copy of the packet of that size,
 *     zero past caplen (PacketStage, ebpf_vm.hh), so a read past caplen
 *     sees zeros, never a previous packet or the memory after the frame;
 *   - read the stack only where it wrote it, and a spilled pointer only
 *     whole;
 *   - do nothing with a pointer but add or subtract a number, subtract two
 *     packet pointers, compare two packet pointers, spill and fill it: no
 *     pointer reaches r0, a comparison with a number, a 32-bit operation or
 *     a partial store (each would hand address bits to the program);
 *   - never divide by zero, call anything, loop (jump backwards), jump
 *     outside the program or into a 64-bit immediate, use a register
 *     before setting it, or fall off the end;
 *   - have at most kMaxFilterInsns instructions and at most
 *     kMaxValidatorVisits instruction visits in rte_bpf's validator.
 * Errors name the instruction: "insn 7 (stxw [r1], r2): store to the
 * context".
 */
#pragma once

#include <bpf_def.h>

#include <cstdint>
#include <span>

#include "common/result.hh"

namespace linecap::filters {

/* Longest untrusted program. Our pass is linear; the cap keeps rte_bpf's
 * load and JIT and `capd -d` output small. */
inline constexpr size_t kMaxFilterInsns = 4096;

/* rte_bpf 22.11 validates by walking every path from the first
 * instruction, so its work is at most the number of (path, instruction)
 * pairs, validator_visits() (it merges two edges to the same instruction
 * and prunes some branches, so often less), and doubles with each
 * sequential branch: 2k+3 instructions with k if-diamonds take 0.19 ms at
 * k = 8, 47 ms at k = 16 and 0.83 s at k = 20, about 240 ns per visit
 * (bench/filter_bench RteBpfValidate/diamonds, 2-vCPU EPYC VM under load);
 * diamonds that also store to the stack take up to 600 ns per visit. This
 * cap bounds rte_bpf's load of an untrusted program to about 0.15 s of the
 * control thread here. The tcpdump expressions the tests translate need at
 * most a few hundred visits (bpf_differential_test
 * "TranslatedExpressionsStayUnderTheObjectCaps"). */
inline constexpr uint64_t kMaxValidatorVisits = 250'000;

struct VerifiedFilter {
    /* Every packet read of the program lies in [0, packet_reach) bytes from
     * Packet::data (0: it reads none). <= kVerifierPacketSpan. */
    uint32_t packet_reach = 0;
    /* validator_visits() of the program. */
    uint64_t validator_visits = 0;
};

/* Checks an untrusted filter program (calling convention VmArg::kPacket,
 * ebpf_vm.hh) as described above. Errors: "insn N (DISASSEMBLY): REASON",
 * or for the caps "4100 instructions, more than the 4096 allowed" and
 * "3000000 paths' worth of instructions ... more than the ... allowed". */
Result<VerifiedFilter> verify_filter(std::span<const ebpf_insn> insns);

/* Instruction visits of rte_bpf 22.11's validator: for each instruction,
 * the number of paths from the first one that reach it, summed. Needs a
 * program whose jumps all go forward (others count as exits); linear time.
 * Saturates at `limit`. */
uint64_t validator_visits(std::span<const ebpf_insn> insns, uint64_t limit = UINT64_MAX);

}  // namespace linecap::filters
