/* Classic BPF front end and classic -> eBPF translator.
 *
 * compile_classic() runs libpcap's pcap_compile() (the tcpdump filter
 * language); translate_classic() turns its classic program into eBPF for
 * EbpfVm with the VmArg::kPacket calling convention (ebpf_vm.hh).
 *
 * Why not rte_bpf_convert(): in DPDK 22.11 it makes every BPF_LD|BPF_IND load
 * index with A instead of X, and its output relies on rte_bpf's LD_ABS/LD_IND,
 * which need an rte_mbuf. This translator emits only plain eBPF that the
 * differential test (tests/filters/bpf_differential_test.cc) proves equal to
 * libpcap's bpf_filter() on rte_bpf's interpreter and JIT alike:
 *   - A = r0, X = r2, data = r1, caplen = r3, wirelen = r6 (only if used),
 *     r4/r5 scratch, M[i] in the stack slot at r10 - 8*(i+1) (32-bit);
 *   - every packet load is preceded by an explicit check against caplen; an
 *     out-of-bounds load returns 0, as in bpf_filter(); loads are plain
 *     ldx{b,h,w} followed by be16/be32;
 *   - A and X stay zero-extended 32-bit values (32-bit ALU ops only);
 *   - division or modulo by X = 0 returns 0; shifts by X >= 32 give 0, as in
 *     libpcap 1.10's bpf_filter();
 *   - JSET is never emitted with an immediate (the 22.11 x86-64 JIT encodes
 *     it wrongly and the native code crashes): the mask goes through r4 first,
 *     as do comparisons with K >= 2^31 (eBPF immediates are sign-extended);
 *   - BPF_LD|BPF_LEN reads wirelen (libpcap passes wirelen as `len`).
 * All functions but classic_run() run on the control thread and may allocate
 * (cbpf_to_ebpf.cc); classic_run() is the run side (classic_run.cc).
 */
#pragma once

#include <bpf_def.h>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/result.hh"
#include "filters/classic_insn.hh"

namespace linecap::filters {

/* pcap_compile(pcap_open_dead(linktype, snaplen), expression, optimize=1,
 * netmask), netmask in host byte order (0: unknown network, as tcpdump
 * compiles for files; `ip broadcast` then matches 0.0.0.0 and
 * 255.255.255.255). On failure the message is libpcap's own (pcap_geterr),
 * e.g. "syntax error". An empty expression compiles to "accept everything"
 * (one `ret #snaplen`). */
Result<std::vector<ClassicInsn>> compile_classic(const std::string& expression, int linktype,
                                                 uint32_t snaplen, uint32_t netmask = 0);

/* `tcpdump -d` style listing, one bpf_image() line per instruction. */
std::string classic_listing(std::span<const ClassicInsn> prog);

/* Runs libpcap's bpf_filter() (the reference semantics): returns the snap
 * length the program accepts the packet with, 0 to reject. Workers run it for
 * programs translate_classic() refuses as loops; it never allocates. */
uint32_t classic_run(std::span<const ClassicInsn> prog, const uint8_t* data, uint32_t wirelen,
                     uint32_t caplen);

/* Part of translate_classic()'s message for programs that loop. */
inline constexpr const char* kLoopMessage = "backward jump (a loop), which rte_bpf cannot run";

/* Classic -> eBPF. Fails, naming the classic instruction index, on
 *  - loops: libpcap's `protochain` walks IPv6/IPv4 header chains with a
 *    backward `ja`; rte_bpf's verifier refuses any loop and the number of
 *    iterations depends on the packet, so it cannot be unrolled exactly. The
 *    error's code() is then ELOOP and its message contains kLoopMessage;
 *    callers run such programs with classic_run() instead;
 *  - programs libpcap would not produce: out-of-range jumps, scratch index
 *    >= 16, shift by a constant >= 32, division by constant 0, unknown
 *    opcodes. */

Result<std::vector<ebpf_insn>> translate_classic(std::span<const ClassicInsn> prog);

}  // namespace linecap::filters
