/* EbpfVm: one eBPF program loaded into DPDK's rte_bpf, run natively (x86-64
 * JIT) or by rte_bpf's interpreter.
 *
 * Cold side (control thread, ebpf_vm_compile.cc): load() checks the program, rewrites instruction
 * forms that rte_bpf 22.11's JIT is known to miscompile, loads it with
 * rte_bpf_load() (which runs rte_bpf's verifier) and asks for native code with
 * rte_bpf_get_jit(). It may allocate and fail. No EAL is needed.
 *
 * Hot side (workers, ebpf_vm_run.cc and inline here): run*() are const and thread-safe: a loaded program has
 * no writable state of its own, so many workers may run one EbpfVm at once.
 * They never allocate, lock, log or make syscalls. Measured cost: see
 * bench/filter_bench.cc.
 *
 * Calling convention (VmArg::kPacket, the default and what filters use):
 *   r1 = const filters::Packet*  (rule_set_run.hh)
 *        offset 0: const uint8_t* data   -> readable as a byte pointer
 *        offset 8: uint32_t caplen       -> bytes readable at data
 *        offset 12: uint32_t wirelen     -> original length on the wire
 *   r0 at exit = verdict; non-zero accepts (classic BPF: the snap length).
 * rte_bpf's verifier only types a pointer loaded from the context when the
 * context is declared RTE_BPF_ARG_PTR_MBUF and the load is at offset 0 (where
 * rte_mbuf keeps buf_addr). Packet keeps `data` at offset 0 for this reason,
 * and kPacket is declared to rte_bpf that way, with a 16-byte context. The
 * verifier does NOT bound reads through `data` by caplen, and lets a program
 * store to the context and the packet. EbpfVm therefore runs only trusted
 * programs directly: the classic translator's (cbpf_to_ebpf.hh), which
 * compare every offset with caplen before they read. Untrusted objects pass
 * verify_filter() (bpf_verifier.hh) first and run on a PacketStage.
 */
#pragma once

#include <bpf_def.h>  // struct ebpf_insn (DPDK); layout-identical to linux struct bpf_insn

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/result.hh"
#include "filters/rule_set_run.hh"

struct rte_bpf;
struct rte_bpf_xsym;

namespace linecap::filters {

/* Largest caplen a kPacket program handles: the classic snaplen limit.
 * Packets must not claim more (the classic translator treats larger offsets
 * as out of bounds). */
inline constexpr uint32_t kMaxCaplen = 262144;
/* Bytes past `data` that rte_bpf's verifier lets a kPacket program address
 * (kMaxCaplen plus the widest load). */
inline constexpr size_t kVerifierPacketSpan = kMaxCaplen + 8;

/* What r1 holds when the program starts. */
enum class VmArg : uint8_t {
    kPacket,   // const Packet* (see above); run(const Packet&) passes it
    kPointer,  // pointer to arg_size readable bytes; use run_ctx()
    kRaw,      // a scalar of arg_size bytes (<= 8); use run_ctx((void*)value)
};

struct VmOptions {
    bool jit = true;  // false: always use the interpreter
    VmArg arg = VmArg::kPacket;
    size_t arg_size = 0;  // kPointer/kRaw only
    /* External functions/variables the program may call or load (BPF_CALL imm
     * = index into this array). Must outlive the EbpfVm. */
    const rte_bpf_xsym* xsyms = nullptr;
    uint32_t nb_xsyms = 0;
};

/* PacketStage: one worker's private copy of the packet for an untrusted
 * program (--bpf-object). The program gets a pointer to this Packet, whose
 * data points into this buffer: never the mbuf, never the burst's Packet
 * array, which other rules go on to read.
 *
 * verify_filter() (bpf_verifier.hh) proves that every packet read of the
 * program lies below its `packet_reach`; the buffer holds that many bytes.
 * stage() copies min(caplen, reach) bytes and zeroes whatever an earlier
 * packet left past them, so a read past caplen sees zeros: not the next
 * packet in the mbuf's data room, not memory after the frame. caplen is
 * clamped to kMaxCaplen (the verifier assumes no more).
 *
 * Made on the control thread (allocates `reach` bytes), then used by one
 * worker only; stage() never allocates. */
class PacketStage {
public:
    explicit PacketStage(uint32_t reach = 0);
    PacketStage(const PacketStage&) = delete;
    PacketStage& operator=(const PacketStage&) = delete;

