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
 *   - the packet and the Packet struct are read-only.
 *
 * An object comes from whoever may name a file to capd, which includes the
 * control group (ctl/handlers_rules.cc decides which files they may name),
 * so a program is untrusted: verify_filter() (bpf_verifier.hh) checks it
 * before rte_bpf sees it, and it runs on a per-worker copy of the packet
 * (PacketStage, ebpf_vm.hh) of packet_reach bytes, zero past caplen. A read
 * past caplen therefore sees zeros; programs should still compare offsets
 * with caplen, since a zero is not packet data.
 *
 * rte_bpf's own validator (DPDK 22.11) still runs on what verify_filter()
 * accepts, and is stricter in one way, measured by the "Validator*" tests
 * in tests/filters/bpf_object_test.cc:
 *   - the context is declared to it RTE_BPF_ARG_PTR_MBUF (with a plain
 *     pointer type a value loaded from ctx->data is a scalar and EVERY read
 *     through it is refused), so the 8-byte load at offset 0 (rte_mbuf's
 *     buf_addr, Packet's data) becomes a pointer to kVerifierPacketSpan
 *     bytes. It accepts a read only when it can bound the offset from
 *     constants and comparisons with constants (signed and unsigned ranges
 *     both): an offset only compared with caplen is refused at load;
 *     offsets derived from header fields (IHL*4, TCP data offset) pass.
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

#include "common/result.hh"
#include "filters/rule_set_compile.hh"

namespace linecap::filters {

/* One program taken out of an ELF object. */
struct BpfProgram {
    std::string file;               // path as given
    std::string name;               // program (function) name
    std::string section;            // ELF section, e.g. "linecap"
    std::vector<ebpf_insn> insns;   // after normalize_pointer_adds(); what EbpfVm loads
    uint32_t rewritten_adds = 0;    // see normalize_pointer_adds()
    uint32_t packet_reach = 0;      // verify_filter(): every packet read lies below this
    uint64_t validator_visits = 0;  // verify_filter(): rte_bpf's validation work
};

/* Largest object file capd reads. clang -g objects of a few thousand
 * instructions take a few hundred KiB. */
inline constexpr size_t kMaxObjectBytes = size_t{4} << 20;

/* Loads `spec` = FILE[:PROGRAM]. When FILE itself exists, the whole spec is
 * the file name; otherwise the part after the last ':' names the program.
 * Without PROGRAM the object must hold exactly one program. Errors (the
 * message always starts with "bpf object 'FILE': "):
 *   - what read_object_file() refuses, and non-ELF files;
 *   - libbpf's own message when it cannot open the object (libbpf's stderr
 *     printing is captured, never printed);
 *   - no programs; several programs and none named (they are listed);
 *     unknown program name (the available ones are listed);
 *   - instructions EbpfVm cannot run, see check_bpf_program(), and
 *     programs verify_filter() refuses, "program 'x': insn 7 (stxw [r1],
 *     r2): store to the context". */
Result<BpfProgram> load_bpf_object(std::string_view spec);
Result<BpfProgram> load_bpf_object(const std::string& path, std::string_view program);

/* The same from an object file's bytes (read_object_file()); `label` names
 * the file in messages and in BpfProgram::file. */
Result<BpfProgram> load_bpf_object_image(std::string image, const std::string& label,
                                         std::string_view program);

/* Opens `path` (relative to directory `dirfd`, or AT_FDCWD) exactly once,
 * O_RDONLY|O_NOFOLLOW|O_NONBLOCK|O_CLOEXEC, and reads it whole. Refuses,
 * after fstat() of the descriptor and before reading a byte, anything but a
 * regular file of at most kMaxObjectBytes: a symbolic link (not followed),
 * a directory, a FIFO (neither blocks nor is read), a device. Errors, with
 * no file name: "no such file", "is a symbolic link; ...", "is a
 * directory", "is not a regular file", "is N bytes, more than ...",
 * "cannot open: <strerror>". Control thread. */
Result<std::string> read_object_file(int dirfd, const std::string& path);

/* capd --bpf-dir DIR: the directory the control group may load objects
 * from must be a directory owned by root that neither its group nor others
 * may write (else a member could plant a file or a link there). */
Status check_bpf_dir(const std::string& dir);

/* Refuses, naming the instruction ("insn 4 (lddw r1, #0): "), what EbpfVm cannot run:
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
