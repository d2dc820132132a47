/* --bpf-object: loading ELF objects through libbpf, refusing what rte_bpf
 * cannot run, running the shipped example in EbpfVm (JIT and interpreter),
 * what rte_bpf's validator does with reads through Packet::data, and our
 * own verifier (bpf_verifier.hh) against hostile programs: raw instruction
 * arrays and filters/examples/hostile.bpf.c. */
#include "filters/bpf_object.hh"

#include <gtest/gtest.h>
#include <pcap/pcap.h>
#include <rte_bpf.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "filters/bpf_verifier.hh"
#include "filters/cbpf_to_ebpf.hh"
#include "filters/disasm.hh"
#include "filters/ebpf_vm.hh"
#include "filters/rule_set.hh"

namespace linecap::filters {
namespace {

#ifdef LINECAP_BPF_EXAMPLES
const std::string kExamples = LINECAP_BPF_EXAMPLES;
#define NEED_EXAMPLES() (void)0
#else
const std::string kExamples;
#define NEED_EXAMPLES() GTEST_SKIP() << "clang not found: example objects not built"
#endif

std::string example(const std::string& name) { return kExamples + "/" + name + ".bpf.o"; }

using Bytes = std::vector<uint8_t>;

/* ---- Frames ------------------------------------------------------------ */

void put16(Bytes& b, uint16_t v) {
    b.push_back(static_cast<uint8_t>(v >> 8));
    b.push_back(static_cast<uint8_t>(v));
}

struct FrameOpts {
    bool vlan = false;
    uint8_t proto = 6;
    uint8_t ihl = 5;
    uint8_t tcp_words = 5;
    uint16_t frag = 0;
};

Bytes frame(const std::string& payload, FrameOpts o = {}) {
    Bytes b = {0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2};
    if (o.vlan) {
        put16(b, 0x8100);
        put16(b, 100);
    }
    put16(b, 0x0800);
    size_t l4len = (o.proto == 6 ? o.tcp_words * 4u : 8u) + payload.size();
    b.push_back(static_cast<uint8_t>(0x40 | o.ihl));
    b.push_back(0);
    put16(b, static_cast<uint16_t>(o.ihl * 4 + l4len));
    put16(b, 1);
    put16(b, o.frag);
    b.push_back(64);
    b.push_back(o.proto);
    put16(b, 0);
    for (uint8_t a : {198, 18, 0, 1, 198, 18, 0, 2}) b.push_back(a);
    for (int i = 5; i < o.ihl; i++)
        for (int k = 0; k < 4; k++) b.push_back(1);
    if (o.proto == 6) {
        put16(b, 40000);
        put16(b, 80);
        for (int i = 0; i < 8; i++) b.push_back(0);
        b.push_back(static_cast<uint8_t>(o.tcp_words << 4));
        b.push_back(payload.empty() ? 0x02 : 0x18);
        put16(b, 65535);
        put16(b, 0);
        put16(b, 0);
        for (int i = 5; i < o.tcp_words; i++)
            for (int k = 0; k < 4; k++) b.push_back(1);
    } else {
        put16(b, 5353);
        put16(b, 80);
        put16(b, static_cast<uint16_t>(8 + payload.size()));
        put16(b, 0);
    }
    b.insert(b.end(), payload.begin(), payload.end());
    return b;
}

/* ---- Raw instructions ---------------------------------------------------- */

ebpf_insn ins(uint8_t code, uint8_t dst = 0, uint8_t src = 0, int16_t off = 0, int32_t imm = 0) {
    ebpf_insn i{};
    i.code = code;
    i.dst_reg = dst & 0xf;
    i.src_reg = src & 0xf;
    i.off = off;
    i.imm = imm;
    return i;
}
const ebpf_insn kExit = ins(BPF_JMP | EBPF_EXIT);
ebpf_insn mov_imm(uint8_t dst, int32_t imm) {
    return ins(EBPF_ALU64 | EBPF_MOV | BPF_K, dst, 0, 0, imm);
}
ebpf_insn ldx(uint8_t size, uint8_t dst, uint8_t src, int16_t off) {
    return ins(BPF_LDX | BPF_MEM | size, dst, src, off);
}

/* ---- Loading the shipped example ----------------------------------------- */

TEST(BpfObject, HttpGetExampleLoads) {
    NEED_EXAMPLES();
    auto p = load_bpf_object(example("http_get"));
    ASSERT_TRUE(p.ok()) << p.error();
    EXPECT_EQ(p->name, "http_get");
    EXPECT_EQ(p->section, "linecap");
    EXPECT_GT(p->insns.size(), 20u);
    EXPECT_TRUE(check_bpf_program(p->insns).ok());

    // FILE:PROGRAM names it explicitly.
    auto named = load_bpf_object(example("http_get") + ":http_get");
    ASSERT_TRUE(named.ok()) << named.error();
    EXPECT_EQ(named->insns.size(), p->insns.size());
    EXPECT_EQ(std::memcmp(named->insns.data(), p->insns.data(), p->insns.size() * 8), 0);
}

struct Case {
    const char* what;
    Bytes frame;
    uint32_t caplen;  // 0: whole frame
    bool capture;
};

std::vector<Case> http_cases() {
    std::vector<Case> c;
    c.push_back({"GET", frame("GET / HTTP/1.1\r\n"), 0, true});
    c.push_back({"POST", frame("POST / HTTP/1.1\r\n"), 0, false});
    c.push_back({"lower-case get", frame("get / HTTP/1.1\r\n"), 0, false});
    c.push_back({"GET without space", frame("GETX"), 0, false});
    c.push_back({"GET over UDP", frame("GET / HTTP/1.1\r\n", {.proto = 17}), 0, false});
    c.push_back({"GET behind a VLAN tag", frame("GET /", {.vlan = true}), 0, true});
    c.push_back({"GET after TCP options", frame("GET /", {.tcp_words = 8}), 0, true});
    c.push_back({"GET after IP options", frame("GET /", {.ihl = 7}), 0, true});
    c.push_back({"first fragment", frame("GET /", {.frag = 0x2000}), 0, true});
    c.push_back({"later fragment", frame("GET /", {.frag = 0x0010}), 0, false});
    c.push_back({"SYN without payload", frame(""), 0, false});
    Bytes g = frame("GET /");
    c.push_back({"GET cut by the capture length", g, static_cast<uint32_t>(g.size() - 3), false});
    c.push_back({"only the Ethernet header", g, 14, false});
    c.push_back({"empty capture", g, 0xffffffff, false});
    Bytes bad = frame("GET /");
    bad[12] = 0x86;
    bad[13] = 0xdd;
    c.push_back({"IPv6 ethertype", bad, 0, false});
    Bytes ihl = frame("GET /");
    ihl[14] = 0x44;
    c.push_back({"IHL 4", ihl, 0, false});
    Bytes doff = frame("GET /");
    doff[14 + 20 + 12] = 0x40;
    c.push_back({"TCP data offset 4", doff, 0, false});
    return c;
}

uint32_t caplen_of(const Case& c) {
    if (c.caplen == 0xffffffff) return 0;
    return c.caplen == 0 ? static_cast<uint32_t>(c.frame.size()) : c.caplen;
}

TEST(BpfObject, HttpGetVerdictsInterpreterAndJit) {
    NEED_EXAMPLES();
    auto p = load_bpf_object(example("http_get"));
    ASSERT_TRUE(p.ok()) << p.error();
    auto jit = EbpfVm::load(p->insns, true);
    ASSERT_TRUE(jit.ok()) << jit.error();
    auto interp = EbpfVm::load(p->insns, false);
    ASSERT_TRUE(interp.ok()) << interp.error();
    EXPECT_FALSE((*interp)->jitted());

    for (const Case& c : http_cases()) {
        Packet pkt{c.frame.data(), caplen_of(c), static_cast<uint32_t>(c.frame.size())};
        EXPECT_EQ((*jit)->run(pkt) != 0, c.capture) << c.what << " (" << (*jit)->engine() << ")";
        EXPECT_EQ((*jit)->run_interpreted(pkt) != 0, c.capture) << c.what;
        EXPECT_EQ((*interp)->run(pkt) != 0, c.capture) << c.what;
    }
}

/* The example agrees with libpcap's bpf_filter() on the seeds' expression
 * for every untagged frame (the expression does not look behind VLAN tags). */
TEST(BpfObject, HttpGetAgreesWithLibpcap) {
    NEED_EXAMPLES();
    auto p = load_bpf_object(example("http_get"));
    ASSERT_TRUE(p.ok()) << p.error();
    auto vm = EbpfVm::load(p->insns, true);
    ASSERT_TRUE(vm.ok()) << vm.error();

    pcap_t* dead = pcap_open_dead(DLT_EN10MB, 65535);
    bpf_program prog;
    ASSERT_EQ(pcap_compile(dead, &prog, "ip and tcp[(tcp[12]>>2):4] = 0x47455420", 1,
                           PCAP_NETMASK_UNKNOWN),
              0)
        << pcap_geterr(dead);
    int compared = 0;
    for (const Case& c : http_cases()) {
        if (c.frame[12] == 0x81) continue;
        uint32_t cap = caplen_of(c);
        bool want =
            bpf_filter(prog.bf_insns, c.frame.data(), static_cast<u_int>(c.frame.size()), cap) != 0;
        Packet pkt{c.frame.data(), cap, static_cast<uint32_t>(c.frame.size())};
        EXPECT_EQ((*vm)->run(pkt) != 0, want) << c.what;
        compared++;
    }
    EXPECT_GT(compared, 10);
    pcap_freecode(&prog);
    pcap_close(dead);
}

/* ---- Files that are not usable ------------------------------------------- */

std::string temp_file(const std::string& name, const std::string& content) {
    auto path = std::filesystem::temp_directory_path() / ("linecap_bpf_test_" + name);
    std::ofstream(path, std::ios::binary) << content;
    return path.string();
}

TEST(BpfObjectErrors, MissingFile) {
    auto p = load_bpf_object("/nonexistent/dir/prog.bpf.o");
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.error(), "bpf object '/nonexistent/dir/prog.bpf.o': no such file");
    // With a program name the file part is reported.
    p = load_bpf_object("/nonexistent/prog.bpf.o:main");
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.error(), "bpf object '/nonexistent/prog.bpf.o': no such file");
    EXPECT_FALSE(load_bpf_object("").ok());
}

