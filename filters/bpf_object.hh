/* eBPF programs from ELF objects: `--bpf-object FILE[:PROGRAM]`.
 *
 * load_bpf_object() opens an object built with `clang -O2 -target bpf -c`
 * through libbpf (no kernel involved: nothing is loaded into the kernel),
 * picks one program and returns its instructions for EbpfVm (rte_bpf).
 * Control thread only; it allocates and reads the file.
 *
 * Calling convention of a program:
 *   - r1 = const filters::Packet* { const uint8_t* data; uint32_t caplen;
 *     uint32_t wirelen; } (16 bytes; see filters/examples/linecap_bpf.h).
 *   - return non-zero to capture the packet, 0 to drop it.
 *   - the packet and the Packet struct are read-only. rte_bpf does not
 *     enforce this; a program that writes to them is wrong.
 *   - the program must check offsets against caplen itself.
 *
 * What rte_bpf's load-time validator (DPDK 22.11) does with packet reads,
 * measured (tests/filters/bpf_object_test.cc, "Validator*" tests):
 *   - with prog_arg {RTE_BPF_ARG_PTR, size = sizeof(Packet)}, a value loaded
 *     from ctx->data is a plain scalar, and EVERY read through it is refused
 *     at load ("destination is not a pointer"). Such a context is useless.
 *   - with bpf_packet_arg() below, {RTE_BPF_ARG_PTR_MBUF, size =
 *     sizeof(Packet), buf_size = kBpfPacketWindow}, the validator treats the
 *     8-byte load at offset 0 (where rte_mbuf has buf_addr, and Packet has
 *     data) as a pointer to kBpfPacketWindow bytes. A read is accepted only
 *     when the validator can prove, from constants and comparisons with
 *     constants (both its signed and unsigned ranges), that it lies inside
 *     [0, kBpfPacketWindow). Offsets derived from header fields (IHL*4,
 *     TCP data offset) pass naturally; an offset only compared with caplen
 *     is refused at load.
 *   - the validator knows nothing of caplen: inside the window, a read past
 *     caplen is NOT caught at run time. It reads whatever bytes follow the
 *     frame. It is memory safe only if the VM guarantees kBpfPacketWindow
 *     readable bytes at data (e.g. by copying frames shorter than the window
 *     into a per-worker buffer of that size); it is correct only if the
 *     program compares its offsets with caplen.
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

struct rte_bpf_arg;  // <rte_bpf.h>

namespace linecap::filters {

/* Bytes at Packet::data a program may read (see above). */
inline constexpr uint32_t kBpfPacketWindow = 512;

/* The rte_bpf_prm::prog_arg that gives a program the convention above:
 * {RTE_BPF_ARG_PTR_MBUF, sizeof(Packet), kBpfPacketWindow}. Include
 * <rte_bpf.h> to call it. */
rte_bpf_arg bpf_packet_arg();

/* One program taken out of an ELF object. */
struct BpfProgram {
    std::string file;     // path as given
    std::string name;     // program (function) name
    std::string section;  // ELF section, e.g. "linecap"
    std::vector<ebpf_insn> insns;
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

}  // namespace linecap::filters
