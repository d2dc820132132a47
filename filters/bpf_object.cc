/* eBPF programs from ELF objects (see bpf_object.hh). Control thread only. */
#include "filters/bpf_object.hh"

#include <bpf/libbpf.h>
#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <utility>

#include "filters/bpf_verifier.hh"
#include "filters/disasm.hh"

namespace linecap::filters {

static_assert(sizeof(ebpf_insn) == sizeof(bpf_insn), "DPDK and kernel instruction layouts differ");

namespace {

/* ---- libbpf's messages --------------------------------------------------- */

/* libbpf prints through one process-wide callback. While an object is
 * opened the callback appends to this thread's capture buffer instead of
 * writing to stderr; LoggingScope restores the previous callback. */
thread_local std::string* t_libbpf_log = nullptr;

int capture_libbpf_print(enum libbpf_print_level level, const char* fmt, va_list ap) {
    if (level == LIBBPF_DEBUG || t_libbpf_log == nullptr) return 0;
    char buf[512];
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    std::string line(buf);
    if (line.rfind("libbpf: ", 0) == 0) line.erase(0, 8);
    while (!line.empty() && (line.back() == '\n' || line.back() == ' ')) line.pop_back();
    if (line.empty()) return 0;
    if (!t_libbpf_log->empty()) *t_libbpf_log += "; ";
    *t_libbpf_log += line;
    return 0;
}

class LibbpfLogCapture {
public:
    LibbpfLogCapture() : prev_(libbpf_set_print(capture_libbpf_print)) { t_libbpf_log = &log_; }
    ~LibbpfLogCapture() {
        t_libbpf_log = nullptr;
        libbpf_set_print(prev_);
    }
    LibbpfLogCapture(const LibbpfLogCapture&) = delete;
    LibbpfLogCapture& operator=(const LibbpfLogCapture&) = delete;
    const std::string& log() const { return log_; }

private:
    libbpf_print_fn_t prev_;
    std::string log_;
};

struct ObjectCloser {
    void operator()(bpf_object* o) const { bpf_object__close(o); }
};
using ObjectPtr = std::unique_ptr<bpf_object, ObjectCloser>;

/* ---- ELF relocations -------------------------------------------------------
 * libbpf only records relocations when it opens an object; it applies them
 * (map fds, global data, subprogram calls) when loading into a kernel, which
 * never happens here. A 64-bit immediate load that refers to a map still
 * reads as "r1 = 0" at this point, so the relocations are read from the ELF
 * file itself to tell the two apart. */

struct ElfImage {
    Elf* elf = nullptr;
    ~ElfImage() {
        if (elf != nullptr) elf_end(elf);
    }
};

/* Fills relocated[i] with the symbol a relocation at instruction i of the
 * program (function `prog` in section `section`) refers to. `image` is the
 * object file's bytes (libelf reads them in place). */
Status read_relocations(std::string& image, const std::string& section, const std::string& prog,
                        size_t insn_cnt, std::vector<std::string>& relocated) {
    relocated.assign(insn_cnt, std::string());
    if (elf_version(EV_CURRENT) == EV_NONE) return make_error("libelf is unusable");
    ElfImage f;
    f.elf = elf_memory(image.data(), image.size());
    if (f.elf == nullptr) return make_error(elf_errmsg(-1));
    size_t shstrndx = 0;
    if (elf_getshdrstrndx(f.elf, &shstrndx) != 0) return make_error(elf_errmsg(-1));

    Elf_Scn* symtab = nullptr;
    size_t strtab = 0;
    size_t sec_index = 0;
    for (Elf_Scn* scn = elf_nextscn(f.elf, nullptr); scn != nullptr;
         scn = elf_nextscn(f.elf, scn)) {
        GElf_Shdr sh;
        if (gelf_getshdr(scn, &sh) == nullptr) continue;
        const char* name = elf_strptr(f.elf, shstrndx, sh.sh_name);
        if (sh.sh_type == SHT_SYMTAB) {
            symtab = scn;
            strtab = sh.sh_link;
        } else if (sh.sh_type == SHT_PROGBITS && name != nullptr && section == name) {
            sec_index = elf_ndxscn(scn);
        }
    }
    if (symtab == nullptr || sec_index == 0)
        return make_error("no symbol table or no section '" + section + "'");
    Elf_Data* syms = elf_getdata(symtab, nullptr);
    GElf_Shdr symsh;
    gelf_getshdr(symtab, &symsh);
    if (syms == nullptr || symsh.sh_entsize == 0) return make_error("unreadable symbol table");
    size_t nsyms = symsh.sh_size / symsh.sh_entsize;

    auto symbol_name = [&](size_t i) -> std::string {
        GElf_Sym s;
        if (i >= nsyms || gelf_getsym(syms, static_cast<int>(i), &s) == nullptr) return "?";
        if (GELF_ST_TYPE(s.st_info) == STT_SECTION) {  // e.g. .rodata, .bss
            Elf_Scn* scn = elf_getscn(f.elf, s.st_shndx);
            GElf_Shdr sh;
            if (scn != nullptr && gelf_getshdr(scn, &sh) != nullptr) {
                const char* n = elf_strptr(f.elf, shstrndx, sh.sh_name);
                if (n != nullptr) return n;
            }
            return "?";
        }
        const char* n = elf_strptr(f.elf, strtab, s.st_name);
        return n != nullptr && *n ? n : "?";
    };

    bool found = false;
    uint64_t start = 0;
    for (size_t i = 0; i < nsyms && !found; i++) {
        GElf_Sym s;
        if (gelf_getsym(syms, static_cast<int>(i), &s) == nullptr) continue;
        if (GELF_ST_TYPE(s.st_info) != STT_FUNC || s.st_shndx != sec_index) continue;
        const char* n = elf_strptr(f.elf, strtab, s.st_name);
        if (n != nullptr && prog == n) {
            found = true;
            start = s.st_value;
        }
    }
    if (!found) return make_error("no symbol for program '" + prog + "'");

    uint64_t end = start + insn_cnt * sizeof(ebpf_insn);
    for (Elf_Scn* scn = elf_nextscn(f.elf, nullptr); scn != nullptr;
         scn = elf_nextscn(f.elf, scn)) {
        GElf_Shdr sh;
        if (gelf_getshdr(scn, &sh) == nullptr) continue;
        if ((sh.sh_type != SHT_REL && sh.sh_type != SHT_RELA) || sh.sh_info != sec_index ||
            sh.sh_entsize == 0)
            continue;
        Elf_Data* d = elf_getdata(scn, nullptr);
        if (d == nullptr) continue;
        size_t n = sh.sh_size / sh.sh_entsize;
        for (size_t j = 0; j < n; j++) {
            uint64_t off, info;
            if (sh.sh_type == SHT_REL) {
                GElf_Rel r;
                if (gelf_getrel(d, static_cast<int>(j), &r) == nullptr) continue;
                off = r.r_offset;
                info = r.r_info;
            } else {
                GElf_Rela r;
                if (gelf_getrela(d, static_cast<int>(j), &r) == nullptr) continue;
                off = r.r_offset;
                info = r.r_info;
            }
            if (off < start || off >= end) continue;
            relocated[(off - start) / sizeof(ebpf_insn)] = symbol_name(GELF_R_SYM(info));
        }
    }
    return Status::success();
}

/* ---- Instruction checks -------------------------------------------------- */

constexpr uint8_t kClassJmp32 = 0x06;  // eBPF's BPF_JMP32; cBPF's BPF_RET in bpf_def.h
constexpr uint8_t kModeMemsx = 0x80;   // sign-extending loads (cpu v4)
constexpr uint8_t kPseudoCall = 1;     // src_reg of a BPF-to-BPF call
constexpr uint8_t kPseudoKfuncCall = 2;

const char* helper_name(int32_t id) {
    switch (id) {
        case 1: return "bpf_map_lookup_elem";
        case 2: return "bpf_map_update_elem";
        case 3: return "bpf_map_delete_elem";
        case 4: return "bpf_probe_read";
        case 5: return "bpf_ktime_get_ns";
        case 6: return "bpf_trace_printk";
        case 7: return "bpf_get_prandom_u32";
        case 8: return "bpf_get_smp_processor_id";
        case 9: return "bpf_skb_store_bytes";
        case 26: return "bpf_skb_load_bytes";
        case 130: return "bpf_ringbuf_output";
        default: return nullptr;
    }
}

const char* pseudo_name(uint8_t src) {
    switch (src) {
        case 1: return "BPF_PSEUDO_MAP_FD";
        case 2: return "BPF_PSEUDO_MAP_VALUE";
        case 3: return "BPF_PSEUDO_BTF_ID";
        case 4: return "BPF_PSEUDO_FUNC";
        case 5: return "BPF_PSEUDO_MAP_IDX";
        case 6: return "BPF_PSEUDO_MAP_IDX_VALUE";
        default: return "an unknown BPF_PSEUDO_* kind";
    }
}

/* "insn 7 (call #5): ", as verify_filter() names instructions. */
std::string at(std::span<const ebpf_insn> insns, size_t i) {
    return "insn " + std::to_string(i) + " (" + disassemble_one(insns, i) + "): ";
}

}  // namespace

Status check_bpf_program(std::span<const ebpf_insn> insns, std::span<const std::string> relocated) {
    if (insns.empty()) return make_error("the program has no instructions");
    auto reloc = [&](size_t i) -> const std::string* {
        return i < relocated.size() && !relocated[i].empty() ? &relocated[i] : nullptr;
    };
    for (size_t i = 0; i < insns.size(); i++) {
        const ebpf_insn& in = insns[i];
        const uint8_t cls = BPF_CLASS(in.code);
        const uint8_t mode = BPF_MODE(in.code);

        if (in.code == (BPF_LD | BPF_IMM | EBPF_DW)) {
            if (i + 1 >= insns.size())
                return make_error(at(insns, i) +
                                  "64-bit immediate load cut short (second half missing)");
            if (in.src_reg != 0)
                return make_error(at(insns, i) + "loads a map or kernel object (" +
                                  pseudo_name(in.src_reg) +
                                  "); maps do not exist outside the kernel");
            if (const std::string* sym = reloc(i))
                return make_error(at(insns, i) + "refers to '" + *sym +
                                  "' (a map or global data, which the packet VM does not have; "
                                  "keep state in local variables)");
            i++;  // second half of the 64-bit immediate
            continue;
        }
        if (const std::string* sym = reloc(i);
            sym != nullptr && !(cls == BPF_JMP && BPF_OP(in.code) == EBPF_CALL))
            return make_error(at(insns, i) + "has a relocation to '" + *sym +
                              "' that cannot be resolved without a kernel");

        switch (cls) {
            case BPF_LD:
                if (mode == BPF_ABS || mode == BPF_IND)
                    return make_error(at(insns, i) +
                                      "legacy packet load (BPF_LD_ABS/BPF_LD_IND) needs a kernel "
                                      "socket buffer; read through ctx->data instead");
                return make_error(at(insns, i) + "unknown load instruction");
            case BPF_LDX:
                if (mode == kModeMemsx)
                    return make_error(at(insns, i) +
                                      "sign-extending load (cpu v4) is not supported; "
                                      "compile with -mcpu=v2");
                if (mode != BPF_MEM) return make_error(at(insns, i) + "unknown load instruction");
                break;
            case BPF_ST:
            case BPF_STX:
                if (mode == EBPF_XADD) {
                    if (cls != BPF_STX || in.imm != BPF_ADD ||
                        (BPF_SIZE(in.code) != BPF_W && BPF_SIZE(in.code) != EBPF_DW))
                        return make_error(at(insns, i) + "atomic operation " +
                                          std::to_string(in.imm) +
                                          " is not supported (only a plain atomic add is)");
                    break;
                }
                if (mode != BPF_MEM) return make_error(at(insns, i) + "unknown store instruction");
                break;
            case BPF_ALU:
            case EBPF_ALU64:
                if (in.off != 0)
                    return make_error(at(insns, i) +
                                      "signed division or sign-extending move (cpu v4) "
                                      "is not supported; compile with -mcpu=v2");
                if (cls == EBPF_ALU64 && BPF_OP(in.code) == EBPF_END)
                    return make_error(at(insns, i) +
                                      "unconditional byte swap (cpu v4) is not "
                                      "supported; compile with -mcpu=v2");
                break;
            case BPF_JMP:
                if (BPF_OP(in.code) == EBPF_CALL) {
                    if (in.src_reg == kPseudoCall)
                        return make_error(at(insns, i) +
                                          "calls another BPF function; the packet VM runs a single "
                                          "function (mark helpers static __always_inline)");
                    if (in.src_reg == kPseudoKfuncCall)
                        return make_error(at(insns, i) +
                                          "calls a kernel function; there is no kernel");
                    const char* name = helper_name(in.imm);
                    return make_error(at(insns, i) + "calls kernel helper " +
                                      std::to_string(in.imm) +
                                      (name != nullptr ? std::string(" (") + name + ")" : "") +
                                      "; the packet VM has no helpers");
                }
                break;
            case kClassJmp32:
                return make_error(at(insns, i) +
                                  "32-bit jump (BPF_JMP32) is not supported by rte_bpf; "
                                  "compile with -mcpu=v2");
            default: return make_error(at(insns, i) + "unknown instruction class");
        }
    }
    return Status::success();
}

/* ---- "offset += pointer" -----------------------------------------------
 * rte_bpf 22.11's validator keeps a register's pointer type through
 * "pointer += scalar" but turns "scalar += pointer" into a scalar, after
 * which every read through the sum is refused. clang emits either order. A
 * small forward type analysis finds the second form and rewrites it, without
 * needing a free register (EbpfVm may want one for its own rewrites):
 *     *(u64*)(r10 + S) = src    spill the pointer (the validator keeps its type)
 *     src = dst                 the scalar
 *     dst = *(u64*)(r10 + S)    the pointer
 *     dst += src                pointer += scalar
 *     src = *(u64*)(r10 + S)    src holds the pointer again, as before
 * S is an 8-byte slot below everything the program uses of its stack. */

namespace {

enum class Kind : uint8_t { kUninit, kScalar, kCtx, kPacket, kStack, kUnknown };

bool is_pointer(Kind k) { return k == Kind::kCtx || k == Kind::kPacket || k == Kind::kStack; }

constexpr int kStackSlots = 512 / 8;  // rte_bpf's stack: 512 bytes below r10
constexpr int32_t kUnknownOffset = INT32_MIN;

struct RegState {
    Kind kind = Kind::kUninit;
    int32_t off = 0;  // kStack: offset from r10, or kUnknownOffset
    bool operator==(const RegState&) const = default;
};

struct TypeState {
    bool reached = false;
    RegState reg[11];
    Kind slot[kStackSlots] = {};  // what an 8-byte spill at r10 - 8*(i+1) holds
    bool operator==(const TypeState&) const = default;
};

RegState join(RegState a, RegState b) {
    if (a == b) return a;
    if (a.kind == b.kind && a.kind == Kind::kStack) return {Kind::kStack, kUnknownOffset};
    if (a.kind == Kind::kUninit) return b;
    if (b.kind == Kind::kUninit) return a;
    return {Kind::kUnknown, 0};
}

/* Merges `in` into `into`; true if `into` changed. */
bool merge(TypeState& into, const TypeState& in) {
    if (!into.reached) {
        into = in;
        into.reached = true;
        return true;
    }
    TypeState before = into;
    for (int r = 0; r < 11; r++) into.reg[r] = join(into.reg[r], in.reg[r]);
    for (int i = 0; i < kStackSlots; i++)
        if (into.slot[i] != in.slot[i]) into.slot[i] = Kind::kUnknown;
    return !(before == into);
}

struct Analysis {
    std::vector<size_t> sites;  // "scalar += pointer" instructions
    int32_t lowest = 0;         // lowest stack offset the program touches
    bool ok = true;             // false: a stack access the analysis cannot place
};

bool is_jump(const ebpf_insn& in) {
    return BPF_CLASS(in.code) == BPF_JMP && BPF_OP(in.code) != EBPF_CALL &&
           BPF_OP(in.code) != EBPF_EXIT;
}

Analysis analyse(std::span<const ebpf_insn> insns) {
    Analysis a;
    const size_t n = insns.size();
    std::vector<TypeState> at(n);
    TypeState entry;
    entry.reg[1] = {Kind::kCtx, 0};
    entry.reg[10] = {Kind::kStack, 0};
    for (int r : {0, 2, 3, 4, 5, 6, 7, 8, 9}) entry.reg[r] = {Kind::kUninit, 0};
    std::vector<size_t> work = {0};
    merge(at[0], entry);

    auto stack_slot = [](int32_t off) {
        return off < 0 && off >= -512 && off % 8 == 0 ? (-off / 8) - 1 : -1;
    };

    while (!work.empty() && a.ok) {
        size_t i = work.back();
        work.pop_back();
        TypeState st = at[i];
        const ebpf_insn& in = insns[i];
        const uint8_t cls = BPF_CLASS(in.code);
        const uint8_t op = BPF_OP(in.code);
        RegState& dst = st.reg[in.dst_reg & 0xf];
        const RegState src = st.reg[in.src_reg & 0xf];
        size_t next = i + 1;
        bool falls_through = true;
        std::vector<size_t> targets;

        auto access = [&](const RegState& base, int16_t off) -> int {
            // Returns the 8-byte spill slot for a stack access, -1 otherwise.
            if (base.kind != Kind::kStack) return -1;
            if (base.off == kUnknownOffset) {
                a.ok = false;
                return -1;
            }
            int32_t o = base.off + off;
            a.lowest = std::min(a.lowest, o);
            return stack_slot(o);
        };

        if (in.code == (BPF_LD | BPF_IMM | EBPF_DW)) {
            dst = {Kind::kScalar, 0};
            next = i + 2;
        } else if (cls == EBPF_ALU64 || cls == BPF_ALU) {
            const bool x = BPF_SRC(in.code) == BPF_X;
            if (cls == BPF_ALU) {
                dst = {Kind::kScalar, 0};
            } else if (op == EBPF_MOV) {
                dst = x ? src : RegState{Kind::kScalar, 0};
            } else if (op == BPF_ADD || op == BPF_SUB) {
                if (!x) {
                    if (dst.kind == Kind::kStack && dst.off != kUnknownOffset)
                        dst.off += op == BPF_ADD ? in.imm : -in.imm;
                    else if (!is_pointer(dst.kind))
                        dst = {dst.kind == Kind::kUnknown ? Kind::kUnknown : Kind::kScalar, 0};
                } else if (is_pointer(dst.kind) && src.kind == Kind::kScalar) {
                    if (dst.kind == Kind::kStack) dst.off = kUnknownOffset;
                } else if (op == BPF_ADD && dst.kind == Kind::kScalar && is_pointer(src.kind)) {
                    a.sites.push_back(i);
                    dst = {src.kind, src.kind == Kind::kStack ? kUnknownOffset : 0};
                } else if (dst.kind == Kind::kScalar && src.kind == Kind::kScalar) {
                    // stays scalar
                } else {
                    dst = {Kind::kUnknown, 0};
                }
            } else {
                dst = {Kind::kScalar, 0};
            }
        } else if (cls == BPF_LDX) {
            int slot = access(src, in.off);
            if (src.kind == Kind::kCtx && in.off == 0 && BPF_SIZE(in.code) == EBPF_DW)
                dst = {Kind::kPacket, 0};
            else if (slot >= 0 && BPF_SIZE(in.code) == EBPF_DW)
                dst = {st.slot[slot], 0};
            else
                dst = {Kind::kScalar, 0};
            if (dst.kind == Kind::kStack) dst.off = kUnknownOffset;  // spilled stack pointers: rare
        } else if (cls == BPF_ST || cls == BPF_STX) {
            const RegState base = st.reg[in.dst_reg & 0xf];
            int slot = access(base, in.off);
            if (slot >= 0) {
                bool spill =
                    cls == BPF_STX && BPF_MODE(in.code) == BPF_MEM && BPF_SIZE(in.code) == EBPF_DW;
                st.slot[slot] = spill ? src.kind : Kind::kScalar;
            } else if (base.kind == Kind::kStack) {
                // Unaligned or partial: the slots it overlaps hold bytes now.
                int32_t o = base.off + in.off;
                for (int k = 0; k < kStackSlots; k++) {
                    int32_t lo = -8 * (k + 1);
                    if (o < lo + 8 && o + 8 > lo) st.slot[k] = Kind::kScalar;
                }
            }
        } else if (cls == BPF_JMP) {
            if (op == EBPF_EXIT) {
                falls_through = false;
            } else if (op == EBPF_CALL) {
                for (int r = 0; r <= 5; r++) st.reg[r] = {Kind::kScalar, 0};
            } else {
                targets.push_back(i + 1 + in.off);
                if (op == BPF_JA) falls_through = false;
            }
        }

        if (falls_through) targets.push_back(next);
        for (size_t t : targets) {
            if (t >= n) {
                a.ok = false;
                break;
            }
            if (merge(at[t], st)) work.push_back(t);
        }
    }
    // A site must be "scalar += pointer" on every path that reaches it.
    std::vector<size_t> sure;
    for (size_t i : a.sites) {
        const TypeState& st = at[i];
        if (st.reg[insns[i].dst_reg & 0xf].kind == Kind::kScalar &&
            is_pointer(st.reg[insns[i].src_reg & 0xf].kind))
            sure.push_back(i);
    }
    std::sort(sure.begin(), sure.end());
    sure.erase(std::unique(sure.begin(), sure.end()), sure.end());
    a.sites = std::move(sure);
    return a;
}

}  // namespace

uint32_t normalize_pointer_adds(std::vector<ebpf_insn>& insns) {
    if (insns.empty()) return 0;
    Analysis a = analyse(insns);
    if (!a.ok || a.sites.empty()) return 0;
    // 8-aligned and entirely below the lowest byte the program touches.
    const int32_t slot = a.lowest - ((a.lowest % 8 + 8) % 8) - 8;
    if (slot < -512) return 0;

    const size_t n = insns.size();
    std::vector<bool> site(n, false);
    for (size_t i : a.sites) site[i] = true;
    std::vector<int64_t> pos(n + 1);
    int64_t next = 0;
    for (size_t i = 0; i < n; i++) {
        pos[i] = next;
        next += site[i] ? 5 : 1;
    }
    pos[n] = next;

    std::vector<ebpf_insn> out;
    out.reserve(static_cast<size_t>(next));
    for (size_t i = 0; i < n; i++) {
        ebpf_insn in = insns[i];
        if (is_jump(in)) {
            int64_t off = pos[i + 1 + in.off] - pos[i] - 1;
            if (off < INT16_MIN || off > INT16_MAX) return 0;
            in.off = static_cast<int16_t>(off);
        }
        if (!site[i]) {
            out.push_back(in);
            continue;
        }
        const uint8_t d = in.dst_reg, s = in.src_reg;
        const int16_t o = static_cast<int16_t>(slot);
        auto make = [](uint8_t code, uint8_t dr, uint8_t sr, int16_t off) {
            ebpf_insn x{};
            x.code = code;
            x.dst_reg = dr & 0xf;
            x.src_reg = sr & 0xf;
            x.off = off;
            return x;
        };
        out.push_back(make(BPF_STX | BPF_MEM | EBPF_DW, EBPF_REG_10, s, o));
        out.push_back(make(EBPF_ALU64 | EBPF_MOV | BPF_X, s, d, 0));
        out.push_back(make(BPF_LDX | BPF_MEM | EBPF_DW, d, EBPF_REG_10, o));
        out.push_back(make(EBPF_ALU64 | BPF_ADD | BPF_X, d, s, 0));
        out.push_back(make(BPF_LDX | BPF_MEM | EBPF_DW, s, EBPF_REG_10, o));
    }
    insns = std::move(out);
    return static_cast<uint32_t>(a.sites.size());
}

Result<std::string> read_object_file(int dirfd, const std::string& path) {
    // Opened once, and the descriptor is what gets checked and read: a
    // symbolic link is refused rather than followed, and a FIFO or a device
    // neither blocks the caller nor gets read.
    const int fd = openat(dirfd, path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        const int err = errno;
        if (err == ENOENT) return make_error("no such file");
        if (err == ELOOP) return make_error("is a symbolic link; name the file itself");
        return make_error(std::string("cannot open: ") + std::strerror(err));
    }
    struct Closer {
        int fd;
        ~Closer() { close(fd); }
    } closer{fd};
    struct stat st;
    if (fstat(fd, &st) != 0) return make_error(std::string("cannot stat: ") + std::strerror(errno));
    if (S_ISDIR(st.st_mode)) return make_error("is a directory");
    if (!S_ISREG(st.st_mode)) return make_error("is not a regular file");
    if (static_cast<uint64_t>(st.st_size) > kMaxObjectBytes)
        return make_error("is " + std::to_string(st.st_size) + " bytes, more than the " +
                          std::to_string(kMaxObjectBytes) + " allowed");
    std::string image(static_cast<size_t>(st.st_size), '\0');
    size_t got = 0;
    while (got < image.size()) {
        const ssize_t r = read(fd, image.data() + got, image.size() - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return make_error(std::string("cannot read: ") + std::strerror(errno));
        if (r == 0) break;  // shrank while being read
        got += static_cast<size_t>(r);
    }
    image.resize(got);
    return image;
}

Result<BpfProgram> load_bpf_object_image(std::string image, const std::string& label,
                                         std::string_view program) {
    const std::string what = "bpf object '" + label + "': ";
    if (image.size() < 4 || std::memcmp(image.data(),
                                        "\x7f"
                                        "ELF",
                                        4) != 0)
        return make_error(what + "not an ELF object (build it with clang -O2 -target bpf -c)");

    LibbpfLogCapture capture;
    errno = 0;
    bpf_object_open_opts opts{};
    opts.sz = sizeof(opts);
    opts.object_name = "linecap";
    ObjectPtr obj(bpf_object__open_mem(image.data(), image.size(), &opts));
    if (!obj) {
        int err = errno;
        std::string msg = what + "libbpf cannot open it";
        if (err != 0) msg += std::string(": ") + std::strerror(err);
        if (!capture.log().empty()) msg += " (libbpf: " + capture.log() + ")";
        return make_error(msg);
    }

    std::vector<bpf_program*> progs;
    std::string names;
    bpf_program* prog = nullptr;
    bpf_object__for_each_program(prog, obj.get()) {
        progs.push_back(prog);
        names += std::string(names.empty() ? "" : ", ") + bpf_program__name(prog);
    }
    if (progs.empty()) return make_error(what + "holds no program");

    bpf_program* chosen = nullptr;
    if (program.empty()) {
        if (progs.size() > 1)
            return make_error(what + "holds " + std::to_string(progs.size()) + " programs (" +
                              names + "); name one as FILE:PROGRAM");
        chosen = progs[0];
    } else {
        for (bpf_program* p : progs)
            if (program == bpf_program__name(p)) chosen = p;
        if (chosen == nullptr)
            return make_error(what + "has no program '" + std::string(program) +
                              "' (it has: " + names + ")");
    }

    BpfProgram out;
    out.file = label;
    out.name = bpf_program__name(chosen);
    out.section = bpf_program__section_name(chosen);
    const std::string where = what + "program '" + out.name + "': ";
    size_t n = bpf_program__insn_cnt(chosen);
    const bpf_insn* raw = bpf_program__insns(chosen);
    if (raw == nullptr || n == 0) return make_error(where + "is empty");
    // Refused before anything walks it: our pass is linear, rte_bpf's is not.
    if (n > kMaxFilterInsns)
        return make_error(where + std::to_string(n) + " instructions, more than the " +
                          std::to_string(kMaxFilterInsns) + " allowed");
    out.insns.resize(n);
    std::memcpy(out.insns.data(), raw, n * sizeof(ebpf_insn));

    std::vector<std::string> relocated;
    Status rs = read_relocations(image, out.section, out.name, n, relocated);
    if (!rs.ok()) return make_error(where + "cannot read its relocations: " + rs.error());
    Status cs = check_bpf_program(out.insns, relocated);
    if (!cs.ok()) return make_error(where + cs.error());
    auto verified = verify_filter(out.insns);
    if (!verified) return make_error(where + verified.error());
    out.rewritten_adds = normalize_pointer_adds(out.insns);
    if (out.rewritten_adds != 0) {
        // The rewrite only spills and fills; proving it again costs little
        // and keeps the reach and visit counts those of what will run.
        verified = verify_filter(out.insns);
        if (!verified)
            return make_error(where + "after rewriting offset += pointer: " + verified.error());
    }
    out.packet_reach = verified->packet_reach;
    out.validator_visits = verified->validator_visits;
    return out;
}

Result<BpfProgram> load_bpf_object(const std::string& path, std::string_view program) {
    auto image = read_object_file(AT_FDCWD, path);
    if (!image) return make_error("bpf object '" + path + "': " + image.error());
    return load_bpf_object_image(std::move(*image), path, program);
}

Status check_bpf_dir(const std::string& dir) {
    const int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return make_error("--bpf-dir " + dir + ": " + std::strerror(errno));
    struct stat st;
    const int rc = fstat(fd, &st);
    close(fd);
    if (rc != 0) return make_error("--bpf-dir " + dir + ": " + std::strerror(errno));
    if (st.st_uid != 0 || (st.st_mode & (S_IWGRP | S_IWOTH)) != 0)
        return make_error("--bpf-dir " + dir +
                          ": must be owned by root and writable by no one else (the control "
                          "group loads programs from it)");
    return Status::success();
}

Result<BpfProgram> load_bpf_object(std::string_view spec) {
    std::string s(spec);
    if (s.empty()) return make_error("bpf object: empty file name");
    std::error_code ec;
    size_t colon = s.rfind(':');
    if (std::filesystem::exists(s, ec) || colon == std::string::npos || colon == 0)
        return load_bpf_object(s, std::string_view());
    return load_bpf_object(s.substr(0, colon), std::string_view(s).substr(colon + 1));
}

}  // namespace linecap::filters