TEST(BpfObjectErrors, DirectoryAndNonElf) {
    auto d = load_bpf_object(std::filesystem::temp_directory_path().string());
    ASSERT_FALSE(d.ok());
    EXPECT_NE(d.error().find("is a directory"), std::string::npos) << d.error();

    std::string text = temp_file("text.o", "int main() { return 0; }\n");
    auto t = load_bpf_object(text);
    ASSERT_FALSE(t.ok());
    EXPECT_NE(t.error().find("not an ELF object"), std::string::npos) << t.error();

    std::string empty = temp_file("empty.o", "");
    auto e = load_bpf_object(empty);
    ASSERT_FALSE(e.ok());
    EXPECT_NE(e.error().find("not an ELF object"), std::string::npos) << e.error();
    std::filesystem::remove(text);
    std::filesystem::remove(empty);
}

/* An ELF file that is not BPF (this test binary): libbpf refuses it, its
 * message ends up in the error, and nothing reaches stderr. */
TEST(BpfObjectErrors, ElfButNotBpfAndLibbpfStaysQuiet) {
    // A small ELF executable (this test binary is larger than kMaxObjectBytes).
    std::string self = "/bin/true";
    testing::internal::CaptureStderr();
    auto p = load_bpf_object(self);
    std::string err = testing::internal::GetCapturedStderr();
    ASSERT_FALSE(p.ok());
    EXPECT_NE(p.error().find("libbpf cannot open it"), std::string::npos) << p.error();
    EXPECT_NE(p.error().find("(libbpf: "), std::string::npos) << p.error();
    EXPECT_EQ(err, "");

    // A truncated ELF header.
    std::string cut = temp_file("cut.o", std::string("\x7f"
                                                     "ELF\x02\x01\x01",
                                                     7));
    testing::internal::CaptureStderr();
    auto c = load_bpf_object(cut);
    err = testing::internal::GetCapturedStderr();
    ASSERT_FALSE(c.ok());
    EXPECT_NE(c.error().find("libbpf cannot open it"), std::string::npos) << c.error();
    EXPECT_EQ(err, "");
    std::filesystem::remove(cut);
}

TEST(BpfObjectErrors, ProgramNames) {
    NEED_EXAMPLES();
    auto unknown = load_bpf_object(example("http_get") + ":http_post");
    ASSERT_FALSE(unknown.ok());
    EXPECT_NE(unknown.error().find("has no program 'http_post' (it has: http_get)"),
              std::string::npos)
        << unknown.error();

    auto several = load_bpf_object(example("bad_programs"));
    ASSERT_FALSE(several.ok());
    EXPECT_NE(
        several.error().find("holds 5 programs (uses_helper, uses_map, uses_global, uses_subprog, "
                             "accept_all); name one as FILE:PROGRAM"),
        std::string::npos)
        << several.error();

    auto ok = load_bpf_object(example("bad_programs") + ":accept_all");
    ASSERT_TRUE(ok.ok()) << ok.error();
    auto vm = EbpfVm::load(ok->insns, true);
    ASSERT_TRUE(vm.ok()) << vm.error();
    uint8_t byte = 0;
    EXPECT_NE((*vm)->run(Packet{&byte, 1, 1}), 0u);
    EXPECT_EQ((*vm)->run(Packet{&byte, 0, 0}), 0u);
}

/* A file name with a colon is taken whole when that file exists. */
TEST(BpfObject, ColonInFileName) {
    NEED_EXAMPLES();
    auto path = std::filesystem::temp_directory_path() / "linecap_bpf_test_a:b.bpf.o";
    std::filesystem::copy_file(example("http_get"), path,
                               std::filesystem::copy_options::overwrite_existing);
    auto whole = load_bpf_object(path.string());
    EXPECT_TRUE(whole.ok()) << whole.error();
    auto named = load_bpf_object(path.string() + ":http_get");
    EXPECT_TRUE(named.ok()) << named.error();
    if (named.ok()) {
        EXPECT_EQ(named->file, path.string());
    }
    std::filesystem::remove(path);
}

TEST(BpfObjectErrors, RefusesWhatTheVmCannotRun) {
    NEED_EXAMPLES();
    struct Bad {
        const char* program;
        const char* message;
    } bad[] = {
        {"uses_helper", "insn 1 (call #5): calls kernel helper 5 (bpf_ktime_get_ns)"},
        {"uses_map", "insn 4 (lddw r1, #0): refers to 'counts'"},
        {"uses_global", "insn 1 (lddw r2, #0): refers to 'seen'"},
        {"uses_subprog", "calls another BPF function"},
    };
    for (const Bad& b : bad) {
        auto p = load_bpf_object(example("bad_programs") + ":" + b.program);
        ASSERT_FALSE(p.ok()) << b.program;
        EXPECT_NE(p.error().find(b.message), std::string::npos) << p.error();
        EXPECT_NE(p.error().find(std::string("program '") + b.program + "'"), std::string::npos)
            << p.error();
    }
}

/* ---- Instruction checks on raw programs ---------------------------------- */

