/* eBPF programs from ELF objects: `--bpf-object FILE[:PROGRAM]`.
 *
 * load_bpf_object() opens an object built with `clang -O2 -target bpf -c`
 * through libbpf (no kernel involved: nothing is loaded into the kernel),
 * picks one program and returns its instructions for EbpfVm (rte_bpf).
 * Control thread only; it allocates and reads the file.
 *
 * Calling convention of a program (EbpfVm's VmArg::kPacket, ebpf_vm.hh):
 *   - r1 = const filters::Packet* { const uint8_t* data; uint32_t caplen;
 *     uint32_t wirelen; } (16 bytes; C declaration for programs in
 *     filters/examples/linecap_bpf.h).
 *   - return non-zero to capture the packet, 0 to drop it.
 *   - the packet and the Packet struct are read-only. rte_bpf does not
 *     enforce this; a program that writes to them is wrong.
 *   - the program must compare every offset with caplen before it reads.
 *
 * What rte_bpf's load-time validator (DPDK 22.11) does with packet reads,
 * measured by the "Validator*" tests in tests/filters/bpf_object_test.cc:
 *   - with the context declared {RTE_BPF_ARG_PTR, sizeof(Packet)}, a value
 *     loaded from ctx->data is a plain scalar and EVERY read through it is
 *     refused at load ("destination is not a pointer"); reads of the
 *     Packet fields themselves outside its 16 bytes are refused too.
 *   - EbpfVm therefore declares the context RTE_BPF_ARG_PTR_MBUF: the 8-byte
 *     load at offset 0 (rte_mbuf's buf_addr, Packet's data) becomes a
 *     pointer to buf_size bytes. The validator accepts a read only when it
 *     can prove, from constants and comparisons with constants (signed and
 *     unsigned ranges both), that it lies inside [0, buf_size). An offset
 *     only compared with caplen is refused at load; offsets derived from
 *     header fields (IHL*4, TCP data offset) pass.
 *   - it knows nothing of caplen: a read past caplen but inside buf_size is
 *     NOT caught, at load or at run time. It is unsafe (reads memory after
 *     the frame). A program must check caplen itself.
 *   - BPF_LD_ABS/BPF_LD_IND would make rte_bpf treat the Packet as an
 *     rte_mbuf, so load_bpf_object() refuses them.
 */
#pragma once

#include <bpf_def.h>  // DPDK: struct ebpf_insn, same layout as the kernel's struct bpf_insn

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dataplane/result.hh"
#include "filters/rule_set.hh"

namespace linecap::filters {

/* One program taken out of an ELF object. */
struct BpfProgram {
    std::string file;     // path as given
    std::string name;     // program (function) name
    std::string section;  // ELF section, e.g. "linecap"
    std::vector<ebpf_insn> insns;
    uint32_t rewritten_adds = 0;  // see normalize_pointer_adds()
};

/* Loads `spec` = FILE[:PROGRAM]. When FILE itself exists, the whole spec is
 * the file name; otherwise the part after the last ':' names the program.
 * Without PROGRAM the object must hold exactly one program. Errors (the
 * message always starts with "bpf object 'FILE': "):
 *   - missing/unreadable/non-ELF file, with libbpf's own message (libbpf's
 *     stderr printing is captured, never printed);
 *   - no programs; several programs and none named (they are listed);
 *     unknown program name (the available ones are listed);
 *   - instructions EbpfVm cannot run, see check_bpf_program(). */
Result<BpfProgram> load_bpf_object(std::string_view spec);
Result<BpfProgram> load_bpf_object(const std::string& path, std::string_view program);

/* Refuses, naming the instruction index and opcode, what EbpfVm cannot run:
 * map and global-data references (64-bit immediate loads carrying a
 * relocation or a BPF_PSEUDO_* source), helper calls, BPF-to-BPF calls,
 * atomic operations other than a plain add, BPF_LD_ABS/IND, 32-bit jumps
 * (BPF_JMP32, compile with -mcpu=v1 or v2), a truncated 64-bit immediate and
 * an empty program. `relocated` (optional, same length as insns) names, for
 * each instruction the ELF object carries a relocation for, the symbol it
 * refers to (a map, ".rodata", an extern); other entries are empty. */
Status check_bpf_program(std::span<const ebpf_insn> insns,
                         std::span<const std::string> relocated = {});

/* rte_bpf 22.11's validator loses the pointer type of "scalar += pointer"
 * (it keeps it for "pointer += scalar"), and clang emits either order. This
 * rewrites each add that a forward type analysis proves to be "scalar +=
 * pointer" on every path into an equivalent sequence that ends in "pointer
 * += scalar" (through one spare 8-byte stack slot, no register), and
 * re-targets branches. Returns how many adds it rewrote; 0 leaves `insns`
 * untouched (nothing to do, or the analysis cannot place the stack slot).
 * load_bpf_object() applies it. */
uint32_t normalize_pointer_adds(std::vector<ebpf_insn>& insns);

}  // namespace linecap::filters
