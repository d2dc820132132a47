#include "index/prune.hh"

#include <algorithm>
#include <cstring>

namespace linecap::index {
namespace {

/* Classic BPF opcode fields, the values of pcap/bpf.h (not included: see
 * filters/classic_insn.hh). */
enum : uint16_t {
    kLd = 0x00,
    kLdx = 0x01,
    kSt = 0x02,
    kStx = 0x03,
    kAlu = 0x04,
    kJmp = 0x05,
    kRet = 0x06,
    kMisc = 0x07,
};
enum : uint16_t { kW = 0x00, kH = 0x08, kB = 0x10 };
enum : uint16_t { kImm = 0x00, kAbs = 0x20, kInd = 0x40, kMem = 0x60, kLen = 0x80, kMsh = 0xa0 };
enum : uint16_t {
    kAdd = 0x00,
    kSub = 0x10,
    kMul = 0x20,
    kDiv = 0x30,
    kOr = 0x40,
    kAnd = 0x50,
    kLsh = 0x60,
    kRsh = 0x70,
    kNeg = 0x80,
    kMod = 0x90,
    kXor = 0xa0,
};
enum : uint16_t { kJa = 0x00, kJeq = 0x10, kJgt = 0x20, kJge = 0x30, kJset = 0x40 };
enum : uint16_t { kSrcX = 0x08 };
enum : uint16_t { kRvalA = 0x10 };
enum : uint16_t { kTax = 0x00, kTxa = 0x80 };
constexpr uint32_t kMemWords = 16;

/* Instructions run over all paths of one evaluation: bounds the loops of
 * `protochain` (whose back jumps on unknown bytes also fork, so kMaxPaths
 * usually stops them first). */
constexpr uint32_t kMaxSteps = 1u << 16;

/* A 32-bit value with known and unknown bits, as the Linux verifier's tnum:
 * bit i is unknown if set in m, else equal to bit i of v (v & m == 0). */
struct Tnum {
    uint32_t v;
    uint32_t m;
};
constexpr Tnum known(uint32_t x) { return {x, 0}; }
constexpr Tnum kUnknown{0, ~0u};

Tnum t_add(Tnum a, Tnum b) {
    const uint32_t sm = a.m + b.m, sv = a.v + b.v;
    const uint32_t mu = ((sm + sv) ^ sv) | a.m | b.m;
    return {sv & ~mu, mu};
}
Tnum t_sub(Tnum a, Tnum b) {
    const uint32_t dv = a.v - b.v;
    const uint32_t mu = ((dv + a.m) ^ (dv - b.m)) | a.m | b.m;
    return {dv & ~mu, mu};
}
Tnum t_and(Tnum a, Tnum b) {
    const uint32_t v = a.v & b.v;
    return {v, (a.v | a.m) & (b.v | b.m) & ~v};
}
Tnum t_or(Tnum a, Tnum b) {
    const uint32_t v = a.v | b.v;
    return {v, (a.m | b.m) & ~v};
}
Tnum t_xor(Tnum a, Tnum b) {
    const uint32_t mu = a.m | b.m;
    return {(a.v ^ b.v) & ~mu, mu};
}

/* The abstract packet: byte i of every packet of the flow has the bits of
 * val[i] where known[i] is set; every packet has at least min_len captured
 * bytes (the end of the last byte the key fixes, or of a header the walker
 * required to be captured). Only the first lim = min(min_len, kModelBytes)
 * bytes are stored (and zeroed): every byte past them is unknown. */
constexpr uint32_t kModelBytes = 160;
struct Model {
    uint8_t val[kModelBytes];
    uint8_t known[kModelBytes];
    uint32_t min_len;
    uint32_t lim;