std::string check_error(std::vector<ebpf_insn> prog, std::vector<std::string> relocs = {}) {
    Status s = check_bpf_program(prog, relocs);
    EXPECT_FALSE(s.ok());
    return s.error();
}

TEST(CheckBpfProgram, RawInstructions) {
    EXPECT_EQ(check_error({}), "the program has no instructions");

    ebpf_insn lddw = ins(BPF_LD | BPF_IMM | EBPF_DW, 1, 0, 0, 7);
    EXPECT_TRUE(check_bpf_program(std::vector<ebpf_insn>{lddw, ins(0), mov_imm(0, 1), kExit}).ok());

    ebpf_insn map = ins(BPF_LD | BPF_IMM | EBPF_DW, 1, 1, 0, 3);  // BPF_PSEUDO_MAP_FD
    EXPECT_EQ(check_error({mov_imm(0, 0), map, ins(0), kExit}),
              "insn 1 (lddw r1, #0x3): loads a map or kernel object (BPF_PSEUDO_MAP_FD); "
              "maps do not exist outside the kernel");
    ebpf_insn value = ins(BPF_LD | BPF_IMM | EBPF_DW, 1, 2, 0, 3);
    EXPECT_NE(check_error({value, ins(0), kExit}).find("BPF_PSEUDO_MAP_VALUE"), std::string::npos);
    EXPECT_NE(check_error({lddw}).find("cut short"), std::string::npos);
    EXPECT_NE(check_error({lddw, ins(0), kExit}, {"data_map", "", ""}).find("refers to 'data_map'"),
              std::string::npos);

    EXPECT_EQ(check_error({ins(BPF_JMP | EBPF_CALL, 0, 0, 0, 6), kExit}),
              "insn 0 (call #6): calls kernel helper 6 (bpf_trace_printk); the packet VM "
              "has no helpers");
    EXPECT_NE(check_error({ins(BPF_JMP | EBPF_CALL, 0, 1, 0, 2), kExit, mov_imm(0, 1), kExit})
                  .find("calls another BPF function"),
              std::string::npos);
    EXPECT_NE(check_error({ins(BPF_JMP | EBPF_CALL, 0, 2, 0, 77), kExit}).find("kernel function"),
              std::string::npos);

    EXPECT_NE(check_error({ins(BPF_LD | BPF_ABS | BPF_W, 0, 0, 0, 12), kExit}).find("BPF_LD_ABS"),
              std::string::npos);
    EXPECT_NE(check_error({ins(BPF_LD | BPF_IND | BPF_B, 0, 2, 0, 0), kExit}).find("BPF_LD_ABS"),
              std::string::npos);
    EXPECT_NE(check_error({ins(0x06 | BPF_JEQ | BPF_K, 1, 0, 0, 0), kExit}).find("BPF_JMP32"),
              std::string::npos);

    // Atomics: a plain add on the stack runs in rte_bpf; fetch/xchg/cmpxchg/and/or do not.
    std::vector<ebpf_insn> xadd = {mov_imm(0, 0), ins(BPF_STX | BPF_MEM | EBPF_DW, 10, 0, -8),
                                   mov_imm(1, 1), ins(BPF_STX | EBPF_XADD | EBPF_DW, 10, 1, -8, 0),
                                   mov_imm(0, 1), kExit};
    EXPECT_TRUE(check_bpf_program(xadd).ok());
    xadd[3].imm = 0x01;  // BPF_ADD | BPF_FETCH
    EXPECT_EQ(
        check_error(xadd),
        "insn 3 (xadddw [r10-8], r1): atomic operation 1 is not supported (only a plain atomic "
        "add is)");
    xadd[3].imm = 0xf1;  // BPF_CMPXCHG
    EXPECT_NE(check_error(xadd).find("atomic operation 241"), std::string::npos);

    // cpu v4 forms.
    EXPECT_NE(check_error({ins(EBPF_ALU64 | BPF_DIV | BPF_K, 0, 0, 1, 3), kExit}).find("-mcpu=v2"),
              std::string::npos);
    EXPECT_NE(check_error({ins(BPF_LDX | 0x80 | BPF_B, 0, 1, 0), kExit}).find("sign-extending"),
              std::string::npos);
    // A relocation on an ordinary instruction.
    EXPECT_NE(check_error({mov_imm(0, 1), kExit}, {"", "weird"}).find("relocation to 'weird'"),
              std::string::npos);
}

/* ---- What rte_bpf's validator does with packet reads --------------------- */

/* r2 = ctx->data; r0 = *(u8*)(r2 + off); exit */
std::vector<ebpf_insn> read_byte_at(int16_t off) {
    return {ldx(EBPF_DW, 2, 1, 0), ldx(BPF_B, 0, 2, off), kExit};
}

/* Declared as a plain pointer to the 16-byte Packet, the context's data
 * field is a scalar to rte_bpf: every read through it is refused at load. */
TEST(Validator, PlainPointerContextRefusesEveryPacketRead) {
    auto prog = read_byte_at(0);
    rte_bpf_prm prm{};
    prm.ins = prog.data();
    prm.nb_ins = static_cast<uint32_t>(prog.size());
    prm.prog_arg.type = RTE_BPF_ARG_PTR;
    prm.prog_arg.size = sizeof(Packet);
    rte_bpf* bpf = rte_bpf_load(&prm);
    EXPECT_EQ(bpf, nullptr);
    if (bpf != nullptr) rte_bpf_destroy(bpf);

    // Reading the Packet fields themselves is fine...
    std::vector<ebpf_insn> fields = {ldx(BPF_W, 0, 1, 8), kExit};
    prm.ins = fields.data();
    prm.nb_ins = 2;
    bpf = rte_bpf_load(&prm);
    EXPECT_NE(bpf, nullptr);
    if (bpf != nullptr) rte_bpf_destroy(bpf);
    // ...but not past its 16 bytes.
    std::vector<ebpf_insn> past = {ldx(BPF_W, 0, 1, 16), kExit};
    prm.ins = past.data();
    bpf = rte_bpf_load(&prm);
    EXPECT_EQ(bpf, nullptr);
    if (bpf != nullptr) rte_bpf_destroy(bpf);
}

/* EbpfVm's mbuf-typed context makes data a pointer the validator bounds by a
 * fixed span, not by caplen: a read past caplen inside the span loads and
 * runs, reading whatever follows the frame. Programs must check caplen. */
TEST(Validator, ReadsPastCaplenAreNotCaught) {
    for (bool jit : {false, true}) {
        auto vm = EbpfVm::load(read_byte_at(1000), jit);
        ASSERT_TRUE(vm.ok()) << vm.error();
        std::vector<uint8_t> buf(4096, 0);
        buf[1000] = 0xab;  // not part of the 64-byte frame
        Packet pkt{buf.data(), 64, 64};
        EXPECT_EQ((*vm)->run(pkt), 0xabu) << (jit ? "jit" : "interpreter");
    }
}

