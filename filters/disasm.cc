#include "filters/disasm.hh"

#include <cinttypes>
#include <cstdio>

namespace linecap::filters {
namespace {

const char* alu_name(uint8_t op) {
    switch (op) {
        case BPF_ADD: return "add";
        case BPF_SUB: return "sub";
        case BPF_MUL: return "mul";
        case BPF_DIV: return "div";
        case BPF_OR: return "or";
        case BPF_AND: return "and";
        case BPF_LSH: return "lsh";
        case BPF_RSH: return "rsh";
        case BPF_NEG: return "neg";
        case BPF_MOD: return "mod";
        case BPF_XOR: return "xor";
        case EBPF_MOV: return "mov";
        case EBPF_ARSH: return "arsh";
        default: return nullptr;
    }
}

const char* jmp_name(uint8_t op) {
    switch (op) {
        case BPF_JEQ: return "jeq";
        case BPF_JGT: return "jgt";
        case BPF_JGE: return "jge";
        case BPF_JSET: return "jset";
        case EBPF_JNE: return "jne";
        case EBPF_JSGT: return "jsgt";
        case EBPF_JSGE: return "jsge";
        case EBPF_JLT: return "jlt";
        case EBPF_JLE: return "jle";
        case EBPF_JSLT: return "jslt";
        case EBPF_JSLE: return "jsle";
        default: return nullptr;
    }
}

const char* size_suffix(uint8_t code) {
    switch (BPF_SIZE(code)) {
        case BPF_B: return "b";
        case BPF_H: return "h";
        case BPF_W: return "w";
        default: return "dw";
    }
}

std::string fmt(const char* f, auto... args) {
    char buf[160];
    std::snprintf(buf, sizeof(buf), f, args...);
    return buf;
}

std::string mem_operand(unsigned reg, int16_t off) {
    if (off == 0) return fmt("[r%u]", reg);
    return fmt("[r%u%+d]", reg, off);
}

}  // namespace

std::string disassemble_one(std::span<const ebpf_insn> prog, size_t index) {
    if (index >= prog.size()) return "(out of range)";
    const ebpf_insn& in = prog[index];
    const uint8_t code = in.code;
    const unsigned dst = in.dst_reg;
    const unsigned src = in.src_reg;
    const long target = static_cast<long>(index) + 1 + in.off;

    switch (BPF_CLASS(code)) {
        case BPF_ALU:
        case EBPF_ALU64: {
            const bool is32 = BPF_CLASS(code) == BPF_ALU;
            const uint8_t op = BPF_OP(code);
            if (op == EBPF_END)
                return fmt("%s%d r%u", BPF_SRC(code) == EBPF_TO_BE ? "be" : "le", in.imm, dst);
            const char* name = alu_name(op);
            if (name == nullptr) break;
            const char* w = is32 ? "32" : "";
            if (op == BPF_NEG) return fmt("%s%s r%u", name, w, dst);
            if (BPF_SRC(code) == BPF_X) return fmt("%s%s r%u, r%u", name, w, dst, src);
            return fmt("%s%s r%u, #%#x", name, w, dst, static_cast<uint32_t>(in.imm));
        }
        case BPF_LDX:
            if (BPF_MODE(code) != BPF_MEM) break;
            return fmt("ldx%s r%u, ", size_suffix(code), dst) + mem_operand(src, in.off);
        case BPF_ST:
            if (BPF_MODE(code) != BPF_MEM) break;
            return fmt("st%s ", size_suffix(code)) + mem_operand(dst, in.off) +
                   fmt(", #%#x", static_cast<uint32_t>(in.imm));
        case BPF_STX:
            if (BPF_MODE(code) == EBPF_XADD)
                return fmt("xadd%s ", size_suffix(code)) + mem_operand(dst, in.off) +
                       fmt(", r%u", src);
            if (BPF_MODE(code) != BPF_MEM) break;
            return fmt("stx%s ", size_suffix(code)) + mem_operand(dst, in.off) + fmt(", r%u", src);
        case BPF_LD:
            if (code == (BPF_LD | BPF_IMM | EBPF_DW)) {
                uint64_t v = static_cast<uint32_t>(in.imm);
                if (index + 1 < prog.size())
                    v |= static_cast<uint64_t>(static_cast<uint32_t>(prog[index + 1].imm)) << 32;
                return fmt("lddw r%u, #%#" PRIx64, dst, v);
            }
            if (BPF_MODE(code) == BPF_ABS)
                return fmt("ldabs%s #%#x", size_suffix(code), static_cast<uint32_t>(in.imm));
            if (BPF_MODE(code) == BPF_IND)
                return fmt("ldind%s r%u, #%#x", size_suffix(code), src,
                           static_cast<uint32_t>(in.imm));
            break;
        case BPF_JMP: {
            const uint8_t op = BPF_OP(code);
            if (op == BPF_JA) return fmt("ja -> %ld", target);
            if (op == EBPF_EXIT) return "exit";
            if (op == EBPF_CALL) {
                if (src == EBPF_PSEUDO_CALL)
                    return fmt("call -> %ld", static_cast<long>(index) + 1 + in.imm);
                return fmt("call #%d", in.imm);
            }
            const char* name = jmp_name(op);
            if (name == nullptr) break;
            if (BPF_SRC(code) == BPF_X) return fmt("%s r%u, r%u, -> %ld", name, dst, src, target);
            return fmt("%s r%u, #%#x, -> %ld", name, dst, static_cast<uint32_t>(in.imm), target);
        }
        default: break;
    }
    return fmt("(unknown opcode %#04x)", code);
}

std::string disassemble(std::span<const ebpf_insn> prog) {
    std::string out;
    for (size_t i = 0; i < prog.size(); i++) {
        out += fmt("(%03zu) ", i);
        out += disassemble_one(prog, i);
        out += '\n';
        if (prog[i].code == (BPF_LD | BPF_IMM | EBPF_DW)) i++;
    }
    return out;
}

}  // namespace linecap::filters
