#include "filters/cbpf_to_ebpf.hh"

#include <pcap/pcap.h>

#include <algorithm>
#include <cstddef>
#include <limits>
#include <memory>

#include "filters/ebpf_vm.hh"

namespace linecap::filters {

static_assert(sizeof(ClassicInsn) == sizeof(bpf_insn));
static_assert(offsetof(ClassicInsn, code) == offsetof(bpf_insn, code));
static_assert(offsetof(ClassicInsn, jt) == offsetof(bpf_insn, jt));
static_assert(offsetof(ClassicInsn, jf) == offsetof(bpf_insn, jf));
static_assert(offsetof(ClassicInsn, k) == offsetof(bpf_insn, k));

namespace {

// Register plan; see the header.
constexpr uint8_t kA = EBPF_REG_0;
constexpr uint8_t kData = EBPF_REG_1;
constexpr uint8_t kX = EBPF_REG_2;
constexpr uint8_t kCaplen = EBPF_REG_3;
constexpr uint8_t kT1 = EBPF_REG_4;
constexpr uint8_t kT2 = EBPF_REG_5;
constexpr uint8_t kWirelen = EBPF_REG_6;
constexpr uint8_t kFp = EBPF_REG_10;

constexpr uint32_t kMemWords = 16;  // BPF_MEMWORDS
constexpr int kReject = -1;         // branch label: the shared "return 0" block

// Classic opcode fields (pcap/bpf.h spells them the same as bpf_def.h).
constexpr uint16_t cls(uint16_t c) { return c & 0x07; }
constexpr uint16_t csize(uint16_t c) { return c & 0x18; }
constexpr uint16_t cmode(uint16_t c) { return c & 0xe0; }
constexpr uint16_t cop(uint16_t c) { return c & 0xf0; }
constexpr uint16_t csrc(uint16_t c) { return c & 0x08; }
constexpr uint16_t crval(uint16_t c) { return c & 0x18; }
constexpr uint16_t cmiscop(uint16_t c) { return c & 0xf8; }
constexpr uint16_t kClsRet = 0x06;
constexpr uint16_t kClsMisc = 0x07;
constexpr uint16_t kRetA = 0x10;
constexpr uint16_t kMiscTax = 0x00;
constexpr uint16_t kMiscTxa = 0x80;

uint32_t load_width(uint16_t code) {
    switch (csize(code)) {
        case BPF_W: return 4;
        case BPF_H: return 2;
        case BPF_B: return 1;
        default: return 0;
    }
}

/* The bytes a load needs (offset + width) when it is a packet load. Once it
 * has run, caplen is known to be at least that much: a shorter packet would
 * have been rejected. For X-indexed loads X >= 0, so k + width still holds. */
uint32_t packet_bytes_needed(const ClassicInsn& in) {
    const uint16_t c = in.code;
    if (cls(c) == BPF_LD && (cmode(c) == BPF_ABS || cmode(c) == BPF_IND))
        return in.k + load_width(c);
    if (c == (BPF_LDX | BPF_B | BPF_MSH)) return in.k + 1;
    return 0;
}

/* A packet load whose offset lies beyond any legal caplen always fails, so
 * the instruction never falls through. */
bool always_out_of_bounds(const ClassicInsn& in) {
    const uint16_t c = in.code;
    if (cls(c) == BPF_LD && (cmode(c) == BPF_ABS || cmode(c) == BPF_IND)) {
        const uint32_t n = load_width(c);
        return n != 0 && in.k > kMaxCaplen - n;
    }
    if (c == (BPF_LDX | BPF_B | BPF_MSH)) return in.k > kMaxCaplen - 1;
    return false;
}

struct Fixup {
    size_t at;   // branch instruction index
    int target;  // classic pc, or kReject
};

class Emitter {
public:
    std::vector<ebpf_insn> out;
    std::vector<Fixup> fixups;

