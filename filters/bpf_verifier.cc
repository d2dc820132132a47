/* Our own check of untrusted filter programs (see bpf_verifier.hh).
 *
 * An abstract interpretation in one pass: the program must have no loop,
 * so its instructions have a topological order (clang jumps backwards to
 * shared exits, so program order is not one), and visiting them in that
 * order sees every predecessor of an instruction before the instruction
 * itself. The state leaving an instruction waits in `pending_` for each
 * successor and is joined there with the other paths.
 * Each value is a type plus a range: numbers carry an unsigned range,
 * pointers a signed range of offsets from what they point into. Joining
 * widens ranges, so the pass never needs a second round. */
#include "filters/bpf_verifier.hh"

#include <algorithm>
#include <array>
#include <climits>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "filters/disasm.hh"
#include "filters/ebpf_vm.hh"
#include "filters/rule_set_run.hh"

namespace linecap::filters {
namespace {

constexpr uint8_t kClassJmp32 = 0x06;
constexpr int kStackBytes = 512;  // rte_bpf's stack below r10
constexpr int kSlots = kStackBytes / 8;
constexpr uint64_t kU32 = 0xffffffffu;
/* Pointer offsets saturate here; any access that far out is refused. */
constexpr int64_t kHuge = int64_t{1} << 40;

enum class Type : uint8_t {
    kUninit,  // never set on some path
    kScalar,  // a number in [umin, umax]
    kCtx,     // the Packet struct, offset [omin, omax]
    kPacket,  // Packet::data, offset [omin, omax]
    kStack,   // r10, offset [omin, omax] (negative)
    kMixed,   // different types on paths that join
};

struct Value {
    Type type = Type::kUninit;
    uint64_t umin = 0, umax = 0;
    int64_t omin = 0, omax = 0;