TEST(Validator, ReadsTheValidatorCannotBoundAreRefused) {
    // A constant offset: inside the span the VM declares, and just past it.
    auto at_offset = [](int32_t off) {
        return std::vector<ebpf_insn>{ldx(EBPF_DW, 2, 1, 0), mov_imm(3, off),
                                      ins(EBPF_ALU64 | BPF_ADD | BPF_X, 2, 3), ldx(BPF_B, 0, 2, 0),
                                      kExit};
    };
    const auto span = static_cast<int32_t>(kVerifierPacketSpan);
    auto inside = EbpfVm::load(at_offset(span - 1), false);
    EXPECT_TRUE(inside.ok()) << inside.error();
    auto outside = EbpfVm::load(at_offset(span), false);
    ASSERT_FALSE(outside.ok());
    EXPECT_NE(outside.error().find("memory boundary violation"), std::string::npos)
        << outside.error();
    // An offset compared only with caplen: r3 = caplen - 1 style, unbounded.
    std::vector<ebpf_insn> by_caplen = {
        ldx(EBPF_DW, 2, 1, 0),
        ldx(BPF_W, 3, 1, 8),
        ldx(BPF_W, 4, 1, 12),                     // wirelen as an index
        ins(BPF_JMP | BPF_JGE | BPF_X, 4, 3, 3),  // if wirelen >= caplen: drop
        ins(EBPF_ALU64 | BPF_ADD | BPF_X, 2, 4),
        ldx(BPF_B, 0, 2, 0),
        kExit,
        mov_imm(0, 0),
        kExit,
    };
    auto v = EbpfVm::load(by_caplen, false);
    ASSERT_FALSE(v.ok());
    EXPECT_NE(v.error().find("memory boundary violation"), std::string::npos) << v.error();
    // The same read bounded by constants (signed and unsigned) is accepted.
    std::vector<ebpf_insn> by_const = {
        ldx(EBPF_DW, 2, 1, 0),
        ldx(BPF_W, 4, 1, 12),
        ins(BPF_JMP | BPF_JGT | BPF_K, 4, 0, 4, 1000),
        ins(BPF_JMP | EBPF_JSGT | BPF_K, 4, 0, 3, 1000),
        ins(EBPF_ALU64 | BPF_ADD | BPF_X, 2, 4),
        ldx(BPF_B, 0, 2, 0),
        kExit,
        mov_imm(0, 0),
        kExit,
    };
    auto c = EbpfVm::load(by_const, false);
    EXPECT_TRUE(c.ok()) << c.error();
    // Outside the 16-byte Packet.
    EXPECT_FALSE(EbpfVm::load(std::vector<ebpf_insn>{ldx(BPF_W, 0, 1, 16), kExit}, false).ok());
}

/* DPDK 22.11's validator keeps the pointer type for "pointer += offset" but
 * not for "offset += pointer"; normalize_pointer_adds() rewrites the second
 * into the first, and load_bpf_object() applies it. */
std::vector<ebpf_insn> offset_plus_pointer(bool pointer_first) {
    std::vector<ebpf_insn> p = {ldx(EBPF_DW, 2, 1, 0), mov_imm(3, 14)};
    if (pointer_first) {
        p.push_back(ins(EBPF_ALU64 | BPF_ADD | BPF_X, 2, 3));
        p.push_back(ldx(BPF_B, 0, 2, 0));
    } else {
        p.push_back(ins(EBPF_ALU64 | BPF_ADD | BPF_X, 3, 2));
        p.push_back(ldx(BPF_B, 0, 3, 0));
    }
    p.push_back(kExit);
    return p;
}

TEST(Validator, OffsetPlusPointerLosesThePointerType) {
    auto good = EbpfVm::load(offset_plus_pointer(true), false);
    EXPECT_TRUE(good.ok()) << good.error();
    auto bad = EbpfVm::load(offset_plus_pointer(false), false);
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.error().find("destination is not a pointer"), std::string::npos) << bad.error();
}

Bytes numbered(size_t n) {
    Bytes b(n);
    for (size_t i = 0; i < n; i++) b[i] = static_cast<uint8_t>(i + 100);
    return b;
}

TEST(NormalizePointerAdds, RewritesOffsetPlusPointer) {
    auto prog = offset_plus_pointer(false);
    EXPECT_EQ(normalize_pointer_adds(prog), 1u);
    EXPECT_EQ(prog.size(), 5u + 4u);
    Bytes f = numbered(64);
    for (bool jit : {false, true}) {
        auto vm = EbpfVm::load(prog, jit);
        ASSERT_TRUE(vm.ok()) << vm.error();
        EXPECT_EQ((*vm)->run(Packet{f.data(), 64, 64}), 114u);
    }
    // Already in the good order: nothing to do.
    auto good = offset_plus_pointer(true);
    auto copy = good;
    EXPECT_EQ(normalize_pointer_adds(good), 0u);
    EXPECT_EQ(std::memcmp(good.data(), copy.data(), copy.size() * sizeof(ebpf_insn)), 0);
}

TEST(NormalizePointerAdds, BranchesAroundTheRewriteKeepTheirTargets) {
    std::vector<ebpf_insn> prog = {
        ldx(EBPF_DW, 2, 1, 0),                         // 0: r2 = data
        ldx(BPF_W, 4, 1, 8),                           // 1: r4 = caplen
        mov_imm(0, 7),                                 // 2
        ins(BPF_JMP | EBPF_JLT | BPF_K, 4, 0, 4, 20),  // 3: caplen < 20 -> 8
        mov_imm(3, 14),                                // 4
        ins(EBPF_ALU64 | BPF_ADD | BPF_X, 3, 2),       // 5: r3 = 14 + data
        ldx(BPF_B, 0, 3, 0),                           // 6
        ins(BPF_JMP | BPF_JA, 0, 0, 1),                // 7: -> 9
        mov_imm(0, 9),                                 // 8
        kExit,                                         // 9
    };
    ASSERT_EQ(normalize_pointer_adds(prog), 1u);
    Bytes f = numbered(64);
    for (bool jit : {false, true}) {
        auto vm = EbpfVm::load(prog, jit);
        ASSERT_TRUE(vm.ok()) << vm.error();
        EXPECT_EQ((*vm)->run(Packet{f.data(), 64, 64}), 114u);
        EXPECT_EQ((*vm)->run(Packet{f.data(), 10, 10}), 9u);
    }
}

TEST(NormalizePointerAdds, SpareSlotLiesBelowTheStackInUse) {
    std::vector<ebpf_insn> prog = {
        mov_imm(5, 42),
        ins(BPF_STX | BPF_MEM | EBPF_DW, 10, 5, -16),  // the program's own stack
        ldx(EBPF_DW, 2, 1, 0),
        mov_imm(3, 14),
        ins(EBPF_ALU64 | BPF_ADD | BPF_X, 3, 2),
        ldx(BPF_B, 0, 3, 0),
        ldx(EBPF_DW, 5, 10, -16),
        ins(EBPF_ALU64 | BPF_ADD | BPF_X, 0, 5),  // data[14] + 42
        kExit,
    };
    ASSERT_EQ(normalize_pointer_adds(prog), 1u);
    EXPECT_EQ(prog[4].code, BPF_STX | BPF_MEM | EBPF_DW);
    EXPECT_EQ(prog[4].off, -24);
    Bytes f = numbered(64);
    for (bool jit : {false, true}) {
        auto vm = EbpfVm::load(prog, jit);
        ASSERT_TRUE(vm.ok()) << vm.error();
        EXPECT_EQ((*vm)->run(Packet{f.data(), 64, 64}), 114u + 42u);
    }
}

TEST(NormalizePointerAdds, LeavesAddsWhoseTypesDependOnThePath) {
    std::vector<ebpf_insn> prog = {
        ldx(EBPF_DW, 2, 1, 0),
        mov_imm(3, 14),
        ldx(BPF_W, 4, 1, 8),
        ins(BPF_JMP | BPF_JGT | BPF_K, 4, 0, 1, 100),
        ins(EBPF_ALU64 | EBPF_MOV | BPF_X, 3, 2),  // r3: a pointer on this path only
        ins(EBPF_ALU64 | BPF_ADD | BPF_X, 3, 2),
        mov_imm(0, 0),
        kExit,
    };
    auto copy = prog;
    EXPECT_EQ(normalize_pointer_adds(prog), 0u);
    EXPECT_EQ(prog.size(), copy.size());
    std::vector<ebpf_insn> none;
    EXPECT_EQ(normalize_pointer_adds(none), 0u);
}

/* The shipped example is plain C; clang 14 emits "offset += pointer" in
 * it, and it loads only because the loader rewrites that. */