    void raw(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm) {
        ebpf_insn in{};
        in.code = code;
        in.dst_reg = dst;
        in.src_reg = src;
        in.off = off;
        in.imm = imm;
        out.push_back(in);
    }
    void alu32_imm(uint8_t op, uint8_t dst, uint32_t imm) {
        raw(BPF_ALU | op | BPF_K, dst, 0, 0, static_cast<int32_t>(imm));
    }
    void alu32_reg(uint8_t op, uint8_t dst, uint8_t src) {
        raw(BPF_ALU | op | BPF_X, dst, src, 0, 0);
    }
    void alu64_imm(uint8_t op, uint8_t dst, int32_t imm) {
        raw(EBPF_ALU64 | op | BPF_K, dst, 0, 0, imm);
    }
    void alu64_reg(uint8_t op, uint8_t dst, uint8_t src) {
        raw(EBPF_ALU64 | op | BPF_X, dst, src, 0, 0);
    }
    void ldx(uint8_t size, uint8_t dst, uint8_t src, int16_t off) {
        raw(BPF_LDX | BPF_MEM | size, dst, src, off, 0);
    }
    void exit() { raw(BPF_JMP | EBPF_EXIT, 0, 0, 0, 0); }

    // Branches to a label (classic pc or kReject); offsets patched later.
    void jmp_imm(uint8_t op, uint8_t dst, uint32_t imm, int target) {
        fixups.push_back({out.size(), target});
        raw(BPF_JMP | op | BPF_K, dst, 0, 0, static_cast<int32_t>(imm));
    }
    void jmp_reg(uint8_t op, uint8_t dst, uint8_t src, int target) {
        fixups.push_back({out.size(), target});
        raw(BPF_JMP | op | BPF_X, dst, src, 0, 0);
    }
    void ja(int target) {
        fixups.push_back({out.size(), target});
        raw(BPF_JMP | BPF_JA, 0, 0, 0, 0);
    }
    // Branches over the next `skip` instructions (local control flow).
    void jmp_imm_rel(uint8_t op, uint8_t dst, uint32_t imm, int16_t skip) {
        raw(BPF_JMP | op | BPF_K, dst, 0, skip, static_cast<int32_t>(imm));
    }
    void ja_rel(int16_t skip) { raw(BPF_JMP | BPF_JA, 0, 0, skip, 0); }

    // dst = big-endian value of the n bytes just loaded into dst.
    void from_be(uint8_t dst, uint32_t n) {
        if (n == 2 || n == 4) raw(BPF_ALU | EBPF_END | EBPF_TO_BE, dst, 0, 0, n * 8);
    }

    /* dst = P[k .. k+n) (n = 1, 2, 4), big-endian; out of bounds -> reject. */
    void load_abs(uint8_t size, uint8_t dst, uint32_t k, uint32_t n, uint32_t known_caplen) {
        // Callers route k + n > kMaxCaplen to always_out_of_bounds().
        if (k + n > known_caplen) jmp_imm(EBPF_JLT, kCaplen, k + n, kReject);
        if (k <= static_cast<uint32_t>(std::numeric_limits<int16_t>::max())) {
            ldx(size, dst, kData, static_cast<int16_t>(k));
        } else {
            alu64_reg(EBPF_MOV, kT1, kData);
            alu64_imm(BPF_ADD, kT1, static_cast<int32_t>(k));
            ldx(size, dst, kT1, 0);
        }
        from_be(dst, n);
    }