    static Value scalar(uint64_t lo, uint64_t hi) { return {Type::kScalar, lo, hi, 0, 0}; }
    static Value any() { return scalar(0, UINT64_MAX); }
    static Value pointer(Type t, int64_t lo, int64_t hi) { return {t, 0, 0, lo, hi}; }
    bool is_pointer() const {
        return type == Type::kCtx || type == Type::kPacket || type == Type::kStack;
    }
    bool operator==(const Value&) const = default;
};

int64_t sat(int64_t v) { return std::clamp(v, -kHuge, kHuge); }
int64_t sat_u(uint64_t v) {
    return v > static_cast<uint64_t>(kHuge) ? kHuge : static_cast<int64_t>(v);
}

Value join(const Value& a, const Value& b) {
    if (a == b) return a;
    if (a.type == Type::kUninit || b.type == Type::kUninit) return Value{};
    if (a.type != b.type) return Value{Type::kMixed};
    if (a.type == Type::kScalar)
        return Value::scalar(std::min(a.umin, b.umin), std::max(a.umax, b.umax));
    if (a.type == Type::kMixed) return a;
    return Value::pointer(a.type, std::min(a.omin, b.omin), std::max(a.omax, b.omax));
}

/* One 8-byte stack slot: a spilled register (8-byte aligned store), or
 * bytes, each either written or not. A slot that held a pointer and was
 * then partly overwritten keeps its other bytes unreadable. */
struct Slot {
    bool spill = false;
    uint8_t written = 0;  // bytes mode: bit i = byte i was written
    Value value;          // spill mode
    bool operator==(const Slot&) const = default;
};

Slot join(const Slot& a, const Slot& b) {
    if (a == b) return a;
    auto bytes_of = [](const Slot& s) -> uint8_t {
        if (!s.spill) return s.written;
        return s.value.type == Type::kScalar ? 0xff : 0;
    };
    if (a.spill && b.spill) {
        Value v = join(a.value, b.value);
        if (v.type == Type::kScalar || v.is_pointer()) return Slot{true, 0, v};
        return Slot{};
    }
    return Slot{false, static_cast<uint8_t>(bytes_of(a) & bytes_of(b)), {}};
}

struct State {
    std::array<Value, 11> reg;
    std::array<Slot, kSlots> slot;  // slot k covers r10 - 8*(k+1) .. r10 - 8*k - 1
};

void join_into(State& into, const State& from) {
    for (size_t r = 0; r < into.reg.size(); r++) into.reg[r] = join(into.reg[r], from.reg[r]);
    for (size_t k = 0; k < into.slot.size(); k++) into.slot[k] = join(into.slot[k], from.slot[k]);
}

/* ---- Ranges of numbers ----------------------------------------------------- */

uint64_t bits_up_to(uint64_t v) {  // smallest 2^k - 1 >= v
    uint64_t m = 0;
    while (m < v) m = (m << 1) | 1;
    return m;
}

/* dst OP src for numbers, 64-bit. Sound but coarse: whatever may wrap
 * becomes "any". */
Value alu_scalar64(uint8_t op, const Value& d, const Value& s) {
    switch (op) {
        case BPF_ADD:
            if (d.umax > UINT64_MAX - s.umax) return Value::any();
            return Value::scalar(d.umin + s.umin, d.umax + s.umax);
        case BPF_SUB:
            if (d.umin < s.umax) return Value::any();
            return Value::scalar(d.umin - s.umax, d.umax - s.umin);
        case BPF_MUL:
            if (s.umax != 0 && d.umax > UINT64_MAX / s.umax) return Value::any();
            return Value::scalar(d.umin * s.umin, d.umax * s.umax);
        case BPF_DIV:  // divisor proved non-zero by the caller
            return Value::scalar(d.umin / s.umax, d.umax / s.umin);
        case BPF_MOD: return Value::scalar(0, std::min(d.umax, s.umax - 1));
        case BPF_AND: return Value::scalar(0, std::min(d.umax, s.umax));
        case BPF_OR:
            return Value::scalar(std::max(d.umin, s.umin), bits_up_to(std::max(d.umax, s.umax)));
        case BPF_XOR: return Value::scalar(0, bits_up_to(std::max(d.umax, s.umax)));
        case BPF_LSH:
            if (s.umax >= 64 || (d.umax != 0 && d.umax > (UINT64_MAX >> s.umax)))
                return Value::any();
            return Value::scalar(d.umin << s.umin, d.umax << s.umax);
        case BPF_RSH:
            if (s.umax >= 64) return Value::any();
            return Value::scalar(d.umin >> s.umax, d.umax >> s.umin);
        case EBPF_ARSH:
            if (s.umax >= 64 || d.umax > static_cast<uint64_t>(INT64_MAX)) return Value::any();
            return Value::scalar(d.umin >> s.umax, d.umax >> s.umin);
        default: return Value::any();
    }
}

/* The same on the low 32 bits, zero-extended: exact where the 64-bit
 * result provably fits in 32 bits, "any 32-bit value" otherwise. */
Value alu_scalar32(uint8_t op, const Value& d, const Value& s) {
    if (d.umax > kU32 || s.umax > kU32) return Value::scalar(0, kU32);
    if (op == EBPF_ARSH) return Value::scalar(0, kU32);
    if ((op == BPF_LSH || op == BPF_RSH) && s.umax >= 32) return Value::scalar(0, kU32);
    Value v = alu_scalar64(op, d, s);
    if (v.umax > kU32) return Value::scalar(0, kU32);
    return v;
}

/* Narrows a and b for the outcome `taken` of "if (a OP b)"; false when that
 * outcome is impossible. Numbers only; signed comparisons only when both
 * ranges are non-negative as signed values (then they order as unsigned). */
bool refine(uint8_t op, bool taken, Value& a, Value& b) {
    const bool signed_op = op == EBPF_JSGT || op == EBPF_JSGE || op == EBPF_JSLT || op == EBPF_JSLE;
    if (signed_op) {
        const uint64_t top = static_cast<uint64_t>(INT64_MAX);
        if (a.umax > top || b.umax > top) return true;
        op = op == EBPF_JSGT   ? BPF_JGT
             : op == EBPF_JSGE ? BPF_JGE
             : op == EBPF_JSLT ? EBPF_JLT
                               : EBPF_JLE;
    }
    auto lt = [](Value& x, Value& y) {  // x < y
        if (x.umin >= y.umax) return false;
        x.umax = std::min(x.umax, y.umax - 1);
        y.umin = std::max(y.umin, x.umin + 1);
        return true;
    };
    auto le = [](Value& x, Value& y) {  // x <= y
        if (x.umin > y.umax) return false;
        x.umax = std::min(x.umax, y.umax);
        y.umin = std::max(y.umin, x.umin);
        return true;
    };
    auto ne = [](Value& x, const Value& y) {  // x != y (a constant)
        if (y.umin != y.umax) return true;
        if (x.umin == x.umax && x.umin == y.umin) return false;
        if (x.umin == y.umin) x.umin++;
        if (x.umax == y.umin) x.umax--;
        return true;
    };
    auto eq = [](Value& x, Value& y) {
        uint64_t lo = std::max(x.umin, y.umin), hi = std::min(x.umax, y.umax);
        if (lo > hi) return false;
        x.umin = y.umin = lo;
        x.umax = y.umax = hi;
        return true;
    };
    switch (op) {
        case BPF_JEQ: return taken ? eq(a, b) : ne(a, b) && ne(b, a);
        case EBPF_JNE: return taken ? ne(a, b) && ne(b, a) : eq(a, b);
        case BPF_JGT: return taken ? lt(b, a) : le(a, b);
        case BPF_JGE: return taken ? le(b, a) : lt(a, b);
        case EBPF_JLT: return taken ? lt(a, b) : le(b, a);
        case EBPF_JLE: return taken ? le(a, b) : lt(b, a);
        default:  // JSET: no narrowing
            return true;
    }
}

bool known_jump(uint8_t op) {
    switch (op) {
        case BPF_JA:
        case BPF_JEQ:
        case BPF_JGT:
        case BPF_JGE:
        case BPF_JSET:
        case EBPF_JNE:
        case EBPF_JSGT:
        case EBPF_JSGE:
        case EBPF_JLT:
        case EBPF_JLE:
        case EBPF_JSLT:
        case EBPF_JSLE: return true;
        default: return false;
    }
}

const char* alu_word(uint8_t op) {
    switch (op) {
        case BPF_ADD: return "addition";
        case BPF_SUB: return "subtraction";
        case BPF_MUL: return "multiplication";
        case BPF_DIV: return "division";
        case BPF_MOD: return "modulo";
        case BPF_AND: return "and";
        case BPF_OR: return "or";
        case BPF_XOR: return "xor";
        case BPF_LSH: return "shift";
        case BPF_RSH: return "shift";
        case EBPF_ARSH: return "shift";
        case BPF_NEG: return "negation";
        case EBPF_END: return "byte swap";
        default: return "operation";
    }
}

uint32_t size_bytes(uint8_t code) {
    switch (BPF_SIZE(code)) {
        case BPF_B: return 1;
        case BPF_H: return 2;
        case BPF_W: return 4;
        default: return 8;
    }
}

uint64_t width_max(uint32_t bytes) {
    return bytes >= 8 ? UINT64_MAX : (uint64_t{1} << (8 * bytes)) - 1;
}

/* ---- Control flow ---------------------------------------------------------- */

bool is_imm64(const ebpf_insn& in) { return in.code == (BPF_LD | BPF_IMM | EBPF_DW); }

/* Successors of instruction i: [0] falls through, [1] jumps; -1 none. */
std::array<int64_t, 2> successors(std::span<const ebpf_insn> insns, size_t i) {
    const ebpf_insn& in = insns[i];
    const int64_t next = static_cast<int64_t>(i) + (is_imm64(in) ? 2 : 1);
    if (BPF_CLASS(in.code) != BPF_JMP || BPF_OP(in.code) == EBPF_CALL) return {next, -1};
    if (BPF_OP(in.code) == EBPF_EXIT) return {-1, -1};
    const int64_t target = static_cast<int64_t>(i) + 1 + in.off;
    if (BPF_OP(in.code) == BPF_JA) return {-1, target};
    return {next, target};
}

struct Flow {
    enum Kind { kOk, kLoop, kOutside, kIntoImm64, kUnreachable } kind = kOk;
    size_t at = 0;       // the instruction at fault
    int64_t target = 0;  // where it jumps
};

/* A topological order of the instructions reachable from the first (the
 * second halves of 64-bit immediates are not instructions), by an
 * iterative depth-first search: an edge back to an instruction still on
 * the search stack closes a loop. Falling off the end is left to the
 * caller. Linear in the program's size. */
Flow flow_order(std::span<const ebpf_insn> insns, std::vector<uint32_t>& order) {
    const size_t n = insns.size();
    std::vector<uint8_t> colour(n, 0);                // 0 unseen, 1 on the stack, 2 done
    std::vector<std::pair<uint32_t, uint8_t>> stack;  // instruction, next successor
    std::vector<bool> second_half(n, false);
    for (size_t i = 0; i < n; i++)
        if (is_imm64(insns[i]) && i + 1 < n) second_half[++i] = true;
    order.clear();
    stack.emplace_back(0, 0);
    colour[0] = 1;
    while (!stack.empty()) {
        const uint32_t i = stack.back().first;
        const uint8_t k = stack.back().second++;
        if (k == 2) {
            colour[i] = 2;
            order.push_back(i);
            stack.pop_back();
            continue;
        }
        const int64_t t = successors(insns, i)[k];
        if (t == -1) continue;
        if (t < 0 || t >= static_cast<int64_t>(n)) {
            if (k == 0) continue;  // falling off the end: the caller says so
            return {Flow::kOutside, i, t};
        }
        const size_t u = static_cast<size_t>(t);
        if (second_half[u]) return {Flow::kIntoImm64, i, t};
        if (colour[u] == 1) return {Flow::kLoop, i, t};
        if (colour[u] == 0) {
            colour[u] = 1;
            stack.emplace_back(static_cast<uint32_t>(u), 0);
        }
    }
    for (size_t i = 0; i < n; i++)
        if (colour[i] == 0 && !second_half[i]) return {Flow::kUnreachable, i, 0};
    std::reverse(order.begin(), order.end());
    return {};
}

/* validator_visits() over a topological order: paths into each instruction,
 * summed, saturating at `limit`. */
uint64_t count_visits(std::span<const ebpf_insn> insns, const std::vector<uint32_t>& order,
                      uint64_t limit) {
    auto add = [limit](uint64_t a, uint64_t b) {
        return a >= limit - std::min(b, limit) ? limit : a + b;
    };
    std::vector<uint64_t> paths(insns.size(), 0);
    paths[0] = 1;
    uint64_t total = 0;
    for (const uint32_t i : order) {
        const uint64_t p = paths[i];
        total = add(total, p);
        for (const int64_t t : successors(insns, i))
            if (t >= 0 && t < static_cast<int64_t>(insns.size()))
                paths[static_cast<size_t>(t)] = add(paths[static_cast<size_t>(t)], p);
    }
    return total;
}

/* ---- The pass ------------------------------------------------------------- */

class Verifier {
public:
    explicit Verifier(std::span<const ebpf_insn> insns) : insns_(insns) {}
    Result<VerifiedFilter> run();

private:
    Error fail(size_t i, const std::string& why) const {
        return make_error("insn " + std::to_string(i) + " (" + disassemble_one(insns_, i) +
                          "): " + why);
    }
    static std::string reg(unsigned r) { return "r" + std::to_string(r); }
    /* Why `verb`ing register r, holding v, is refused (kUninit or kMixed). */
    static std::string unusable(const char* verb, unsigned r, const Value& v) {
        return std::string(verb) + " " + reg(r) +
               (v.type == Type::kMixed
                    ? ", which holds a pointer on one path and something else on another"
                    : " before it is set on every path");
    }