TEST(NormalizePointerAdds, AppliedByTheLoader) {
    NEED_EXAMPLES();
    auto p = load_bpf_object(example("http_get"));
    ASSERT_TRUE(p.ok()) << p.error();
    if (p->rewritten_adds == 0) GTEST_SKIP() << "this clang emitted no offset += pointer";
    EXPECT_TRUE(EbpfVm::load(p->insns, false).ok());
}

/* ---- Our verifier against hostile programs --------------------------------- */

ebpf_insn alu(uint8_t op, uint8_t dst, uint8_t src) {
    return ins(EBPF_ALU64 | op | BPF_X, dst, src);
}
ebpf_insn alu_imm(uint8_t op, uint8_t dst, int32_t imm) {
    return ins(EBPF_ALU64 | op | BPF_K, dst, 0, 0, imm);
}
ebpf_insn jmp_imm(uint8_t op, uint8_t dst, int32_t imm, int16_t off) {
    return ins(BPF_JMP | op | BPF_K, dst, 0, off, imm);
}
const ebpf_insn kLoadData = ldx(EBPF_DW, 2, 1, 0);    // r2 = ctx->data
const ebpf_insn kLoadCaplen = ldx(BPF_W, 3, 1, 8);    // r3 = ctx->caplen
const ebpf_insn kLoadWirelen = ldx(BPF_W, 4, 1, 12);  // r4 = ctx->wirelen

std::string refused(const std::vector<ebpf_insn>& prog) {
    auto v = verify_filter(prog);
    EXPECT_FALSE(v.ok()) << disassemble(prog);
    return v.ok() ? std::string() : v.error();
}

/* Each of these loads in rte_bpf 22.11 (checked below) and does something a
 * filter must not; verify_filter() refuses each, naming the instruction. */
struct Hostile {
    const char* what;
    std::vector<ebpf_insn> prog;
    const char* message;  // the whole error
};

std::vector<Hostile> hostile_programs() {
    return {
        {"overwrites the context's data pointer, then reads through it",
         {mov_imm(2, 0x1000), ins(BPF_STX | BPF_MEM | EBPF_DW, 1, 2, 0), ldx(EBPF_DW, 2, 1, 0),
          ldx(BPF_B, 0, 2, 0), kExit},
         "insn 1 (stxdw [r1], r2): store to the context"},
        {"points the data pointer at the context, then reads the worker's stack",
         {ins(BPF_STX | BPF_MEM | EBPF_DW, 1, 1, 0), kLoadData, ldx(EBPF_DW, 0, 2, 200), kExit},
         "insn 0 (stxdw [r1], r1): store to the context"},
        {"stores to caplen",
         {mov_imm(2, 1), ins(BPF_STX | BPF_MEM | BPF_W, 1, 2, 8), mov_imm(0, 1), kExit},
         "insn 1 (stxw [r1+8], r2): store to the context"},
        {"stores an immediate into the packet",
         {kLoadData, ins(BPF_ST | BPF_MEM | BPF_B, 2, 0, 12, 0x86), mov_imm(0, 1), kExit},
         "insn 1 (stb [r2+12], #0x86): store to the packet (filters may only read it)"},
        {"atomic add into the packet",
         {kLoadData, mov_imm(3, 1), ins(BPF_STX | EBPF_XADD | BPF_W, 2, 3, 0), mov_imm(0, 1),
          kExit},
         "insn 2 (xaddw [r2], r3): store to the packet (filters may only read it)"},
        {"reads the mbuf's buf_iova past the 16-byte context",
         {ldx(EBPF_DW, 0, 1, 16), kExit},
         "insn 0 (ldxdw r0, [r1+16]): reads the context at offset 16 (8 bytes), outside its "
         "fields: data (8 bytes at 0), caplen (4 at 8), wirelen (4 at 12)"},
        {"reads caplen and wirelen as one 8-byte word",
         {ldx(EBPF_DW, 0, 1, 8), kExit},
         "insn 0 (ldxdw r0, [r1+8]): reads the context at offset 8 (8 bytes), outside its "
         "fields: data (8 bytes at 0), caplen (4 at 8), wirelen (4 at 12)"},
        {"reads half of the data pointer",
         {ldx(BPF_W, 0, 1, 4), kExit},
         "insn 0 (ldxw r0, [r1+4]): reads part of the packet pointer (Packet::data is read as a "
         "whole 8-byte value)"},
        {"moves the context pointer past its end, then reads",
         {alu_imm(BPF_ADD, 1, 32), ldx(EBPF_DW, 0, 1, 0), kExit},
         "insn 1 (ldxdw r0, [r1]): reads the context at offset 32 (8 bytes), outside its fields: "
         "data (8 bytes at 0), caplen (4 at 8), wirelen (4 at 12)"},
        {"returns the packet's address",
         {ldx(EBPF_DW, 0, 1, 0), kExit},
         "insn 1 (exit): returns a pointer (r0 must hold a verdict)"},
        {"returns the packet's address on some paths",
         {kLoadData, kLoadCaplen, mov_imm(0, 0), jmp_imm(BPF_JEQ, 3, 0, 1), alu(EBPF_MOV, 0, 2),
          kExit},
         "insn 5 (exit): returns a pointer on some paths (r0 must hold a verdict)"},
        {"holds a pointer on one path and a number on another, then compares it",
         {kLoadData, kLoadCaplen, mov_imm(4, 1), jmp_imm(BPF_JEQ, 3, 0, 1), alu(EBPF_MOV, 4, 2),
          mov_imm(0, 0), jmp_imm(BPF_JEQ, 4, 7, 0), kExit},
         "insn 6 (jeq r4, #0x7, -> 7): compares r4, which holds a pointer on one path and "
         "something else on another"},
        {"shifts an address bit into the verdict",
         {ldx(EBPF_DW, 0, 1, 0), alu_imm(BPF_RSH, 0, 12), alu_imm(BPF_AND, 0, 1), kExit},
         "insn 1 (rsh r0, #0xc): shift on a pointer would expose its address (only adding or "
         "subtracting a number is allowed)"},
        {"truncates a pointer to 32 bits",
         {kLoadData, ins(BPF_ALU | EBPF_MOV | BPF_X, 0, 2), kExit},
         "insn 1 (mov32 r0, r2): 32-bit copy of a pointer would expose its address"},
        {"compares an address with a number",
         {kLoadData, mov_imm(0, 0), jmp_imm(BPF_JGT, 2, 0x10000, 1), mov_imm(0, 1), kExit},
         "insn 2 (jgt r2, #0x10000, -> 4): compares a pointer with a number; that would expose "
         "its address"},
        {"subtracts the stack pointer from the packet pointer",
         {kLoadData, alu(BPF_SUB, 2, 10), alu(EBPF_MOV, 0, 2), kExit},
         "insn 1 (sub r2, r10): subtraction on a pointer would expose its address (only adding "
         "or subtracting a number is allowed)"},
        {"adds two pointers",
         {kLoadData, alu(BPF_ADD, 2, 1), ldx(BPF_B, 0, 2, 0), kExit},
         "insn 1 (add r2, r1): adds two pointers"},
        {"spills the packet pointer and reads one byte of it back",
         {kLoadData, ins(BPF_STX | BPF_MEM | EBPF_DW, 10, 2, -8), ldx(BPF_B, 0, 10, -8), kExit},
         "insn 2 (ldxb r0, [r10-8]): reads part of a spilled pointer"},
        {"stores the low half of a pointer on the stack",
         {kLoadData, ins(BPF_STX | BPF_MEM | BPF_W, 10, 2, -8), mov_imm(0, 0), kExit},
         "insn 1 (stxw [r10-8], r2): stores part of a pointer or adds to it in memory; only a "
         "whole 8-byte spill is allowed"},
        {"reads stack it never wrote (the worker's own stack)",
         {ldx(EBPF_DW, 0, 10, -64), kExit},
         "insn 0 (ldxdw r0, [r10-64]): reads stack the program has not written (r10-64)"},
        {"reads below the 512-byte stack",
         {ldx(EBPF_DW, 0, 10, -520), kExit},
         "insn 0 (ldxdw r0, [r10-520]): stack access at r10-520 (8 bytes) outside the 512-byte "
         "stack"},
        {"reads at an offset it never bounded (wirelen)",
         {kLoadData, kLoadWirelen, alu(BPF_ADD, 2, 4), ldx(BPF_B, 0, 2, 0), kExit},
         "insn 3 (ldxb r0, [r2]): packet read at an offset that may reach 4294967296, past the "
         "262152 bytes a filter may address; compare the offset with a constant or with caplen "
         "first"},
        {"reads before the packet",
         {kLoadData, ldx(BPF_B, 0, 2, -1), kExit},
         "insn 1 (ldxb r0, [r2-1]): may read before the packet (offset -1)"},
        {"reads through a number",
         {mov_imm(2, 0x1000), ldx(BPF_B, 0, 2, 0), kExit},
         "insn 1 (ldxb r0, [r2]): reads through r2, which holds a number, not a pointer"},
        {"uses a register it never set",
         {alu(EBPF_MOV, 0, 5), kExit},
         "insn 0 (mov r0, r5): uses r5 before it is set on every path"},
        {"returns without a verdict",
         {kExit},
         "insn 0 (exit): returns before r0 is set on every path"},
        {"loops",
         {mov_imm(0, 0), alu_imm(BPF_ADD, 0, 1), jmp_imm(EBPF_JLT, 0, 100, -2), kExit},
         "insn 2 (jlt r0, #0x64, -> 1): jumps back to insn 1, which leads here again: loops are "
         "not allowed (unroll them with #pragma unroll)"},
        {"jumps to itself",
         {mov_imm(0, 0), ins(BPF_JMP | BPF_JA, 0, 0, -1), kExit},
         "insn 1 (ja -> 1): jumps back to insn 1, which leads here again: loops are not allowed "
         "(unroll them with #pragma unroll)"},
        {"jumps past the end",
         {mov_imm(0, 0), jmp_imm(BPF_JEQ, 0, 0, 5), kExit},
         "insn 1 (jeq r0, #0, -> 7): jumps to insn 7, outside the program"},
        {"jumps into the middle of a 64-bit immediate",
         {mov_imm(0, 0), jmp_imm(BPF_JEQ, 0, 0, 1), ins(BPF_LD | BPF_IMM | EBPF_DW, 0, 0, 0, 1),
          ins(0, 0, 0, 0, 0), kExit},
         "insn 1 (jeq r0, #0, -> 3): jumps into the middle of a 64-bit immediate load"},
        {"falls off the end",
         {mov_imm(0, 0)},
         "insn 0 (mov r0, #0): the program can run past its last instruction"},
        {"calls a helper",
         {ins(BPF_JMP | EBPF_CALL, 0, 0, 0, 1), kExit},
         "insn 0 (call #1): calls a function; the packet VM has no helpers or subprograms"},
        {"divides by a register that may be zero",
         {kLoadWirelen, mov_imm(0, 100), alu(BPF_DIV, 0, 4), kExit},
         "insn 2 (div r0, r4): divides by r4, which may be zero (compare it with 0 first)"},
        {"writes the frame pointer",
         {mov_imm(10, 0), mov_imm(0, 0), kExit},
         "insn 0 (mov r10, #0): writes r10, the frame pointer"},
        {"has an instruction no path reaches",
         {mov_imm(0, 0), kExit, mov_imm(0, 1), kExit},
         "insn 2 (mov r0, #0x1): no path reaches this instruction"},
    };
}