    /* A = P[X + k .. X + k + n), big-endian; out of bounds -> reject.
     * X + k is formed in 64 bits, so it cannot wrap as a 32-bit sum could;
     * bpf_filter() rejects exactly when the true sum passes caplen. The AND
     * is a no-op at run time (the offset is below caplen <= kMaxCaplen) but
     * gives rte_bpf's verifier a non-negative bounded offset. */
    void load_ind(uint8_t size, uint32_t k, uint32_t n) {
        alu64_reg(EBPF_MOV, kT1, kX);
        if (k != 0) alu64_imm(BPF_ADD, kT1, static_cast<int32_t>(k));
        alu64_reg(EBPF_MOV, kT2, kT1);
        alu64_imm(BPF_ADD, kT2, static_cast<int32_t>(n));
        jmp_reg(BPF_JGT, kT2, kCaplen, kReject);
        alu64_imm(BPF_AND, kT1, static_cast<int32_t>(kMaxCaplen - 1));
        alu64_reg(EBPF_MOV, kT2, kData);
        alu64_reg(BPF_ADD, kT2, kT1);
        ldx(size, kA, kT2, 0);
        from_be(kA, n);
    }
};

int16_t mem_slot(uint32_t k) { return static_cast<int16_t>(-8 * static_cast<int>(k + 1)); }

std::string at(size_t pc, const std::string& what) {
    return "classic instruction " + std::to_string(pc) + ": " + what;
}

uint8_t ebpf_jmp_op(uint16_t code) {
    switch (cop(code)) {
        case BPF_JEQ: return BPF_JEQ;
        case BPF_JGT: return BPF_JGT;
        case BPF_JGE: return BPF_JGE;
        case BPF_JSET: return BPF_JSET;
        default: return 0xff;
    }
}

// The branch taken when the test is false, for tests that have one.
uint8_t inverse_jmp_op(uint8_t op) {
    switch (op) {
        case BPF_JEQ: return EBPF_JNE;
        case BPF_JGT: return EBPF_JLE;
        case BPF_JGE: return EBPF_JLT;
        default: return 0xff;
    }
}

}  // namespace

Result<std::vector<ClassicInsn>> compile_classic(const std::string& expression, int linktype,
                                                 uint32_t snaplen, uint32_t netmask) {
    std::unique_ptr<pcap_t, void (*)(pcap_t*)> p(
        pcap_open_dead(linktype, static_cast<int>(snaplen)), pcap_close);
    if (!p) return make_error("pcap_open_dead failed");
    bpf_program prog{};
    if (pcap_compile(p.get(), &prog, expression.c_str(), 1, netmask) != 0)
        return make_error(pcap_geterr(p.get()));
    std::vector<ClassicInsn> out(prog.bf_len);
    for (u_int i = 0; i < prog.bf_len; i++) {
        const bpf_insn& in = prog.bf_insns[i];
        out[i] = ClassicInsn{in.code, in.jt, in.jf, in.k};
    }
    pcap_freecode(&prog);
    return out;
}

std::string classic_listing(std::span<const ClassicInsn> prog) {
    std::string s;
    const auto* insns = reinterpret_cast<const bpf_insn*>(prog.data());
    for (size_t i = 0; i < prog.size(); i++) {
        // bpf_image() writes into a static buffer: control thread only.
        s += bpf_image(const_cast<bpf_insn*>(&insns[i]), static_cast<int>(i));
        s += '\n';
    }
    return s;
}

Result<std::vector<ebpf_insn>> translate_classic(std::span<const ClassicInsn> prog) {
    const size_t n = prog.size();
    if (n == 0) return make_error("empty classic program");
    if (n > 0x7fff) return make_error("classic program too large");

    // Reachability (classic jumps only go forward) and what the code uses.
    std::vector<bool> reach(n, false);
    reach[0] = true;
    bool uses_x = false, uses_len = false;
    uint32_t mem_read = 0;
    for (size_t pc = 0; pc < n; pc++) {
        if (!reach[pc]) continue;
        const ClassicInsn& in = prog[pc];
        const uint16_t c = in.code;
        auto mark = [&](uint64_t t) -> bool {
            if (t >= n) return false;
            reach[t] = true;
            return true;
        };
        if (cls(c) == kClsRet) continue;
        if (cls(c) == BPF_JMP) {
            if (cop(c) == BPF_JA) {
                // bpf_filter() adds k with 32-bit wrap-around, so a huge k
                // jumps backwards: libpcap's protochain loops this way.
                const uint32_t t = static_cast<uint32_t>(pc + 1) + in.k;
                if (t <= pc) return make_error(ELOOP, at(pc, kLoopMessage));
                if (!mark(t)) return make_error(at(pc, "jump out of the program"));
            } else if (!mark(pc + 1 + in.jt) || !mark(pc + 1 + in.jf)) {
                return make_error(at(pc, "jump out of the program"));
            }
            if (cop(c) != BPF_JA && csrc(c) == BPF_X) uses_x = true;
            continue;
        }
        if (always_out_of_bounds(in)) continue;
        if (!mark(pc + 1)) return make_error(at(pc, "falls off the end of the program"));

        if (cls(c) == BPF_LDX || cls(c) == BPF_STX || cmode(c) == BPF_IND ||
            (cls(c) == BPF_ALU && csrc(c) == BPF_X) || cls(c) == kClsMisc)
            uses_x = true;
        if ((cls(c) == BPF_LD || cls(c) == BPF_LDX) && cmode(c) == BPF_LEN) uses_len = true;
        if ((cls(c) == BPF_LD || cls(c) == BPF_LDX) && cmode(c) == BPF_MEM) {
            if (in.k >= kMemWords) return make_error(at(pc, "scratch index out of range"));
            mem_read |= 1u << in.k;
        }
    }

    Emitter e;
    // Prologue: r1 = const Packet*; read caplen (and wirelen) before r1
    // becomes the data pointer. A and X start at 0, as in bpf_filter().
    e.ldx(BPF_W, kCaplen, EBPF_REG_1, 8);
    if (uses_len) e.ldx(BPF_W, kWirelen, EBPF_REG_1, 12);
    e.ldx(EBPF_DW, kData, EBPF_REG_1, 0);
    e.alu32_imm(EBPF_MOV, kA, 0);
    if (uses_x) e.alu32_imm(EBPF_MOV, kX, 0);
    // Scratch words a path could read before any store: libpcap never emits
    // such code, but rte_bpf's verifier refuses reads of unwritten stack.
    for (uint32_t i = 0; i < kMemWords; i++)
        if (mem_read & (1u << i)) e.raw(BPF_ST | BPF_MEM | BPF_W, kFp, 0, mem_slot(i), 0);

    /* known[pc]: a caplen every path reaching pc has already proved (its
     * loads passed their bounds checks). A load within it needs no check of
     * its own. Classic jumps only go forward, so one pass in order suffices. */
    constexpr uint32_t kUnset = 0xffffffffu;
    std::vector<uint32_t> known(n, kUnset);
    known[0] = 0;
    for (size_t pc = 0; pc < n; pc++) {
        if (!reach[pc] || always_out_of_bounds(prog[pc])) continue;
        const ClassicInsn& in = prog[pc];
        const uint32_t out = std::max(known[pc], packet_bytes_needed(in));
        auto flow = [&](size_t t) { known[t] = std::min(known[t], out); };
        if (cls(in.code) == kClsRet) continue;
        if (cls(in.code) == BPF_JMP) {
            if (cop(in.code) == BPF_JA) {
                flow(static_cast<uint32_t>(pc + 1) + in.k);
            } else {
                flow(pc + 1 + in.jt);
                flow(pc + 1 + in.jf);
            }
        } else {
            flow(pc + 1);
        }
    }

    std::vector<size_t> start(n + 1, 0);
    for (size_t pc = 0; pc < n; pc++) {
        start[pc] = e.out.size();
        if (!reach[pc]) continue;
        const ClassicInsn& in = prog[pc];
        const uint16_t c = in.code;
        const uint32_t k = in.k;

        if (always_out_of_bounds(in)) {
            e.ja(kReject);
            continue;
        }

        switch (cls(c)) {
            case BPF_LD: {
                const uint32_t w = load_width(c);
                switch (cmode(c)) {
                    case BPF_ABS:
                        if (w == 0) return make_error(at(pc, "bad load size"));
                        e.load_abs(static_cast<uint8_t>(csize(c)), kA, k, w, known[pc]);
                        break;
                    case BPF_IND:
                        if (w == 0) return make_error(at(pc, "bad load size"));
                        e.load_ind(static_cast<uint8_t>(csize(c)), k, w);
                        break;
                    case BPF_IMM: e.alu32_imm(EBPF_MOV, kA, k); break;
                    case BPF_LEN: e.alu32_reg(EBPF_MOV, kA, kWirelen); break;
                    case BPF_MEM: e.ldx(BPF_W, kA, kFp, mem_slot(k)); break;
                    default: return make_error(at(pc, "unsupported load mode"));
                }
                break;
            }
            case BPF_LDX:
                switch (cmode(c)) {
                    case BPF_IMM: e.alu32_imm(EBPF_MOV, kX, k); break;
                    case BPF_LEN: e.alu32_reg(EBPF_MOV, kX, kWirelen); break;
                    case BPF_MEM: e.ldx(BPF_W, kX, kFp, mem_slot(k)); break;
                    case BPF_MSH:
                        if (csize(c) != BPF_B) return make_error(at(pc, "bad msh size"));
                        e.load_abs(BPF_B, kX, k, 1, known[pc]);
                        e.alu32_imm(BPF_AND, kX, 0xf);
                        e.alu32_imm(BPF_LSH, kX, 2);
                        break;
                    default: return make_error(at(pc, "unsupported ldx mode"));
                }
                break;
            case BPF_ST:
            case BPF_STX:
                if (k >= kMemWords) return make_error(at(pc, "scratch index out of range"));
                e.raw(BPF_STX | BPF_MEM | BPF_W, kFp, cls(c) == BPF_ST ? kA : kX, mem_slot(k), 0);
                break;
            case BPF_ALU: {
                const uint8_t op = static_cast<uint8_t>(cop(c));
                const bool by_x = csrc(c) == BPF_X;
                switch (op) {
                    case BPF_ADD:
                    case BPF_SUB:
                    case BPF_MUL:
                    case BPF_OR:
                    case BPF_AND:
                    case BPF_XOR:
                        if (by_x)
                            e.alu32_reg(op, kA, kX);
                        else
                            e.alu32_imm(op, kA, k);
                        break;
                    case BPF_DIV:
                    case BPF_MOD:
                        if (by_x) {
                            e.jmp_imm(BPF_JEQ, kX, 0, kReject);
                            e.alu32_reg(op, kA, kX);
                        } else {
                            if (k == 0) return make_error(at(pc, "division by constant 0"));
                            e.alu32_imm(op, kA, k);
                        }
                        break;
                    case BPF_LSH:
                    case BPF_RSH:
                        if (by_x) {
                            // x86 would mask the count; bpf_filter() gives 0.
                            e.jmp_imm_rel(EBPF_JLT, kX, 32, 2);
                            e.alu32_imm(EBPF_MOV, kA, 0);
                            e.ja_rel(1);
                            e.alu32_reg(op, kA, kX);
                        } else {
                            if (k >= 32) return make_error(at(pc, "shift by 32 or more"));
                            e.alu32_imm(op, kA, k);
                        }
                        break;
                    case BPF_NEG: e.raw(BPF_ALU | BPF_NEG, kA, 0, 0, 0); break;
                    default: return make_error(at(pc, "unsupported ALU operation"));
                }
                break;
            }
            case BPF_JMP: {
                if (cop(c) == BPF_JA) {
                    const size_t t = pc + 1 + k;
                    if (t != pc + 1) e.ja(static_cast<int>(t));
                    break;
                }
                const uint8_t op = ebpf_jmp_op(c);
                if (op == 0xff) return make_error(at(pc, "unsupported jump"));
                const int t = static_cast<int>(pc + 1 + in.jt);
                const int f = static_cast<int>(pc + 1 + in.jf);
                const int next = static_cast<int>(pc + 1);
                if (t == f) {
                    if (t != next) e.ja(t);
                    break;
                }
                // JSET never takes an immediate (JIT defect); K >= 2^31 would be
                // sign-extended as an immediate. Both go through r4.
                bool use_reg = csrc(c) == BPF_X;
                uint8_t rhs = kX;
                if (!use_reg && (op == BPF_JSET || k > 0x7fffffffu)) {
                    e.alu32_imm(EBPF_MOV, kT1, k);
                    use_reg = true;
                    rhs = kT1;
                }
                auto branch = [&](uint8_t bop, int target) {
                    if (use_reg)
                        e.jmp_reg(bop, kA, rhs, target);
                    else
                        e.jmp_imm(bop, kA, k, target);
                };
                if (f == next) {
                    branch(op, t);
                } else if (t == next && inverse_jmp_op(op) != 0xff) {
                    branch(inverse_jmp_op(op), f);
                } else {
                    branch(op, t);
                    e.ja(f);
                }
                break;
            }
            case kClsRet:
                if (crval(c) == kRetA) {
                    e.exit();  // A lives in r0
                } else if (crval(c) == BPF_K) {
                    e.alu32_imm(EBPF_MOV, EBPF_REG_0, k);
                    e.exit();
                } else {
                    return make_error(at(pc, "unsupported return"));
                }
                break;
            case kClsMisc:
                if (cmiscop(c) == kMiscTax)
                    e.alu32_reg(EBPF_MOV, kX, kA);
                else if (cmiscop(c) == kMiscTxa)
                    e.alu32_reg(EBPF_MOV, kA, kX);
                else
                    return make_error(at(pc, "unsupported misc operation"));
                break;
            default: return make_error(at(pc, "unknown opcode"));
        }
    }
    start[n] = e.out.size();

    bool need_reject = false;
    for (const auto& f : e.fixups) need_reject |= f.target == kReject;
    const size_t reject_at = e.out.size();
    if (need_reject) {
        e.alu32_imm(EBPF_MOV, EBPF_REG_0, 0);
        e.exit();
    }

    for (const auto& f : e.fixups) {
        const size_t dest = f.target == kReject ? reject_at : start[static_cast<size_t>(f.target)];
        const long off = static_cast<long>(dest) - static_cast<long>(f.at) - 1;
        if (off < 0 || off > std::numeric_limits<int16_t>::max())
            return make_error("classic program too large to translate");
        e.out[f.at].off = static_cast<int16_t>(off);
    }
    return std::move(e.out);
}

}  // namespace linecap::filters