    Status step(size_t i, State& st, bool& falls_through);
    Status alu(size_t i, State& st);
    Status load(size_t i, State& st);
    Status store(size_t i, State& st);
    Status jump(size_t i, State& st, bool& falls_through);
    Status read_stack(size_t i, const State& st, int64_t off, uint32_t size, Value& out) const;
    void write_stack(State& st, int64_t off, uint32_t size, const Value& v) const;
    Status stack_offset(size_t i, const Value& base, int16_t off, uint32_t size, int64_t& at) const;
    void branch_to(size_t target, const State& st);

    std::span<const ebpf_insn> insns_;
    std::map<size_t, State> pending_;  // states waiting at jump targets
    uint64_t reach_ = 0;
};

Status Verifier::stack_offset(size_t i, const Value& base, int16_t off, uint32_t size,
                              int64_t& at) const {
    if (base.omin != base.omax)
        return fail(i,
                    "stack offset differs between paths (only constant stack offsets are "
                    "allowed)");
    at = base.omin + off;
    if (at < -kStackBytes || at + static_cast<int64_t>(size) > 0)
        return fail(i, "stack access at r10" + std::to_string(at) + " (" + std::to_string(size) +
                           " bytes) outside the " + std::to_string(kStackBytes) + "-byte stack");
    return Status::success();
}

Status Verifier::read_stack(size_t i, const State& st, int64_t off, uint32_t size,
                            Value& out) const {
    const int64_t first = off + kStackBytes;  // 0 .. 511, from the bottom
    if (size == 8 && first % 8 == 0) {
        const Slot& s = st.slot[static_cast<size_t>(kSlots - 1 - first / 8)];
        if (s.spill) {
            out = s.value;
            return Status::success();
        }
    }
    for (int64_t b = first; b < first + size; b++) {
        const Slot& s = st.slot[static_cast<size_t>(kSlots - 1 - b / 8)];
        const int bit = static_cast<int>(b % 8);
        if (s.spill && s.value.type != Type::kScalar)
            return fail(i, "reads part of a spilled pointer");
        if (!s.spill && (s.written & (1u << bit)) == 0)
            return fail(i, "reads stack the program has not written (r10" +
                               std::to_string(b - kStackBytes) + ")");
    }
    out = Value::scalar(0, width_max(size));
    return Status::success();
}

void Verifier::write_stack(State& st, int64_t off, uint32_t size, const Value& v) const {
    const int64_t first = off + kStackBytes;
    if (size == 8 && first % 8 == 0) {
        st.slot[static_cast<size_t>(kSlots - 1 - first / 8)] = Slot{true, 0, v};
        return;
    }
    for (int64_t b = first; b < first + size; b++) {
        Slot& s = st.slot[static_cast<size_t>(kSlots - 1 - b / 8)];
        if (s.spill)
            s = Slot{false, static_cast<uint8_t>(s.value.type == Type::kScalar ? 0xff : 0), {}};
        s.written |= static_cast<uint8_t>(1u << (b % 8));
    }
}

void Verifier::branch_to(size_t target, const State& st) {
    auto [it, fresh] = pending_.try_emplace(target, st);
    if (!fresh) join_into(it->second, st);
}

Status Verifier::alu(size_t i, State& st) {
    const ebpf_insn& in = insns_[i];
    const bool is64 = BPF_CLASS(in.code) == EBPF_ALU64;
    const uint8_t op = BPF_OP(in.code);
    const bool x = BPF_SRC(in.code) == BPF_X;
    if (in.dst_reg == EBPF_REG_10) return fail(i, "writes r10, the frame pointer");
    Value& d = st.reg[in.dst_reg];
    const Value imm64 = Value::scalar(static_cast<uint64_t>(static_cast<int64_t>(in.imm)),
                                      static_cast<uint64_t>(static_cast<int64_t>(in.imm)));
    const Value imm32 = Value::scalar(static_cast<uint32_t>(in.imm), static_cast<uint32_t>(in.imm));

    if (op == EBPF_END) {
        if (in.imm != 16 && in.imm != 32 && in.imm != 64)
            return fail(i, "byte swap of an unknown width");
        if (d.type == Type::kUninit || d.type == Type::kMixed)
            return fail(i, unusable("uses", in.dst_reg, d));
        if (d.type != Type::kScalar)
            return fail(i, "byte swap of a pointer would expose its address");
        d = Value::scalar(0, width_max(static_cast<uint32_t>(in.imm) / 8));
        return Status::success();
    }
    if (op > EBPF_END || (op == BPF_NEG && x)) return fail(i, "unknown arithmetic instruction");

    Value s;
    if (op != BPF_NEG) {
        if (x) {
            s = st.reg[in.src_reg];
            if (s.type == Type::kUninit || s.type == Type::kMixed)
                return fail(i, unusable("uses", in.src_reg, s));
        } else {
            s = is64 ? imm64 : imm32;
        }
    }
    if (op == EBPF_MOV) {
        if (is64) {
            d = s;
        } else {
            if (s.type != Type::kScalar)
                return fail(i, "32-bit copy of a pointer would expose its address");
            d = s.umax <= kU32 ? s : Value::scalar(0, kU32);
        }
        return Status::success();
    }
    if (d.type == Type::kUninit || d.type == Type::kMixed)
        return fail(i, unusable("uses", in.dst_reg, d));

    if (d.is_pointer() || s.is_pointer()) {
        if (!is64) return fail(i, "32-bit arithmetic on a pointer would expose its address");
        if (op == BPF_ADD && d.is_pointer() && s.type == Type::kScalar) {
            d.omin = sat(d.omin + sat_u(s.umin));
            d.omax = sat(d.omax + sat_u(s.umax));
            return Status::success();
        }
        if (op == BPF_ADD && d.type == Type::kScalar && s.is_pointer()) {
            Value p = s;
            p.omin = sat(p.omin + sat_u(d.umin));
            p.omax = sat(p.omax + sat_u(d.umax));
            d = p;
            return Status::success();
        }
        if (op == BPF_SUB && d.is_pointer() && s.type == Type::kScalar) {
            d.omin = sat(d.omin - sat_u(s.umax));
            d.omax = sat(d.omax - sat_u(s.umin));
            return Status::success();
        }
        if (op == BPF_SUB && d.is_pointer() && s.type == d.type) {
            const int64_t lo = d.omin - s.omax, hi = d.omax - s.omin;
            d = lo >= 0 ? Value::scalar(static_cast<uint64_t>(lo), static_cast<uint64_t>(hi))
                        : Value::any();
            return Status::success();
        }
        if (op == BPF_ADD && d.is_pointer() && s.is_pointer()) return fail(i, "adds two pointers");
        return fail(i, std::string(alu_word(op)) + " on a pointer would expose its address " +
                           "(only adding or subtracting a number is allowed)");
    }

    // Numbers only from here.
    if (op == BPF_NEG) {
        d = is64 ? Value::any() : Value::scalar(0, kU32);
        return Status::success();
    }
    const uint32_t width = is64 ? 64 : 32;
    if ((op == BPF_LSH || op == BPF_RSH || op == EBPF_ARSH) && !x &&
        static_cast<uint32_t>(in.imm) >= width)
        return fail(i, "shift by " + std::to_string(static_cast<uint32_t>(in.imm)) +
                           ", wider than the " + std::to_string(width) + "-bit operand");
    if (op == BPF_DIV || op == BPF_MOD) {
        const uint64_t lo = is64 ? s.umin : (s.umax <= kU32 ? s.umin : 0);
        if (!x && s.umin == 0) return fail(i, "division by zero");
        if (lo == 0)
            return fail(i, "divides by " + reg(in.src_reg) +
                               ", which may be zero (compare it with 0 first)");
    }
    d = is64 ? alu_scalar64(op, d, s) : alu_scalar32(op, d, s);
    return Status::success();
}

Status Verifier::load(size_t i, State& st) {
    const ebpf_insn& in = insns_[i];
    const uint32_t size = size_bytes(in.code);
    if (BPF_MODE(in.code) != BPF_MEM) return fail(i, "unsupported load mode");
    if (in.dst_reg == EBPF_REG_10) return fail(i, "writes r10, the frame pointer");
    const Value base = st.reg[in.src_reg];
    Value out;
    switch (base.type) {
        case Type::kCtx: {
            if (base.omin != base.omax) return fail(i, "context offset differs between paths");
            const int64_t at = base.omin + in.off;
            if (at == 0 && size == 8) {
                out = Value::pointer(Type::kPacket, 0, 0);
            } else if (at >= 0 && at < 8) {
                return fail(i,
                            "reads part of the packet pointer (Packet::data is read as a whole "
                            "8-byte value)");
            } else if (at >= 8 && at + size <= static_cast<int64_t>(sizeof(Packet)) && size <= 4 &&
                       at % size == 0) {
                // caplen never exceeds kMaxCaplen: PacketStage clamps it.
                out = at == 8 && size == 4 ? Value::scalar(0, kMaxCaplen)
                                           : Value::scalar(0, width_max(size));
            } else {
                return fail(i, "reads the context at offset " + std::to_string(at) + " (" +
                                   std::to_string(size) +
                                   " bytes), outside its fields: data (8 bytes at 0), caplen (4 "
                                   "at 8), wirelen (4 at 12)");
            }
            break;
        }
        case Type::kPacket: {
            const int64_t lo = base.omin + in.off, hi = base.omax + in.off + size;
            if (lo < 0)
                return fail(i, "may read before the packet (offset " + std::to_string(lo) + ")");
            if (hi > static_cast<int64_t>(kVerifierPacketSpan))
                return fail(i, std::string("packet read at an offset that may reach ") +
                                   (hi >= kHuge ? "beyond 2^40" : std::to_string(hi)) +
                                   ", past the " + std::to_string(kVerifierPacketSpan) +
                                   " bytes a filter may address; compare the offset with a "
                                   "constant or with caplen first");
            reach_ = std::max<uint64_t>(reach_, static_cast<uint64_t>(hi));
            out = Value::scalar(0, width_max(size));
            break;
        }
        case Type::kStack: {
            int64_t at = 0;
            if (Status s = stack_offset(i, base, in.off, size, at); !s) return s;
            if (Status s = read_stack(i, st, at, size, out); !s) return s;
            break;
        }
        case Type::kScalar:
            return fail(
                i, "reads through " + reg(in.src_reg) + ", which holds a number, not a pointer");
        default:
            return fail(
                i, "reads through " + reg(in.src_reg) + ", which is not a pointer on every path");
    }
    st.reg[in.dst_reg] = out;
    return Status::success();
}

Status Verifier::store(size_t i, State& st) {
    const ebpf_insn& in = insns_[i];
    const uint8_t cls = BPF_CLASS(in.code);
    const uint32_t size = size_bytes(in.code);
    const bool atomic = cls == BPF_STX && BPF_MODE(in.code) == EBPF_XADD;
    if (BPF_MODE(in.code) != BPF_MEM && !atomic) return fail(i, "unsupported store mode");
    if (atomic && (in.imm != 0 || (size != 4 && size != 8)))
        return fail(i, "atomic operation other than a plain 32/64-bit add");
    const Value base = st.reg[in.dst_reg];
    switch (base.type) {
        case Type::kCtx: return fail(i, "store to the context");
        case Type::kPacket: return fail(i, "store to the packet (filters may only read it)");
        case Type::kStack: break;
        case Type::kScalar:
            return fail(
                i, "stores through " + reg(in.dst_reg) + ", which holds a number, not a pointer");
        default:
            return fail(
                i, "stores through " + reg(in.dst_reg) + ", which is not a pointer on every path");
    }
    Value v;
    if (cls == BPF_ST) {
        v = Value::scalar(static_cast<uint64_t>(static_cast<int64_t>(in.imm)) & width_max(size),
                          static_cast<uint64_t>(static_cast<int64_t>(in.imm)) & width_max(size));
    } else {
        v = st.reg[in.src_reg];
        if (v.type == Type::kUninit || v.type == Type::kMixed)
            return fail(i, unusable("stores", in.src_reg, v));
        if (v.is_pointer() && (atomic || size != 8))
            return fail(i,
                        "stores part of a pointer or adds to it in memory; only a whole "
                        "8-byte spill is allowed");
        if (v.type == Type::kScalar && size < 8 && v.umax > width_max(size))
            v = Value::scalar(0, width_max(size));
    }
    int64_t at = 0;
    if (Status s = stack_offset(i, base, in.off, size, at); !s) return s;
    if (v.is_pointer() && (at + kStackBytes) % 8 != 0)
        return fail(i, "spills a pointer to an unaligned stack slot");
    if (atomic) {
        Value old;
        if (Status s = read_stack(i, st, at, size, old); !s) return s;
        if (old.type != Type::kScalar) return fail(i, "atomic add to a spilled pointer");
        v = Value::scalar(0, width_max(size));
    }
    write_stack(st, at, size, v);
    return Status::success();
}

Status Verifier::jump(size_t i, State& st, bool& falls_through) {
    const ebpf_insn& in = insns_[i];
    const uint8_t op = BPF_OP(in.code);
    const size_t n = insns_.size();
    if (op == EBPF_EXIT) {
        const Value& r0 = st.reg[0];
        if (r0.type == Type::kUninit) return fail(i, "returns before r0 is set on every path");
        if (r0.type == Type::kMixed)
            return fail(i, "returns a pointer on some paths (r0 must hold a verdict)");
        if (r0.type != Type::kScalar) return fail(i, "returns a pointer (r0 must hold a verdict)");
        falls_through = false;
        return Status::success();
    }
    if (op == EBPF_CALL)
        return fail(i, "calls a function; the packet VM has no helpers or subprograms");
    if (!known_jump(op)) return fail(i, "unknown jump instruction");
    const int64_t target = static_cast<int64_t>(i) + 1 + in.off;
    if (target < 0 || target >= static_cast<int64_t>(n))
        return fail(i, "jumps to insn " + std::to_string(target) + ", past the end of the program");
    const size_t t = static_cast<size_t>(target);
    if (t > 0 && insns_[t - 1].code == (BPF_LD | BPF_IMM | EBPF_DW) &&
        (t < 2 || insns_[t - 2].code != (BPF_LD | BPF_IMM | EBPF_DW)))
        return fail(i, "jumps into the middle of a 64-bit immediate load");
    if (op == BPF_JA) {
        falls_through = false;
        branch_to(t, st);
        return Status::success();
    }

    Value& a = st.reg[in.dst_reg];
    Value bk = BPF_SRC(in.code) == BPF_X
                   ? st.reg[in.src_reg]
                   : Value::scalar(static_cast<uint64_t>(static_cast<int64_t>(in.imm)),
                                   static_cast<uint64_t>(static_cast<int64_t>(in.imm)));
    if (a.type == Type::kUninit || a.type == Type::kMixed)
        return fail(i, unusable("compares", in.dst_reg, a));
    if (bk.type == Type::kUninit || bk.type == Type::kMixed)
        return fail(i, unusable("compares", in.src_reg, bk));
    if (a.is_pointer() || bk.is_pointer()) {
        if (a.type != Type::kPacket || bk.type != Type::kPacket || op == BPF_JSET)
            return fail(i, "compares a pointer with a number; that would expose its address");
        branch_to(t, st);  // two packet pointers: no narrowing
        return Status::success();
    }
    State taken = st;
    Value& ta = taken.reg[in.dst_reg];
    Value tb = bk;
    if (refine(op, true, ta, tb)) {
        if (BPF_SRC(in.code) == BPF_X && in.src_reg != in.dst_reg) taken.reg[in.src_reg] = tb;
        branch_to(t, taken);
    }
    Value fb = bk;
    if (!refine(op, false, a, fb)) {
        falls_through = false;
    } else if (BPF_SRC(in.code) == BPF_X && in.src_reg != in.dst_reg) {
        st.reg[in.src_reg] = fb;
    }
    return Status::success();
}

Status Verifier::step(size_t i, State& st, bool& falls_through) {
    const ebpf_insn& in = insns_[i];
    if (in.dst_reg > EBPF_REG_10 || in.src_reg > EBPF_REG_10)
        return fail(i, "names a register beyond r10");
    switch (BPF_CLASS(in.code)) {
        case BPF_ALU:
        case EBPF_ALU64: return alu(i, st);
        case BPF_LDX: return load(i, st);
        case BPF_ST:
        case BPF_STX: return store(i, st);
        case BPF_JMP: return jump(i, st, falls_through);
        case BPF_LD:
            if (in.code != (BPF_LD | BPF_IMM | EBPF_DW))
                return fail(i, "BPF_LD_ABS/BPF_LD_IND are not allowed");
            if (in.src_reg != 0) return fail(i, "loads a map or kernel object");
            if (i + 1 >= insns_.size() || insns_[i + 1].code != 0 || insns_[i + 1].dst_reg != 0 ||
                insns_[i + 1].src_reg != 0 || insns_[i + 1].off != 0)
                return fail(i, "malformed 64-bit immediate load");
            if (in.dst_reg == EBPF_REG_10) return fail(i, "writes r10, the frame pointer");
            {
                const uint64_t v = static_cast<uint32_t>(in.imm) |
                                   uint64_t{static_cast<uint32_t>(insns_[i + 1].imm)} << 32;
                st.reg[in.dst_reg] = Value::scalar(v, v);
            }
            return Status::success();
        case kClassJmp32:
            return fail(i, "32-bit jumps (BPF_JMP32) are not supported; compile with -mcpu=v2");
        default: return fail(i, "unknown instruction class");
    }
}

Result<VerifiedFilter> Verifier::run() {
    const size_t n = insns_.size();
    if (n == 0) return make_error("the program has no instructions");
    if (n > kMaxFilterInsns)
        return make_error(std::to_string(n) + " instructions, more than the " +
                          std::to_string(kMaxFilterInsns) + " allowed");
    std::vector<uint32_t> order;
    Flow flow = flow_order(insns_, order);
    if (flow.kind == Flow::kLoop)
        return fail(flow.at, "jumps back to insn " + std::to_string(flow.target) +
                                 ", which leads here again: loops are not allowed (unroll them "
                                 "with #pragma unroll)");
    if (flow.kind == Flow::kOutside)
        return fail(flow.at,
                    "jumps to insn " + std::to_string(flow.target) + ", outside the program");
    if (flow.kind == Flow::kIntoImm64)
        return fail(flow.at, "jumps into the middle of a 64-bit immediate load");
    if (flow.kind == Flow::kUnreachable) return fail(flow.at, "no path reaches this instruction");

    VerifiedFilter out;
    out.validator_visits = count_visits(insns_, order, kMaxValidatorVisits + 1);
    if (out.validator_visits > kMaxValidatorVisits)
        return make_error("branches on too many paths: rte_bpf's validator would visit more than " +
                          std::to_string(kMaxValidatorVisits) +
                          " instructions (it walks every path; join branches earlier or return "
                          "sooner)");

    State entry;
    entry.reg[1] = Value::pointer(Type::kCtx, 0, 0);
    entry.reg[10] = Value::pointer(Type::kStack, 0, 0);
    pending_.emplace(0, entry);
    // Topological order: every path into an instruction is joined before it
    // is looked at, so each instruction is checked once.
    for (const uint32_t i : order) {
        auto it = pending_.find(i);
        if (it == pending_.end()) continue;  // only impossible branches lead here
        State st = std::move(it->second);
        pending_.erase(it);
        bool falls_through = true;
        if (Status s = step(i, st, falls_through); !s) return make_error(s.error());
        if (!falls_through) continue;
        const size_t next = i + (insns_[i].code == (BPF_LD | BPF_IMM | EBPF_DW) ? 2 : 1);
        if (next >= n) return fail(i, "the program can run past its last instruction");
        branch_to(next, st);
    }
    out.packet_reach = static_cast<uint32_t>(reach_);
    return out;
}

}  // namespace

uint64_t validator_visits(std::span<const ebpf_insn> insns, uint64_t limit) {
    if (insns.empty()) return 0;
    std::vector<uint32_t> order;
    const Flow flow = flow_order(insns, order);
    if (flow.kind == Flow::kLoop) return limit;  // rte_bpf would refuse it; no count
    return count_visits(insns, order, limit);
}

Result<VerifiedFilter> verify_filter(std::span<const ebpf_insn> insns) {
    return Verifier(insns).run();
}

}  // namespace linecap::filters