    void start(uint32_t len) {
        min_len = len;
        lim = len < kModelBytes ? len : kModelBytes;
        // A variable-length memset: glibc's vector stores, not rep stos.
        std::memset(val, 0, lim);
        std::memset(known, 0, lim);
    }
    void set8(uint32_t at, uint8_t v, uint8_t mask = 0xff) {
        if (at >= lim) return;
        val[at] = v & mask;
        known[at] = mask;
    }
    void set16(uint32_t at, uint16_t v) {
        set8(at, static_cast<uint8_t>(v >> 8));
        set8(at + 1, static_cast<uint8_t>(v));
    }
    void set_bytes(uint32_t at, const uint8_t* p, uint32_t n) {
        for (uint32_t i = 0; i < n; i++) set8(at + i, p[i]);
    }
    Tnum load(uint64_t at, uint32_t size) const {
        Tnum r{0, 0};
        for (uint32_t i = 0; i < size; i++) {
            r.v <<= 8;
            r.m <<= 8;
            if (at + i < lim) {
                r.v |= val[at + i];
                r.m |= static_cast<uint8_t>(~known[at + i]);
            } else {
                r.m |= 0xff;
            }
        }
        return r;
    }
    bool surely_captured(uint64_t at, uint32_t size) const { return at + size <= min_len; }
};

/* Fills m from k; false if the key is not one make_flow_key() produces (a
 * damaged index), which the caller answers "may accept, may reject". */
bool build_model(const FlowKey& k, uint8_t unknown, Model& m) {
    uint32_t type_at;  // the first type field of the link header; 0: raw IP
    switch (k.linktype) {
        case 1: type_at = 12; break;    // DLT_EN10MB
        case 113: type_at = 14; break;  // DLT_LINUX_SLL
        case 12:                        // DLT_RAW
        case 14:                        // DLT_RAW (OpenBSD)
        case 101: type_at = 0; break;   // LINKTYPE_RAW
        default: return false;
    }
    if (k.vlan_tags > 2) return false;
    const uint32_t l3 = type_at == 0 ? 0 : type_at + 4u * k.vlan_tags + 2;
    if (k.l3_offset != l3) return false;
    const uint32_t l4 = l3 + k.l4_offset;
    if (k.kind == FlowKind::kLink) {
        if (type_at == 0) return false;
        m.start(l3);
    } else if (k.kind == FlowKind::kIp) {
        if (k.ip_version == 4) {
            if (k.l4_offset < 20 || k.l4_offset > 60 || k.l4_offset % 4 != 0) return false;
        } else if (k.ip_version != 6 || k.l4_offset < 40) {
            return false;
        }
        // The walker required the IP header, its options and extension
        // headers captured, and the whole TCP (20) or UDP (8) header when it
        // gave ports.
        uint32_t end = l4;
        if (k.flags & kFlowHasPorts) end += k.proto == 6 ? 20 : k.proto == 17 ? 8 : 4;
        m.start(end);
    } else {
        return false;
    }
    if (type_at != 0) {
        // Tags: TPID known, then PCP and DEI unknown, the VID known.
        for (uint32_t i = 0; i < k.vlan_tags; i++) {
            m.set16(type_at + 4 * i, k.tpid[i]);
            m.set8(type_at + 4 * i + 2, static_cast<uint8_t>(k.vid[i] >> 8 & 0x0f), 0x0f);
            m.set8(type_at + 4 * i + 3, static_cast<uint8_t>(k.vid[i]));
        }
        m.set16(l3 - 2, k.ethertype);
    }
    if (k.kind == FlowKind::kLink) return true;

    if (k.ip_version == 4) {
        m.set8(l3, static_cast<uint8_t>(0x40 | k.l4_offset / 4));
        if (!(k.flags & kFlowLaterFragment)) {
            // Fragment offset zero; the reserved bit, DF and MF unknown.
            m.set8(l3 + 6, 0, 0x1f);
            m.set8(l3 + 7, 0);
        }
        m.set8(l3 + 9, k.first_nxt);
        if (!(unknown & FlowFilter::kUnknownSrc)) m.set_bytes(l3 + 12, k.src, 4);
        if (!(unknown & FlowFilter::kUnknownDst)) m.set_bytes(l3 + 16, k.dst, 4);
    } else {
        m.set8(l3, 0x60, 0xf0);
        m.set8(l3 + 6, k.first_nxt);
        if (!(unknown & FlowFilter::kUnknownSrc)) m.set_bytes(l3 + 8, k.src, 16);
        if (!(unknown & FlowFilter::kUnknownDst)) m.set_bytes(l3 + 24, k.dst, 16);
    }
    if (k.flags & kFlowHasPorts) {
        m.set16(l4, k.sport);
        m.set16(l4 + 2, k.dport);
    }
    return true;
}

/* Raw IP is DLT_RAW (12) to pcap_compile() and LINKTYPE_RAW (101) in
 * files: the same framing. */
bool same_link_type(uint16_t key, uint16_t prog) {
    auto norm = [](uint16_t t) { return t == 101 ? uint16_t{12} : t; };
    return norm(key) == norm(prog);
}

struct State {
    uint32_t pc;
    Tnum a, x;
    Tnum mem[kMemWords];
};

using AddressSet = std::vector<std::array<uint8_t, 16>>;
std::optional<AddressSet> find_required_addresses(const std::vector<filters::ClassicInsn>& prog,
                                                  uint16_t linktype,
                                                  std::optional<AddressPairs>& pairs);

}  // namespace

FlowFilter::FlowFilter(std::vector<filters::ClassicInsn> prog, uint16_t linktype)
    : prog_(std::move(prog)), linktype_(linktype) {
    required_ = find_required_addresses(prog_, linktype_, pairs_);
}

FlowFilter::Verdict FlowFilter::eval(const FlowKey& k, uint8_t unknown) const {
    constexpr Verdict kBoth{true, true};
    if (prog_.empty()) return {true, false};
    if (k.kind == FlowKind::kOpaque || !same_link_type(k.linktype, linktype_)) return kBoth;
    const Verdict v = eval_oriented(k, unknown);
    if (k.kind != FlowKind::kIp || (v.may_accept && v.may_reject)) return v;
    // The key holds the endpoints in canonical order: a packet of the flow
    // goes one way or the other.
    FlowKey r = k;
    std::memcpy(r.src, k.dst, 16);
    std::memcpy(r.dst, k.src, 16);
    r.sport = k.dport;
    r.dport = k.sport;
    // The unknown endpoints swap with the known ones.
    const uint8_t ru = static_cast<uint8_t>((unknown & kUnknownSrc ? kUnknownDst : 0) |
                                            (unknown & kUnknownDst ? kUnknownSrc : 0));
    if (r == k && ru == unknown) return v;
    const Verdict w = eval_oriented(r, ru);
    return {v.may_accept || w.may_accept, v.may_reject || w.may_reject};
}

FlowFilter::Verdict FlowFilter::eval_oriented(const FlowKey& k, uint8_t unknown) const {
    constexpr Verdict kBoth{true, true};
    Model pk;
    if (!build_model(k, unknown, pk)) return kBoth;

    const uint32_t n = static_cast<uint32_t>(prog_.size());
    const filters::ClassicInsn* prog = prog_.data();
    // Paths still to run. A path is pushed once per fork, so fewer than
    // kMaxPaths are ever pending.
    State pending[kMaxPaths];
    uint32_t npending = 0;
    uint32_t paths = 1;
    uint32_t steps = 0;
    bool acc = false, rej = false;

    State s;
    s.pc = 0;
    s.a = known(0);  // bpf_filter() starts with A = X = 0
    s.x = known(0);
    for (Tnum& w : s.mem) w = kUnknown;

    for (;;) {
        bool done = false;  // this path returned
        while (!done) {
            if (s.pc >= n || ++steps > kMaxSteps) return kBoth;
            const filters::ClassicInsn in = prog[s.pc++];
            const uint16_t code = in.code;
            const uint16_t mode = code & 0xe0;
            const uint32_t size = (code & 0x18) == kW ? 4 : (code & 0x18) == kH ? 2 : 1;
            // Ends this path with 0 (reject) and continues it as well: the
            // load may lie past the end of some packets of the flow only.
            auto may_fail_here = [&] { rej = true; };
            // Continues this path at `stay` and queues the other way.
            auto fork = [&](uint32_t stay, uint32_t other, const State& other_state) {
                if (paths == kMaxPaths) return false;
                paths++;
                pending[npending] = other_state;
                pending[npending].pc = other;
                npending++;
                s.pc = stay;
                return true;
            };
            switch (code & 0x07) {
                case kLd:
                case kLdx: {
                    const bool to_x = (code & 0x07) == kLdx;
                    Tnum r;
                    if (mode == kImm) {
                        r = known(in.k);
                    } else if (mode == kMem) {
                        if (in.k >= kMemWords) return kBoth;
                        r = s.mem[in.k];
                    } else if (mode == kLen) {
                        r = kUnknown;
                    } else if (mode == kAbs && !to_x) {
                        if (!pk.surely_captured(in.k, size)) may_fail_here();
                        r = pk.load(in.k, size);
                    } else if (mode == kInd && !to_x) {
                        if (s.x.m == 0) {
                            const uint64_t at = uint64_t{s.x.v} + in.k;
                            if (!pk.surely_captured(at, size)) may_fail_here();
                            r = pk.load(at, size);
                        } else {
                            const uint64_t hi = uint64_t{s.x.v | s.x.m} + in.k;
                            if (!pk.surely_captured(hi, size)) may_fail_here();
                            r = kUnknown;
                        }
                    } else if (mode == kMsh && to_x && size == 1) {
                        if (!pk.surely_captured(in.k, 1)) may_fail_here();
                        const Tnum b = pk.load(in.k, 1);
                        r = {(b.v & 0xf) << 2, (b.m & 0xf) << 2};
                    } else {
                        return kBoth;  // not an opcode bpf_filter() runs
                    }
                    (to_x ? s.x : s.a) = r;
                    break;
                }
                case kSt:
                case kStx:
                    if (in.k >= kMemWords) return kBoth;
                    s.mem[in.k] = (code & 0x07) == kSt ? s.a : s.x;
                    break;
                case kAlu: {
                    const Tnum b = (code & kSrcX) ? s.x : known(in.k);
                    const uint16_t op = code & 0xf0;
                    const bool exact = s.a.m == 0 && b.m == 0;
                    switch (op) {
                        case kAdd: s.a = t_add(s.a, b); break;
                        case kSub: s.a = t_sub(s.a, b); break;
                        case kMul:
                            if (exact)
                                s.a = known(s.a.v * b.v);
                            else if ((s.a.m == 0 && s.a.v == 0) || (b.m == 0 && b.v == 0))
                                s.a = known(0);
                            else
                                s.a = kUnknown;
                            break;
                        case kDiv:
                        case kMod:
                            if (b.m == 0 && b.v == 0) {  // bpf_filter() returns 0
                                rej = true;
                                done = true;
                                break;
                            }
                            if (b.v == 0) may_fail_here();  // may be zero
                            if (exact)
                                s.a = known(op == kDiv ? s.a.v / b.v : s.a.v % b.v);
                            else
                                s.a = kUnknown;
                            break;
                        case kAnd: s.a = t_and(s.a, b); break;
                        case kOr: s.a = t_or(s.a, b); break;
                        case kXor: s.a = t_xor(s.a, b); break;
                        case kLsh:
                        case kRsh:
                            if (b.m != 0) {
                                s.a = kUnknown;
                            } else if (b.v >= 32) {
                                // Undefined in C; libpcap versions differ.
                                s.a = kUnknown;
                            } else if (op == kLsh) {
                                s.a = {s.a.v << b.v, s.a.m << b.v};
                            } else {
                                s.a = {s.a.v >> b.v, s.a.m >> b.v};
                            }
                            break;
                        case kNeg: s.a = t_sub(known(0), s.a); break;
                        default: return kBoth;
                    }
                    break;
                }
                case kJmp: {
                    const uint16_t op = code & 0xf0;
                    if (op == kJa) {
                        // 32-bit wrap-around, as bpf_filter(): protochain's
                        // loops jump back this way.
                        s.pc += in.k;
                        break;
                    }
                    const uint32_t t = s.pc + in.jt, f = s.pc + in.jf;
                    const Tnum a = s.a;
                    const Tnum b = (code & kSrcX) ? s.x : known(in.k);
                    const uint32_t amax = a.v | a.m, bmax = b.v | b.m;
                    int taken;  // 1 true, 0 false, -1 either
                    switch (op) {
                        case kJeq:
                            if ((a.v ^ b.v) & ~a.m & ~b.m)
                                taken = 0;
                            else if (a.m == 0 && b.m == 0)
                                taken = 1;
                            else
                                taken = -1;
                            break;
                        case kJgt: taken = a.v > bmax ? 1 : amax <= b.v ? 0 : -1; break;
                        case kJge: taken = a.v >= bmax ? 1 : amax < b.v ? 0 : -1; break;
                        case kJset:
                            taken = (a.v & b.v) != 0 ? 1 : (amax & bmax) == 0 ? 0 : -1;
                            break;
                        default: return kBoth;
                    }
                    if (taken >= 0) {
                        s.pc = taken ? t : f;
                        break;
                    }
                    if (t == f) {  // both ways lead to the same place
                        s.pc = t;
                        break;
                    }
                    if (!fork(t, f, s)) return kBoth;
                    // On the way taken, what the test proved holds.
                    if (op == kJeq) {
                        const Tnum eq{a.v | b.v, a.m & b.m};
                        s.a = eq;
                        if (code & kSrcX) s.x = eq;
                    } else if (op == kJset && !(code & kSrcX)) {
                        // The queued false way: none of the k bits is set.
                        State& other = pending[npending - 1];
                        other.a = {a.v & ~in.k, a.m & ~in.k};
                    }
                    break;
                }
                case kRet: {
                    if ((code & 0x18) == kSrcX) return kBoth;  // RET X: not run
                    const Tnum r = (code & 0x18) == kRvalA ? s.a : known(in.k);
                    if ((r.v | r.m) != 0) acc = true;
                    if (r.v == 0) rej = true;
                    done = true;
                    break;
                }
                case kMisc:
                    if ((code & 0xf8) == kTax)
                        s.x = s.a;
                    else if ((code & 0xf8) == kTxa)
                        s.a = s.x;
                    else
                        return kBoth;
                    break;
            }
        }
        if (acc && rej) return kBoth;
        if (npending == 0) break;
        s = pending[--npending];
    }
    return {acc, rej};
}

namespace {

/* required_addresses(): the program on a packet of which nothing is known.
 * Per path, the bits proved by taken JEQ branches (kProofBytes covers the
 * type fields and addresses of every framing the proof reads: Linux cooked
 * with two tags puts the IPv6 destination at 48..63). */
constexpr uint32_t kProofBytes = 64;

/* What a register holds when it is a packet load, possibly ANDed with
 * constants: bytes [off, off + size) masked with mask. */
struct Origin {
    uint32_t off;
    uint32_t mask;
    uint8_t size;  // 0: not a packet load
};
constexpr Origin kNoOrigin{0, 0, 0};

struct ProofState {
    uint32_t pc;
    Tnum a, x;
    Origin oa, ox;
    Tnum mem[kMemWords];
    Origin omem[kMemWords];
    uint8_t val[kProofBytes];    // proved bits (where known is set)
    uint8_t known[kProofBytes];  // which bits are proved