TEST(Verifier, RefusesHostilePrograms) {
    for (const Hostile& h : hostile_programs()) {
        SCOPED_TRACE(h.what);
        EXPECT_EQ(refused(h.prog), h.message);
    }
}

/* The reason our verifier exists: rte_bpf alone accepts the worst of them. */
TEST(Verifier, RteBpfAloneAcceptsThem) {
    const char* rte_accepts[] = {
        "overwrites the context's data pointer, then reads through it",
        "points the data pointer at the context, then reads the worker's stack",
        "stores an immediate into the packet",
        "reads half of the data pointer",
        "returns the packet's address",
        "shifts an address bit into the verdict",
        "adds two pointers",
    };
    for (const Hostile& h : hostile_programs()) {
        if (std::find_if(std::begin(rte_accepts), std::end(rte_accepts), [&](const char* w) {
                return h.what == std::string(w);
            }) == std::end(rte_accepts))
            continue;
        auto vm = EbpfVm::load(h.prog, false);
        EXPECT_TRUE(vm.ok()) << h.what << ": " << (vm.ok() ? "" : vm.error());
    }
}

/* What a filter legitimately does passes, with the reach it may read. */
TEST(Verifier, AcceptsFiltersAndBoundsTheirReach) {
    // A caplen-checked constant offset: the ethertype.
    std::vector<ebpf_insn> eth = {
        kLoadData, kLoadCaplen, mov_imm(0, 0), jmp_imm(EBPF_JLT, 3, 14, 2), ldx(BPF_H, 0, 2, 12),
        kExit,     kExit};
    auto v = verify_filter(eth);
    ASSERT_TRUE(v.ok()) << v.error();
    EXPECT_EQ(v->packet_reach, 14u);
    EXPECT_GT(v->validator_visits, 0u);

    // An offset bounded only by caplen: caplen never exceeds kMaxCaplen.
    std::vector<ebpf_insn> by_caplen = {
        kLoadData,
        kLoadCaplen,
        kLoadWirelen,
        mov_imm(0, 0),
        ins(BPF_JMP | BPF_JGE | BPF_X, 4, 3, 2),  // wirelen >= caplen: drop
        alu(BPF_ADD, 2, 4),
        ldx(BPF_B, 0, 2, 0),
        kExit,
    };
    v = verify_filter(by_caplen);
    ASSERT_TRUE(v.ok()) << v.error();
    EXPECT_EQ(v->packet_reach, kMaxCaplen);

    // A header-derived offset: IHL * 4 after 14 bytes of Ethernet.
    std::vector<ebpf_insn> ihl = {
        kLoadData,
        ldx(BPF_B, 3, 2, 14),
        alu_imm(BPF_AND, 3, 0x0f),
        alu_imm(BPF_LSH, 3, 2),
        alu(BPF_ADD, 3, 2),  // offset += pointer, as clang emits it
        ldx(BPF_H, 0, 3, 14 + 2),
        kExit,
    };
    v = verify_filter(ihl);
    ASSERT_TRUE(v.ok()) << v.error();
    EXPECT_EQ(v->packet_reach, 14u + 60u + 2u + 2u);

    // Stack use: write, read back, spill and fill a pointer.
    std::vector<ebpf_insn> stack = {
        kLoadData,
        ins(BPF_ST | BPF_MEM | BPF_W, 10, 0, -4, 7),
        ins(BPF_STX | BPF_MEM | EBPF_DW, 10, 2, -16),
        ldx(BPF_W, 0, 10, -4),
        ldx(EBPF_DW, 5, 10, -16),
        ldx(BPF_B, 5, 5, 3),
        alu(BPF_ADD, 0, 5),
        kExit,
    };
    v = verify_filter(stack);
    ASSERT_TRUE(v.ok()) << v.error();
    EXPECT_EQ(v->packet_reach, 4u);
}