    /* Copies `p` in and returns the private Packet to run the program on;
     * valid until the next stage(). Cost: a copy of min(caplen, reach)
     * bytes plus, when the previous packet was longer, a memset of the
     * difference (bench/filter_bench.cc "Object/staged" against
     * "Object/direct"). */
    const Packet& stage(const Packet& p) noexcept {
        const uint32_t caplen = p.caplen < kMaxCaplen ? p.caplen : kMaxCaplen;
        const uint32_t n = caplen < reach_ ? caplen : reach_;
        std::memcpy(buf_.get(), p.data, n);
        if (dirty_ > n) std::memset(buf_.get() + n, 0, dirty_ - n);
        dirty_ = n;
        pkt_ = Packet{buf_.get(), caplen, p.wirelen};
        return pkt_;
    }
    uint32_t reach() const noexcept { return reach_; }

private:
    std::unique_ptr<uint8_t[]> buf_;
    uint32_t reach_ = 0;
    uint32_t dirty_ = 0;  // leading bytes of buf_ that may be non-zero
    Packet pkt_{};
};

class EbpfVm {
public:
    /* Loads `insns` (copied; the span need not outlive the call).
     * - If opts.jit and the program contains `JSET dst, imm` (miscompiled by
     *   rte_bpf 22.11's x86-64 JIT: it encodes the test immediate with the
     *   wrong width and the native code crashes), each one is rewritten to
     *   `MOV tmp, imm; JSET dst, tmp` using a register the program never
     *   touches. If no register is free, the program runs interpreted and
     *   engine() says why.
     * - If rte_bpf refuses the program, the error carries rte_errno's text
     *   and, when it can be located, the index of the offending instruction
     *   in `insns` ("instruction 7 (ldxw r0, [r2+0]): Invalid argument").
     * - If the JIT produces no code, the program runs interpreted. */
    static Result<std::unique_ptr<EbpfVm>> load(std::span<const ebpf_insn> insns,
                                                const VmOptions& opts);
    static Result<std::unique_ptr<EbpfVm>> load(std::span<const ebpf_insn> insns, bool jit = true);

    ~EbpfVm();
    EbpfVm(const EbpfVm&) = delete;
    EbpfVm& operator=(const EbpfVm&) = delete;

    /* Runs the program on one packet (kPacket only), natively if jitted(). */
    uint64_t run(const Packet& pkt) const noexcept {
        void* ctx = const_cast<Packet*>(&pkt);
        return jit_ != nullptr ? jit_(ctx) : run_interpreted_ctx(ctx);
    }
    /* Same with an arbitrary context (kPointer/kRaw). */
    uint64_t run_ctx(void* ctx) const noexcept {
        return jit_ != nullptr ? jit_(ctx) : run_interpreted_ctx(ctx);
    }
    /* Always uses rte_bpf's interpreter (tests compare it with the JIT). */
    uint64_t run_interpreted(const Packet& pkt) const noexcept {
        return run_interpreted_ctx(const_cast<Packet*>(&pkt));
    }
    uint64_t run_interpreted_ctx(void* ctx) const noexcept;

    /* rc[i] = run(pkts[i]) for i < n. */
    void run_burst(const Packet* pkts, uint32_t n, uint64_t* rc) const noexcept;

    bool jitted() const noexcept { return jit_ != nullptr; }
    /* Native code size in bytes, 0 when interpreted. */
    size_t jit_size() const noexcept { return jit_size_; }
    /* One line: "x86-64 JIT, 312 bytes" or "interpreter (reason)". */
    const std::string& engine() const noexcept { return engine_; }
    /* The instructions as loaded, after any rewrite. */
    std::span<const ebpf_insn> insns() const noexcept { return insns_; }
    /* How many JSET-immediate instructions load() rewrote. */
    uint32_t rewritten_jset() const noexcept { return rewritten_jset_; }

private:
    EbpfVm() = default;

    using JitFn = uint64_t (*)(void*);
    JitFn jit_ = nullptr;
    rte_bpf* bpf_ = nullptr;
    size_t jit_size_ = 0;
    uint32_t rewritten_jset_ = 0;
    std::vector<ebpf_insn> insns_;
    std::string engine_;
};

}  // namespace linecap::filters
