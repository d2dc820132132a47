/* --bpf-object: loading ELF objects through libbpf, refusing what rte_bpf
 * cannot run, running the shipped example in EbpfVm (JIT and interpreter),
 * and what rte_bpf's validator does with reads through Packet::data. */
#include "filters/bpf_object.hh"

#include <gtest/gtest.h>
#include <pcap/pcap.h>
#include <rte_bpf.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "filters/ebpf_vm.hh"

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
    std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
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
        {"uses_helper", "instruction 1 (opcode 0x85): calls kernel helper 5 (bpf_ktime_get_ns)"},
        {"uses_map", "instruction 4 (opcode 0x18): refers to 'counts'"},
        {"uses_global", "instruction 1 (opcode 0x18): refers to 'seen'"},
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
              "instruction 1 (opcode 0x18): loads a map or kernel object (BPF_PSEUDO_MAP_FD); "
              "maps do not exist outside the kernel");
    ebpf_insn value = ins(BPF_LD | BPF_IMM | EBPF_DW, 1, 2, 0, 3);
    EXPECT_NE(check_error({value, ins(0), kExit}).find("BPF_PSEUDO_MAP_VALUE"), std::string::npos);
    EXPECT_NE(check_error({lddw}).find("cut short"), std::string::npos);
    EXPECT_NE(check_error({lddw, ins(0), kExit}, {"data_map", "", ""}).find("refers to 'data_map'"),
              std::string::npos);

    EXPECT_EQ(
        check_error({ins(BPF_JMP | EBPF_CALL, 0, 0, 0, 6), kExit}),
        "instruction 0 (opcode 0x85): calls kernel helper 6 (bpf_trace_printk); the packet VM "
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
        "instruction 3 (opcode 0xdb): atomic operation 1 is not supported (only a plain atomic "
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

}  // namespace
}  // namespace linecap::filters