TEST(Verifier, ExamplesPassAndHostileExamplesAreRefused) {
    NEED_EXAMPLES();
    auto http = load_bpf_object(example("http_get"));
    ASSERT_TRUE(http.ok()) << http.error();
    EXPECT_GT(http->packet_reach, 54u);
    EXPECT_LT(http->packet_reach, 160u);
    struct {
        const char* program;
        const char* message;
    } bad[] = {
        {"writes_context",
         "program 'writes_context': insn 1 (stxdw [r1], r2): store to the context"},
        {"writes_packet",
         "program 'writes_packet': insn 5 (stxb [r1+12], r2): store to the packet"},
        {"reads_past_context",
         "program 'reads_past_context': insn 0 (ldxdw r1, [r1+24]): reads the context at offset "
         "24"},
        {"leaks_address",
         "program 'leaks_address': insn 1 (rsh r0, #0xc): shift on a pointer would expose its "
         "address"},
        {"loops",
         "program 'loops': insn 12 (jlt r3, r2, -> 6): jumps back to insn 6, which "
         "leads here again: loops are not allowed"},
    };
    for (const auto& b : bad) {
        auto p = load_bpf_object(example("hostile") + ":" + b.program);
        ASSERT_FALSE(p.ok()) << b.program;
        EXPECT_NE(p.error().find(b.message), std::string::npos) << p.error();
        // rte_bpf alone runs all but the loop (it says only "Invalid argument" there).
    }
}

/* Caps: size, and rte_bpf's path walk. */
std::vector<ebpf_insn> diamonds(int k) {
    // r0 = 0; r2 = caplen; k times: if r2 == j skip "r0 += 1"; exit: 2^k paths.
    std::vector<ebpf_insn> p = {mov_imm(0, 0), ldx(BPF_W, 2, 1, 8)};
    for (int j = 0; j < k; j++) {
        p.push_back(jmp_imm(BPF_JEQ, 2, j, 1));
        p.push_back(alu_imm(BPF_ADD, 0, 1));
    }
    p.push_back(kExit);
    return p;
}

TEST(Verifier, SizeAndPathCaps) {
    std::vector<ebpf_insn> big(kMaxFilterInsns + 4, mov_imm(0, 0));
    big.back() = kExit;
    EXPECT_EQ(refused(big), "4100 instructions, more than the 4096 allowed");
    big.resize(kMaxFilterInsns);
    big.back() = kExit;
    EXPECT_TRUE(verify_filter(big).ok());

    // Visits double with each diamond.
    EXPECT_EQ(validator_visits(diamonds(0)), 3u);
    EXPECT_EQ(validator_visits(diamonds(1)), 1u + 1u + 1u + 1u + 2u);
    EXPECT_EQ(validator_visits(diamonds(40), 1000), 1000u);  // saturates
    auto ok = verify_filter(diamonds(10));
    ASSERT_TRUE(ok.ok()) << ok.error();
    const std::string err = refused(diamonds(30));
    EXPECT_EQ(err, "branches on too many paths: rte_bpf's validator would visit more than " +
                       std::to_string(kMaxValidatorVisits) +
                       " instructions (it walks every path; join branches earlier or return "
                       "sooner)");
}

/* The cap must not refuse what the classic translator makes: tcpdump
 * expressions are trusted and not verified, but the same walk costs them. */
TEST(Verifier, LargeTranslatedExpressionsStayUnderTheCap) {
    std::string many_hosts = "host 198.18.0.1";
    for (int i = 2; i <= 60; i++) many_hosts += " or host 198.18.0." + std::to_string(i);
    for (const std::string& expr :
         {std::string("tcp[(tcp[12]>>2):4] = 0x47455420"), many_hosts,
          std::string("(tcp port 80 or tcp port 443 or udp port 53) and not net 198.18.0.0/15 "
                      "and (ip[6:2] & 0x1fff = 0) and tcp[tcpflags] & (tcp-syn|tcp-fin) != 0")}) {
        auto classic = compile_classic(expr, 1, 262144);
        ASSERT_TRUE(classic.ok()) << classic.error();
        auto ebpf = translate_classic(*classic);
        ASSERT_TRUE(ebpf.ok()) << ebpf.error();
        EXPECT_LE(ebpf->size(), kMaxFilterInsns) << expr;
        EXPECT_LE(validator_visits(*ebpf), kMaxValidatorVisits) << expr;
        std::printf("[ visits ] %zu insns, %llu visits: %.60s\n", ebpf->size(),
                    static_cast<unsigned long long>(validator_visits(*ebpf)), expr.c_str());
    }
}

/* Random programs: whatever the verifier accepts and rte_bpf loads runs
 * without touching a byte outside its 16-byte context and the packet_reach
 * bytes of its packet. Both sit against PROT_NONE pages, so a read the
 * verifier should have refused ends the test with the program printed. */
class Guarded {
public:
    explicit Guarded(size_t bytes) {
        page_ = static_cast<size_t>(sysconf(_SC_PAGESIZE));
        size_ = (bytes + page_ - 1) / page_ * page_ + page_;
        void* m = mmap(nullptr, size_ + page_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                       -1, 0);
        if (m == MAP_FAILED) std::abort();
        base_ = static_cast<uint8_t*>(m);
        if (mprotect(base_ + size_, page_, PROT_NONE) != 0) std::abort();
    }
    ~Guarded() { munmap(base_, size_ + page_); }
    uint8_t* last(size_t n) { return base_ + size_ - n; }  // n bytes ending at the guard

private:
    size_t page_ = 0, size_ = 0;
    uint8_t* base_ = nullptr;
};

std::string g_program;
void on_fault(int) {
    const char* head = "\nverified program read outside its context or packet:\n";
    (void)!write(2, head, std::strlen(head));
    (void)!write(2, g_program.data(), g_program.size());
    _exit(1);
}

std::vector<ebpf_insn> random_program(uint64_t& seed) {
    auto next = [&seed](uint32_t n) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        return static_cast<uint32_t>((seed >> 33) % n);
    };
    const uint8_t alu_ops[] = {BPF_ADD, BPF_SUB, BPF_MUL, BPF_AND, BPF_OR,
                               BPF_XOR, BPF_LSH, BPF_RSH, EBPF_MOV};
    const uint8_t jmp_ops[] = {BPF_JEQ,  EBPF_JNE,  BPF_JGT,   BPF_JGE, EBPF_JLT,
                               EBPF_JLE, EBPF_JSGT, EBPF_JSLT, BPF_JSET};
    const uint8_t sizes[] = {BPF_B, BPF_H, BPF_W, EBPF_DW};
    const uint8_t scratch[] = {0, 3, 4, 5};  // r2 and r6 stay packet pointers
    // r2 = data, r6 = data + (caplen & 63), stack slots -8..-32 written.
    std::vector<ebpf_insn> p = {
        kLoadData,         kLoadCaplen,         mov_imm(0, 0),       mov_imm(4, 0),
        mov_imm(5, 0),     alu(EBPF_MOV, 6, 2), alu(EBPF_MOV, 7, 3), alu_imm(BPF_AND, 7, 63),
        alu(BPF_ADD, 6, 7)};
    for (int16_t off = -8; off >= -32; off -= 8)
        p.push_back(ins(BPF_ST | BPF_MEM | EBPF_DW, 10, 0, off, off));
    const uint32_t body = 4 + next(30);
    for (uint32_t k = 0; k < body; k++) {
        const uint8_t r = scratch[next(4)];
        const uint8_t x = next(8) == 0 ? static_cast<uint8_t>(next(8)) : scratch[next(4)];
        switch (next(9)) {
            case 0:
                p.push_back(
                    ldx(next(2) ? BPF_W : BPF_H, r, 1, static_cast<int16_t>(8 + 4 * next(2))));
                break;
            case 1:
            case 2:
                p.push_back(
                    ldx(sizes[next(4)], r, next(2) ? 2 : 6, static_cast<int16_t>(next(300))));
                break;
            case 3:
                p.push_back(ins(EBPF_ALU64 | alu_ops[next(9)] | BPF_K, r, 0, 0,
                                static_cast<int32_t>(next(64))));
                break;
            case 4: p.push_back(ins(EBPF_ALU64 | alu_ops[next(9)] | BPF_X, r, x)); break;
            case 5:
                p.push_back(ins(BPF_STX | BPF_MEM | sizes[next(4)], 10, r,
                                static_cast<int16_t>(-8 * (1 + next(4)))));
                break;
            case 6:
                p.push_back(ldx(sizes[next(4)], r, 10, static_cast<int16_t>(-8 * (1 + next(4)))));
                break;
            case 7:
                p.push_back(ins(BPF_JMP | jmp_ops[next(9)] | BPF_K, r, 0,
                                static_cast<int16_t>(next(4)), static_cast<int32_t>(next(300))));
                break;
            default:
                p.push_back(
                    ins(BPF_JMP | jmp_ops[next(9)] | BPF_X, r, x, static_cast<int16_t>(next(4))));
                break;
        }
    }
    p.push_back(alu_imm(BPF_AND, 0, 1));
    p.push_back(kExit);
    return p;
}