    Tnum load(uint64_t at, uint32_t size) const {
        Tnum r{0, 0};
        for (uint32_t i = 0; i < size; i++) {
            r.v <<= 8;
            r.m <<= 8;
            if (at + i < kProofBytes) {
                r.v |= val[at + i];
                r.m |= static_cast<uint8_t>(~known[at + i]);
            } else {
                r.m |= 0xff;
            }
        }
        return r;
    }
    /* Records that the bytes of o equal v under o's mask; false if that
     * contradicts what the path proved before (no packet takes it). */
    bool prove(const Origin& o, uint32_t v) {
        for (uint32_t i = 0; i < o.size; i++) {
            const uint32_t at = o.off + i;
            const uint32_t shift = 8 * (o.size - 1 - i);
            const uint8_t m = static_cast<uint8_t>(o.mask >> shift);
            const uint8_t b = static_cast<uint8_t>(v >> shift) & m;
            if (at >= kProofBytes) continue;  // nothing to keep (forgetting is sound)
            if ((val[at] ^ b) & known[at] & m) return false;
            val[at] = static_cast<uint8_t>((val[at] & ~m) | b);
            known[at] |= m;
        }
        return true;
    }
    bool proved(uint32_t at, uint32_t n) const {
        for (uint32_t i = 0; i < n; i++)
            if (at + i >= kProofBytes || known[at + i] != 0xff) return false;
        return true;
    }
    uint16_t val16(uint32_t at) const { return static_cast<uint16_t>(val[at] << 8 | val[at + 1]); }
};

enum class PathNeeds { kNothing, kAddress, kUnproven };

/* What an accepting path with these proved bits lets through: only flows
 * that are not kIp (kNothing), only IP packets with one of the addresses it
 * adds to out (kAddress), or anything (kUnproven). The rules mirror
 * make_flow_key() and the header walker: EtherType 0x0800 (0x86dd) after
 * at most two tags 0x8100/0x88a8/0x9100 is IPv4 (IPv6) at the byte after
 * it; a third tag or another EtherType is never kIp; raw IP goes by the
 * version nibble, anything but 4 or 6 there being kOpaque. */
PathNeeds path_needs(const ProofState& s, uint32_t type_at, AddressSet& out) {
    uint32_t l3;
    uint8_t version;
    if (type_at == 0) {
        if ((s.known[0] & 0xf0) != 0xf0) return PathNeeds::kUnproven;
        version = s.val[0] >> 4;
        if (version != 4 && version != 6) return PathNeeds::kNothing;
        l3 = 0;
    } else {
        uint32_t at = type_at;
        for (uint32_t tags = 0;; tags++) {
            if (!s.proved(at, 2)) return PathNeeds::kUnproven;
            const uint16_t t = s.val16(at);
            if (t == 0x0800 || t == 0x86dd) {
                version = t == 0x0800 ? 4 : 6;
                l3 = at + 2;
                break;
            }
            if (t != 0x8100 && t != 0x88a8 && t != 0x9100) return PathNeeds::kNothing;
            if (tags == 2) return PathNeeds::kNothing;  // a third tag: kOpaque
            at += 4;
        }
    }
    const uint32_t len = version == 4 ? 4 : 16;
    const uint32_t src = l3 + (version == 4 ? 12 : 8);
    bool any = false;
    for (uint32_t at : {src, src + len}) {
        if (!s.proved(at, len)) continue;
        std::array<uint8_t, 16> a{};
        std::memcpy(a.data(), s.val + at, len);
        out.push_back(a);
        any = true;
    }
    return any ? PathNeeds::kAddress : PathNeeds::kUnproven;
}

std::optional<AddressSet> find_required_addresses(const std::vector<filters::ClassicInsn>& prog,
                                                  uint16_t linktype,
                                                  std::optional<AddressPairs>& pairs) {
    pairs.reset();
    uint32_t type_at;
    switch (linktype) {
        case 1: type_at = 12; break;    // DLT_EN10MB
        case 113: type_at = 14; break;  // DLT_LINUX_SLL
        case 12:
        case 14:
        case 101: type_at = 0; break;  // raw IP
        default: return std::nullopt;
    }
    if (prog.empty()) return std::nullopt;  // accepts every packet
    const uint32_t n = static_cast<uint32_t>(prog.size());
    // Once per FlowFilter: the pending paths (130 KB) on the heap.
    std::vector<ProofState> pending;
    pending.reserve(FlowFilter::kMaxPaths);
    uint32_t paths = 1, steps = 0;
    AddressSet out;
    // Whether every accepting IP path proved both addresses, and the pairs.
    bool all_pairs = true;
    AddressPairs pair_out;

    ProofState s;
    std::memset(&s, 0, sizeof(s));
    s.a = known(0);
    s.x = known(0);
    for (Tnum& w : s.mem) w = kUnknown;

    for (;;) {
        bool done = false;
        while (!done) {
            if (s.pc >= n || ++steps > kMaxSteps) return std::nullopt;
            const filters::ClassicInsn in = prog[s.pc++];
            const uint16_t code = in.code;
            const uint16_t mode = code & 0xe0;
            const uint32_t size = (code & 0x18) == kW ? 4 : (code & 0x18) == kH ? 2 : 1;
            const uint32_t size_mask = size == 4 ? ~0u : (1u << (8 * size)) - 1;
            switch (code & 0x07) {
                case kLd:
                case kLdx: {
                    const bool to_x = (code & 0x07) == kLdx;
                    Tnum r = kUnknown;
                    Origin o = kNoOrigin;
                    if (mode == kImm) {
                        r = known(in.k);
                    } else if (mode == kMem) {
                        if (in.k >= kMemWords) return std::nullopt;
                        r = s.mem[in.k];
                        o = s.omem[in.k];
                    } else if (mode == kLen) {
                        r = kUnknown;
                    } else if (mode == kAbs && !to_x) {
                        r = s.load(in.k, size);
                        o = {in.k, size_mask, static_cast<uint8_t>(size)};
                    } else if (mode == kInd && !to_x) {
                        if (s.x.m == 0) {
                            const uint64_t at = uint64_t{s.x.v} + in.k;
                            r = s.load(at, size);
                            if (at < kProofBytes)
                                o = {static_cast<uint32_t>(at), size_mask,
                                     static_cast<uint8_t>(size)};
                        }
                    } else if (mode == kMsh && to_x && size == 1) {
                        const Tnum b = s.load(in.k, 1);
                        r = {(b.v & 0xf) << 2, (b.m & 0xf) << 2};
                    } else {
                        return std::nullopt;
                    }
                    // A load past the end of the packet ends the path with
                    // 0: a rejection, which needs no proof.
                    if (to_x) {
                        s.x = r;
                        s.ox = o;
                    } else {
                        s.a = r;
                        s.oa = o;
                    }
                    break;
                }
                case kSt:
                case kStx:
                    if (in.k >= kMemWords) return std::nullopt;
                    if ((code & 0x07) == kSt) {
                        s.mem[in.k] = s.a;
                        s.omem[in.k] = s.oa;
                    } else {
                        s.mem[in.k] = s.x;
                        s.omem[in.k] = s.ox;
                    }
                    break;
                case kAlu: {
                    const Tnum b = (code & kSrcX) ? s.x : known(in.k);
                    const uint16_t op = code & 0xf0;
                    const bool exact = s.a.m == 0 && b.m == 0;
                    Origin o = kNoOrigin;
                    switch (op) {
                        case kAdd: s.a = t_add(s.a, b); break;
                        case kSub: s.a = t_sub(s.a, b); break;
                        case kMul: s.a = exact ? known(s.a.v * b.v) : kUnknown; break;
                        case kDiv:
                        case kMod:
                            if (b.m == 0 && b.v == 0) {  // bpf_filter() returns 0
                                done = true;
                                break;
                            }
                            if (exact)
                                s.a = known(op == kDiv ? s.a.v / b.v : s.a.v % b.v);
                            else
                                s.a = kUnknown;
                            break;
                        case kAnd:
                            if (s.oa.size != 0 && b.m == 0)
                                o = {s.oa.off, s.oa.mask & b.v, s.oa.size};
                            s.a = t_and(s.a, b);
                            break;
                        case kOr: s.a = t_or(s.a, b); break;
                        case kXor: s.a = t_xor(s.a, b); break;
                        case kLsh:
                        case kRsh:
                            if (b.m != 0 || b.v >= 32)
                                s.a = kUnknown;
                            else if (op == kLsh)
                                s.a = {s.a.v << b.v, s.a.m << b.v};
                            else
                                s.a = {s.a.v >> b.v, s.a.m >> b.v};
                            break;
                        case kNeg: s.a = t_sub(known(0), s.a); break;
                        default: return std::nullopt;
                    }
                    s.oa = o;
                    break;
                }
                case kJmp: {
                    const uint16_t op = code & 0xf0;
                    if (op == kJa) {
                        s.pc += in.k;
                        break;
                    }
                    const uint32_t t = s.pc + in.jt, f = s.pc + in.jf;
                    const Tnum a = s.a;
                    const Tnum b = (code & kSrcX) ? s.x : known(in.k);
                    const uint32_t amax = a.v | a.m, bmax = b.v | b.m;
                    int taken;
                    switch (op) {
                        case kJeq:
                            if ((a.v ^ b.v) & ~a.m & ~b.m)
                                taken = 0;
                            else if (a.m == 0 && b.m == 0)
                                taken = 1;
                            else
                                taken = -1;
                            break;
                        case kJgt: taken = a.v > bmax ? 1 : amax <= b.v ? 0 : -1; break;
                        case kJge: taken = a.v >= bmax ? 1 : amax < b.v ? 0 : -1; break;
                        case kJset:
                            taken = (a.v & b.v) != 0 ? 1 : (amax & bmax) == 0 ? 0 : -1;
                            break;
                        default: return std::nullopt;
                    }
                    if (taken >= 0 || t == f) {
                        s.pc = taken == 0 ? f : t;
                        break;
                    }
                    if (paths == FlowFilter::kMaxPaths) return std::nullopt;
                    paths++;
                    pending.push_back(s);
                    pending.back().pc = f;
                    s.pc = t;
                    if (op == kJeq) {
                        const Tnum eq{a.v | b.v, a.m & b.m};
                        s.a = eq;
                        if (code & kSrcX) s.x = eq;
                        // A register compared with a constant: the bytes
                        // it was loaded from are proved on this way.
                        if (eq.m == 0) {
                            bool ok = true;
                            if (s.oa.size != 0) ok = s.prove(s.oa, eq.v);
                            if (ok && (code & kSrcX) && s.ox.size != 0) ok = s.prove(s.ox, eq.v);
                            if (!ok) done = true;  // contradicts the path: no packet
                        }
                    } else if (op == kJset && !(code & kSrcX)) {
                        ProofState& other = pending.back();
                        other.a = {a.v & ~in.k, a.m & ~in.k};
                    }
                    break;
                }
                case kRet: {
                    if ((code & 0x18) == kSrcX) return std::nullopt;
                    const Tnum r = (code & 0x18) == kRvalA ? s.a : known(in.k);
                    if ((r.v | r.m) != 0) {
                        const size_t had = out.size();
                        const PathNeeds needs = path_needs(s, type_at, out);
                        if (needs == PathNeeds::kUnproven) return std::nullopt;
                        // Source and destination both proved: a pair, the
                        // lower address first as in a flow key.
                        if (needs == PathNeeds::kAddress && out.size() - had == 2)
                            pair_out.push_back(std::minmax(out[had], out[had + 1]));
                        else if (needs == PathNeeds::kAddress)
                            all_pairs = false;
                    }
                    done = true;
                    break;
                }
                case kMisc:
                    if ((code & 0xf8) == kTax) {
                        s.x = s.a;
                        s.ox = s.oa;
                    } else if ((code & 0xf8) == kTxa) {
                        s.a = s.x;
                        s.oa = s.ox;
                    } else {
                        return std::nullopt;
                    }
                    break;
            }
        }
        if (pending.empty()) break;
        s = pending.back();
        pending.pop_back();
    }
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    if (all_pairs) {
        std::sort(pair_out.begin(), pair_out.end());
        pair_out.erase(std::unique(pair_out.begin(), pair_out.end()), pair_out.end());
        pairs = std::move(pair_out);
    }
    return out;
}

}  // namespace

}  // namespace linecap::index
