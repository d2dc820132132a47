/* EbpfVm, load side: checks and rewrites a program, loads it into rte_bpf
 * (its verifier) and asks for native code. Control thread (ebpf_vm.hh); the
 * run side is ebpf_vm_run.cc. */
#include "filters/ebpf_vm.hh"

#include <rte_bpf.h>
#include <rte_errno.h>
#include <rte_log.h>
#include <rte_mbuf.h>

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "filters/disasm.hh"

namespace linecap::filters {

// The kPacket convention leans on rte_bpf's verifier typing a load from offset
// 0 of an mbuf context as a data pointer (see ebpf_vm.hh).
static_assert(offsetof(rte_mbuf, buf_addr) == 0);
static_assert(offsetof(Packet, data) == 0 && offsetof(Packet, caplen) == 8 &&
              offsetof(Packet, wirelen) == 12 && sizeof(Packet) == 16);

namespace {

constexpr uint8_t kJsetImm = BPF_JMP | BPF_JSET | BPF_K;
constexpr uint8_t kLdImm64 = BPF_LD | BPF_IMM | EBPF_DW;

bool is_branch(const ebpf_insn& in) {
    if (BPF_CLASS(in.code) != BPF_JMP) return false;
    const uint8_t op = BPF_OP(in.code);
    return op != EBPF_CALL && op != EBPF_EXIT;
}

bool is_pseudo_call(const ebpf_insn& in) {
    return in.code == (BPF_JMP | EBPF_CALL) && in.src_reg == EBPF_PSEUDO_CALL;
}

/* A register no instruction names in any field, preferring callee-saved ones
 * (they survive helper calls). -1 if there is none. Conservative: a zero
 * src field of an immediate form counts as a use of r0. */
int find_free_register(std::span<const ebpf_insn> insns) {
    uint32_t used = 0;
    bool calls = false;
    for (const auto& in : insns) {
        used |= 1u << in.dst_reg;
        used |= 1u << in.src_reg;
        if (in.code == (BPF_JMP | EBPF_CALL)) calls = true;
    }
    for (int r = EBPF_REG_9; r >= (calls ? EBPF_REG_6 : EBPF_REG_0); r--)
        if ((used & (1u << r)) == 0) return r;
    return -1;
}

struct Rewritten {
    std::vector<ebpf_insn> insns;
    std::vector<uint32_t> origin;  // new index -> index in the caller's program
    uint32_t jsets = 0;
};

/* Replaces every `JSET dst, imm` with `MOV64 tmp, imm; JSET dst, tmp` and
 * re-targets all branches. MOV64 sign-extends imm exactly as JSET-imm does,
 * so the test is bit-for-bit the same. Returns false when a new branch offset
 * no longer fits the 16-bit field. */
bool rewrite_jset_imm(std::span<const ebpf_insn> in, int tmp, Rewritten& out) {
    const size_t n = in.size();
    std::vector<uint32_t> pos(n + 1);
    uint32_t next = 0;
    for (size_t i = 0; i < n; i++) {
        pos[i] = next;
        next += (in[i].code == kJsetImm) ? 2 : 1;
    }
    pos[n] = next;

    out.insns.clear();
    out.origin.clear();
    out.insns.reserve(next);
    for (size_t i = 0; i < n; i++) {
        ebpf_insn ins = in[i];
        if (ins.code == kJsetImm) {
            ebpf_insn mov{};
            mov.code = EBPF_ALU64 | EBPF_MOV | BPF_K;
            mov.dst_reg = static_cast<uint8_t>(tmp);
            mov.imm = ins.imm;
            out.insns.push_back(mov);
            out.origin.push_back(static_cast<uint32_t>(i));
            ins.code = BPF_JMP | BPF_JSET | BPF_X;
            ins.src_reg = static_cast<uint8_t>(tmp);
            ins.imm = 0;
            out.jsets++;
        }
        const long self = static_cast<long>(out.insns.size());
        if (is_branch(ins)) {
            const long target = static_cast<long>(i) + 1 + ins.off;
            if (target < 0 || target > static_cast<long>(n)) return false;
            const long off = static_cast<long>(pos[target]) - self - 1;
            if (off < std::numeric_limits<int16_t>::min() ||
                off > std::numeric_limits<int16_t>::max())
                return false;
            ins.off = static_cast<int16_t>(off);
        } else if (is_pseudo_call(ins)) {
            const long target = static_cast<long>(i) + 1 + ins.imm;
            if (target < 0 || target > static_cast<long>(n)) return false;
            ins.imm = static_cast<int32_t>(static_cast<long>(pos[target]) - self - 1);
        }
        out.insns.push_back(ins);
        out.origin.push_back(static_cast<uint32_t>(i));
    }
    return true;
}

/* rte_bpf reports why it refused a program only through its log. Capture the
 * log for the duration of one load so the message can reach the user. */
class LogCapture {
public:
    LogCapture() {
        prev_ = rte_log_get_stream();
        mem_ = open_memstream(&buf_, &len_);
        if (mem_ != nullptr) rte_openlog_stream(mem_);
    }
    ~LogCapture() {
        finish();
        std::free(buf_);
    }
    std::string finish() {
        if (mem_ != nullptr) {
            rte_openlog_stream(prev_);
            std::fclose(mem_);
            mem_ = nullptr;
        }
        return buf_ != nullptr ? std::string(buf_, len_) : std::string();
    }

private:
    FILE* prev_ = nullptr;
    FILE* mem_ = nullptr;
    char* buf_ = nullptr;
    size_t len_ = 0;
};

/* Pulls "pc: N" / "pc:N" out of rte_bpf's verifier message. */
long find_pc(const std::string& log) {
    size_t p = log.find("pc:");
    if (p == std::string::npos) return -1;
    p += 3;
    while (p < log.size() && log[p] == ' ') p++;
    char* end = nullptr;
    const long v = std::strtol(log.c_str() + p, &end, 10);
    return end == log.c_str() + p ? -1 : v;
}

std::string first_line(const std::string& log) {
    std::string line;
    size_t start = 0;
    while (start < log.size()) {
        size_t nl = log.find('\n', start);
        std::string l = log.substr(start, nl == std::string::npos ? nl : nl - start);
        start = nl == std::string::npos ? log.size() : nl + 1;
        if (!l.empty()) {
            line = l;
            break;
        }
    }
    return line;
}

}  // namespace

Result<std::unique_ptr<EbpfVm>> EbpfVm::load(std::span<const ebpf_insn> insns, bool jit) {
    VmOptions o;
    o.jit = jit;
    return load(insns, o);
}

Result<std::unique_ptr<EbpfVm>> EbpfVm::load(std::span<const ebpf_insn> insns,
                                             const VmOptions& opts) {
    if (insns.empty()) return make_error("empty eBPF program");
    if (insns.size() > std::numeric_limits<uint32_t>::max() / 2)
        return make_error("eBPF program too large");

    std::unique_ptr<EbpfVm> vm(new EbpfVm());
    std::string interp_reason = opts.jit ? "" : "JIT disabled";

    // Decide which instructions rte_bpf will see.
    std::vector<uint32_t> origin;  // loaded index -> caller's index
    bool has_jset_imm = false;
    for (const auto& in : insns) has_jset_imm |= in.code == kJsetImm;
    bool want_jit = opts.jit;
    if (want_jit && has_jset_imm) {
        const int tmp = find_free_register(insns);
        Rewritten rw;
        if (tmp >= 0 && rewrite_jset_imm(insns, tmp, rw)) {
            vm->insns_ = std::move(rw.insns);
            origin = std::move(rw.origin);
            vm->rewritten_jset_ = rw.jsets;
        } else {
            want_jit = false;
            interp_reason = tmp < 0 ? "JSET with immediate and no free register to rewrite it"
                                    : "JSET with immediate; rewrite would overflow a branch";
        }
    }
    if (vm->insns_.empty()) {
        vm->insns_.assign(insns.begin(), insns.end());
        origin.resize(insns.size());
        for (size_t i = 0; i < origin.size(); i++) origin[i] = static_cast<uint32_t>(i);
    }

    rte_bpf_prm prm{};
    prm.ins = vm->insns_.data();
    prm.nb_ins = static_cast<uint32_t>(vm->insns_.size());
    prm.xsym = opts.xsyms;
    prm.nb_xsym = opts.nb_xsyms;
    switch (opts.arg) {
        case VmArg::kPacket:
            prm.prog_arg.type = RTE_BPF_ARG_PTR_MBUF;
            prm.prog_arg.size = sizeof(Packet);
            prm.prog_arg.buf_size = kVerifierPacketSpan;
            break;
        case VmArg::kPointer:
            if (opts.arg_size == 0) return make_error("pointer argument needs a size");
            prm.prog_arg.type = RTE_BPF_ARG_PTR;
            prm.prog_arg.size = opts.arg_size;
            break;
        case VmArg::kRaw:
            if (opts.arg_size == 0 || opts.arg_size > sizeof(uint64_t))
                return make_error("raw argument must be 1..8 bytes");
            prm.prog_arg.type = RTE_BPF_ARG_RAW;
            prm.prog_arg.size = opts.arg_size;
            break;
    }

    LogCapture capture;
    rte_errno = 0;
    vm->bpf_ = rte_bpf_load(&prm);
    const int err = rte_errno;
    const std::string log = capture.finish();
    if (vm->bpf_ == nullptr) {
        std::string msg = "eBPF program rejected";
        const long pc = find_pc(log);
        if (pc >= 0 && static_cast<size_t>(pc) < vm->insns_.size()) {
            msg += " at instruction " + std::to_string(origin[pc]) + " (" +
                   disassemble_one(vm->insns_, static_cast<size_t>(pc)) + ")";
        }
        std::string why = first_line(log);
        // rte_bpf's pc counts the rewritten program; the index above is the caller's.
        if (const size_t at = why.find(" at pc"); at != std::string::npos) why.resize(at);
        if (!why.empty()) msg += ": " + why;
        msg += std::string(" [") + rte_strerror(err != 0 ? err : EINVAL) + "]";
        return make_error(std::move(msg));
    }

    if (want_jit) {
        rte_bpf_jit j{};
        if (rte_bpf_get_jit(vm->bpf_, &j) == 0 && j.func != nullptr) {
            vm->jit_ = j.func;
            vm->jit_size_ = j.sz;
        } else {
            interp_reason = "rte_bpf produced no native code";
        }
    }
    vm->engine_ = vm->jit_ != nullptr ? "x86-64 JIT, " + std::to_string(vm->jit_size_) + " bytes"
                                      : "interpreter (" + interp_reason + ")";
    if (vm->rewritten_jset_ != 0)
        vm->engine_ += ", " + std::to_string(vm->rewritten_jset_) + " JSET-immediate rewritten";
    return vm;
}

PacketStage::PacketStage(uint32_t reach)
    : buf_(new uint8_t[reach != 0 ? reach : 1]()), reach_(reach) {}

EbpfVm::~EbpfVm() {
    if (bpf_ != nullptr) rte_bpf_destroy(bpf_);
}

}  // namespace linecap::filters