TEST(Verifier, RandomProgramsItAcceptsStayInsideTheirMemory) {
    struct sigaction sa {};
    sa.sa_handler = on_fault;
    struct sigaction old_segv {
    }, old_bus{};
    sigaction(SIGSEGV, &sa, &old_segv);
    sigaction(SIGBUS, &sa, &old_bus);
    Guarded ctx_mem(sizeof(Packet));
    uint64_t seed = 42;
    int accepted = 0, ran = 0;
    for (int n = 0; n < 20000; n++) {
        const std::vector<ebpf_insn> prog = random_program(seed);
        auto v = verify_filter(prog);
        if (!v) continue;
        accepted++;
        auto vm = EbpfVm::load(prog, n % 2 == 0);
        if (!vm) continue;  // rte_bpf's own range analysis is weaker
        ran++;
        g_program = disassemble(prog);
        Guarded pkt_mem(v->packet_reach + 1);
        uint8_t* data = pkt_mem.last(v->packet_reach);
        for (uint32_t i = 0; i < v->packet_reach; i++) data[i] = static_cast<uint8_t>(i * 7);
        auto* pkt = reinterpret_cast<Packet*>(ctx_mem.last(sizeof(Packet)));
        for (uint32_t caplen : {0u, 60u, v->packet_reach, 1500u}) {
            *pkt = Packet{data, caplen, caplen};
            (void)(*vm)->run(*pkt);
            (void)(*vm)->run_interpreted(*pkt);
        }
    }
    sigaction(SIGSEGV, &old_segv, nullptr);
    sigaction(SIGBUS, &old_bus, nullptr);
    std::printf("[ random ] 20000 programs: %d verified, %d loaded by rte_bpf and run\n", accepted,
                ran);
    EXPECT_GT(ran, 200);
}

/* ---- The private packet copy ----------------------------------------------- */

TEST(PacketStage, CopiesUpToReachAndZeroesTheRest) {
    PacketStage stage(128);
    std::vector<uint8_t> big(4096, 0xcd);
    Packet p{big.data(), 200, 300};
    const Packet& a = stage.stage(p);
    EXPECT_NE(a.data, big.data());
    EXPECT_NE(&a, &p);
    EXPECT_EQ(a.caplen, 200u);
    EXPECT_EQ(a.wirelen, 300u);
    for (int i = 0; i < 128; i++) ASSERT_EQ(a.data[i], 0xcd) << i;

    // A shorter packet: nothing of the longer one survives past its caplen.
    std::vector<uint8_t> small(4096, 0xab);
    const Packet& b = stage.stage(Packet{small.data(), 60, 60});
    for (int i = 0; i < 60; i++) ASSERT_EQ(b.data[i], 0xab) << i;
    for (int i = 60; i < 128; i++) ASSERT_EQ(b.data[i], 0) << i;

    // caplen is clamped to what the verifier assumes.
    const Packet& c = stage.stage(Packet{small.data(), kMaxCaplen + 100, kMaxCaplen + 100});
    EXPECT_EQ(c.caplen, kMaxCaplen);
}

/* hostile.bpf.c's reads_past_caplen reads byte 100 unconditionally: through
 * a rule set it sees the packet's own bytes, and zeros past caplen, never
 * the bytes after the frame in its buffer, nor a previous packet's. */
TEST(PacketStage, RuleSetRunsObjectsOnThePrivateCopy) {
    NEED_EXAMPLES();
    RuleSpec r;
    r.name = "obj";
    r.bpf_object = example("hostile") + ":reads_past_caplen";
    for (bool jit : {true, false}) {
        CompileOptions co;
        co.jit = jit;
        auto rs = compile(std::span(&r, 1), co);
        ASSERT_TRUE(rs.ok()) << rs.error();
        auto scratch = (*rs)->make_scratch();
        std::vector<uint8_t> buf(4096, 0);
        buf[100] = 0xab;
        uint8_t verdict[2];
        // Byte 100 inside the capture: seen.
        Packet inside{buf.data(), 200, 200};
        EXPECT_EQ((*rs)->classify_burst(&inside, 1, verdict, *scratch), 1u);
        // The same buffer with caplen 64: byte 100 lies after the frame.
        Packet after{buf.data(), 64, 64};
        EXPECT_EQ((*rs)->classify_burst(&after, 1, verdict, *scratch), 0u) << jit;
        // A short packet right after a long one with 0xab at 100.
        std::vector<uint8_t> clean(64, 0);
        Packet pair[2] = {inside, Packet{clean.data(), 64, 64}};
        EXPECT_EQ((*rs)->classify_burst(pair, 2, verdict, *scratch), 1u) << jit;
        EXPECT_EQ(verdict[0], 1);
        EXPECT_EQ(verdict[1], 0);
    }
}

/* ---- Object files ---------------------------------------------------------- */

TEST(ObjectFile, OpensOnceNoLinksNoFifosSizeCap) {
    NEED_EXAMPLES();
    const auto dir =
        std::filesystem::temp_directory_path() / ("linecap_bpf_files_" + std::to_string(getpid()));
    std::filesystem::create_directories(dir);
    const auto link = dir / "link.bpf.o";
    std::filesystem::create_symlink(example("http_get"), link);
    auto l = load_bpf_object(link.string());
    ASSERT_FALSE(l.ok());
    EXPECT_EQ(l.error(),
              "bpf object '" + link.string() + "': is a symbolic link; name the file itself");

    const auto fifo = dir / "fifo.bpf.o";
    ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
    auto f = load_bpf_object(fifo.string());  // would block forever if read
    ASSERT_FALSE(f.ok());
    EXPECT_EQ(f.error(), "bpf object '" + fifo.string() + "': is not a regular file");

    auto dev = load_bpf_object("/dev/zero");
    ASSERT_FALSE(dev.ok());
    EXPECT_EQ(dev.error(), "bpf object '/dev/zero': is not a regular file");

    const auto huge = dir / "huge.bpf.o";
    {
        std::ofstream out(huge, std::ios::binary);
        out << "\x7f"
               "ELF";
    }
    std::filesystem::resize_file(huge, kMaxObjectBytes + 1);
    auto h = load_bpf_object(huge.string());
    ASSERT_FALSE(h.ok());
    EXPECT_EQ(h.error(), "bpf object '" + huge.string() + "': is " +
                             std::to_string(kMaxObjectBytes + 1) + " bytes, more than the " +
                             std::to_string(kMaxObjectBytes) + " allowed");
    std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace linecap::filters
