/* EbpfVm and translator unit tests: the JSET-immediate rewrite, refused
 * programs, filter syntax errors and the `capd -d` description. */
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "filters/cbpf_to_ebpf.hh"
#include "filters/disasm.hh"
#include "filters/ebpf_vm.hh"
#include "filters/rule_set.hh"
#include "tests/filters/bpf_test_packets.hh"

namespace linecap::filters {
namespace {

ebpf_insn insn(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm) {
    ebpf_insn i{};
    i.code = code;
    i.dst_reg = dst;
    i.src_reg = src;
    i.off = off;
    i.imm = imm;
    return i;
}

ebpf_insn ldx(uint8_t size, uint8_t dst, uint8_t src, int16_t off) {
    return insn(BPF_LDX | BPF_MEM | size, dst, src, off, 0);
}
ebpf_insn mov64(uint8_t dst, int32_t imm) {
    return insn(EBPF_ALU64 | EBPF_MOV | BPF_K, dst, 0, 0, imm);
}
ebpf_insn jset_imm(uint8_t dst, int32_t imm, int16_t off) {
    return insn(BPF_JMP | BPF_JSET | BPF_K, dst, 0, off, imm);
}
ebpf_insn ja(int16_t off) { return insn(BPF_JMP | BPF_JA, 0, 0, off, 0); }
ebpf_insn exit_insn() { return insn(BPF_JMP | EBPF_EXIT, 0, 0, 0, 0); }

/* r0 = which masks hit packet byte 0: bit 0 for 0x02, bit 1 for 0x40, bit 2
 * for -128 (sign-extended: any bit from 7 up), bit 3 for 0x1001. JSETs with
 * small immediates (the imm8 encodings the 22.11 JIT gets wrong), a negative
 * one and a large one, with jumps crossing the rewritten spots. */
std::vector<ebpf_insn> jset_program() {
    return {
        ldx(EBPF_DW, 2, 1, 0),                          // 0: r2 = pkt->data
        ldx(BPF_W, 3, 1, 8),                            // 1: r3 = caplen
        mov64(0, 0),                                    // 2: r0 = 0
        insn(BPF_JMP | BPF_JEQ | BPF_K, 3, 0, 11, 0),   // 3: caplen == 0 -> exit (15)
        ldx(BPF_B, 4, 2, 0),                            // 4: r4 = data[0]
        jset_imm(4, 2, 1),                              // 5: byte & 2 -> 7
        ja(1),                                          // 6: -> 8
        insn(EBPF_ALU64 | BPF_OR | BPF_K, 0, 0, 0, 1),  // 7: r0 |= 1
        jset_imm(4, 0x40, 1),                           // 8: byte & 0x40 -> 10
        ja(1),                                          // 9: -> 11
        insn(EBPF_ALU64 | BPF_OR | BPF_K, 0, 0, 0, 2),  // 10: r0 |= 2
        jset_imm(4, -128, 1),                           // 11: byte & ~0x7f (sign-extended) -> 13
        ja(1),                                          // 12: -> 14
        insn(EBPF_ALU64 | BPF_OR | BPF_K, 0, 0, 0, 4),  // 13: r0 |= 4
        jset_imm(4, 0x1001, 1),                         // 14: byte & 0x1001 -> 16
        exit_insn(),                                    // 15
        insn(EBPF_ALU64 | BPF_OR | BPF_K, 0, 0, 0, 8),  // 16: r0 |= 8
        exit_insn(),                                    // 17
    };
}

uint64_t expected_jset(uint8_t b) {
    return (b & 2 ? 1 : 0) | (b & 0x40 ? 2 : 0) | (b & 0x80 ? 4 : 0) | (b & 1 ? 8 : 0);
}

TEST(EbpfVm, JsetImmediateIsRewrittenAndRunsUnderTheJit) {
    auto prog = jset_program();
    auto vm = EbpfVm::load(prog, true);
    ASSERT_TRUE(vm.ok()) << vm.error();
    EXPECT_TRUE((*vm)->jitted()) << (*vm)->engine();
    EXPECT_EQ((*vm)->rewritten_jset(), 4u);
    EXPECT_EQ((*vm)->insns().size(), prog.size() + 4);
    for (const auto& in : (*vm)->insns()) EXPECT_NE(in.code, BPF_JMP | BPF_JSET | BPF_K);
    for (int b = 0; b < 256; b++) {
        const uint8_t byte = static_cast<uint8_t>(b);
        const Packet p{&byte, 1, 1};
        EXPECT_EQ((*vm)->run(p), expected_jset(byte)) << "byte " << b;
        EXPECT_EQ((*vm)->run_interpreted(p), expected_jset(byte)) << "byte " << b;
    }
    const Packet empty{nullptr, 0, 0};
    EXPECT_EQ((*vm)->run(empty), 0u);
}

TEST(EbpfVm, InterpreterOnlyLeavesTheProgramAlone) {
    auto prog = jset_program();
    auto vm = EbpfVm::load(prog, false);
    ASSERT_TRUE(vm.ok()) << vm.error();
    EXPECT_FALSE((*vm)->jitted());
    EXPECT_EQ((*vm)->rewritten_jset(), 0u);
    EXPECT_NE((*vm)->engine().find("interpreter"), std::string::npos);
    const uint8_t byte = 0xc3;
    EXPECT_EQ((*vm)->run(Packet{&byte, 1, 1}), expected_jset(byte));
}

TEST(EbpfVm, JsetImmediateWithoutAFreeRegisterFallsBackToTheInterpreter) {
    std::vector<ebpf_insn> prog = {ldx(EBPF_DW, 2, 1, 0), ldx(BPF_B, 0, 2, 0)};
    for (uint8_t r = 3; r <= 9; r++) prog.push_back(mov64(r, r));  // touch r3..r9
    prog.push_back(jset_imm(0, 1, 1));
    prog.push_back(exit_insn());
    prog.push_back(mov64(0, 7));
    prog.push_back(exit_insn());
    auto vm = EbpfVm::load(prog, true);
    ASSERT_TRUE(vm.ok()) << vm.error();
    EXPECT_FALSE((*vm)->jitted());
    EXPECT_NE((*vm)->engine().find("JSET"), std::string::npos) << (*vm)->engine();
    const uint8_t odd = 3, even = 4;
    EXPECT_EQ((*vm)->run(Packet{&odd, 1, 1}), 7u);
    EXPECT_EQ((*vm)->run(Packet{&even, 1, 1}), 4u);
}

TEST(EbpfVm, RefusedProgramNamesTheInstruction) {
    // r5 is never written: rte_bpf's verifier refuses the load through it.
    auto vm = EbpfVm::load(
        std::vector<ebpf_insn>{mov64(0, 0), jset_imm(0, 1, 0), ldx(BPF_W, 0, 5, 0), exit_insn()},
        true);
    ASSERT_FALSE(vm.ok());
    // Index 2 in the caller's program, although the rewrite moved it to 3.
    EXPECT_NE(vm.error().find("instruction 2 (ldxw r0, [r5])"), std::string::npos) << vm.error();

    auto empty = EbpfVm::load(std::vector<ebpf_insn>{}, true);
    ASSERT_FALSE(empty.ok());
    EXPECT_NE(empty.error().find("empty"), std::string::npos);

    auto bad = EbpfVm::load(std::vector<ebpf_insn>{insn(0xff, 0, 0, 0, 0), exit_insn()}, true);
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.error().find("instruction 0"), std::string::npos) << bad.error();
}

TEST(EbpfVm, ReadsPastTheVerifierSpanAreRefused) {
    std::vector<ebpf_insn> prog = {
        ldx(EBPF_DW, 2, 1, 0), mov64(0, 0),
        insn(EBPF_ALU64 | BPF_ADD | BPF_K, 2, 0, 0, static_cast<int32_t>(kVerifierPacketSpan)),
        ldx(BPF_B, 0, 2, 0), exit_insn()};
    auto vm = EbpfVm::load(prog, true);
    ASSERT_FALSE(vm.ok());
    EXPECT_NE(vm.error().find("instruction 3"), std::string::npos) << vm.error();
}

TEST(Translator, EmptyAndTinyPrograms) {
    auto all = compile_classic("", 1 /* DLT_EN10MB */, 65535);
    ASSERT_TRUE(all.ok());
    auto t = translate_classic(*all);
    ASSERT_TRUE(t.ok()) << t.error();
    auto vm = EbpfVm::load(*t, true);
    ASSERT_TRUE(vm.ok()) << vm.error();
    EXPECT_EQ((*vm)->run(Packet{nullptr, 0, 0}), 65535u);

    EXPECT_FALSE(translate_classic(std::vector<ClassicInsn>{}).ok());
    // A jump past the end and an unknown opcode are refused, naming the index.
    auto r1 = translate_classic(
        std::vector<ClassicInsn>{{BPF_JMP | BPF_JA, 0, 0, 5}, {BPF_RET, 0, 0, 0}});
    ASSERT_FALSE(r1.ok());
    EXPECT_NE(r1.error().find("classic instruction 0"), std::string::npos) << r1.error();
    auto r2 = translate_classic(std::vector<ClassicInsn>{{0xff, 0, 0, 0}, {BPF_RET, 0, 0, 0}});
    ASSERT_FALSE(r2.ok());
    // Scratch index out of range.
    auto r3 = translate_classic(std::vector<ClassicInsn>{{BPF_ST, 0, 0, 16}, {BPF_RET, 0, 0, 0}});
    ASSERT_FALSE(r3.ok());
    EXPECT_NE(r3.error().find("scratch"), std::string::npos);
}

TEST(Translator, DivisionByZeroAndWideShiftsMatchBpfFilter) {
    // X = P[1]; A = P[0]; A = A op X; ret A + 1
    constexpr uint16_t kTax = BPF_MISC | 0x00, kRetA = BPF_RET | 0x10;
    for (uint16_t op : {BPF_DIV, BPF_MOD, BPF_LSH, BPF_RSH}) {
        const std::vector<ClassicInsn> p2 = {{BPF_LD | BPF_B | BPF_ABS, 0, 0, 1},
                                             {kTax, 0, 0, 0},
                                             {BPF_LD | BPF_B | BPF_ABS, 0, 0, 0},
                                             {static_cast<uint16_t>(BPF_ALU | op | BPF_X), 0, 0, 0},
                                             {BPF_ALU | BPF_ADD | BPF_K, 0, 0, 1},
                                             {kRetA, 0, 0, 0}};
        auto t = translate_classic(p2);
        ASSERT_TRUE(t.ok()) << t.error();
        auto vm = EbpfVm::load(*t, true);
        ASSERT_TRUE(vm.ok()) << vm.error();
        for (int a = 0; a < 256; a += 17) {
            for (int x : {0, 1, 3, 31, 32, 33, 200}) {
                const uint8_t b[2] = {static_cast<uint8_t>(a), static_cast<uint8_t>(x)};
                const Packet p{b, 2, 2};
                const uint32_t want = classic_run(p2, b, 2, 2);
                EXPECT_EQ((*vm)->run(p), want) << "op " << op << " a " << a << " x " << x;
                EXPECT_EQ((*vm)->run_interpreted(p), want);
            }
        }
    }
}

/* The seed articles' garbled filters and other mistakes users make. */
TEST(RuleSetErrors, SyntaxErrorsNameTheRuleAndCarryLibpcapsWords) {
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"tcp[(tcp[12]>x2):4] =0x47455429", "syntax error"},
        {"tcp[(tcp[12]2):4]-0x5353482D", "syntax error"},
        {"(tcp (tcp[12]>>2):4] = 0x5353482D) and (tcp[((tcp[12]>2)+4):2] = 0x312E3)",
         "syntax error"},
        {"tcp[tcpflags]", "syntax error"},
        {"prot 80", "syntax error"},
        {"port", "syntax error"},
        {"host 999.1.1.1", ""},
        {"len / 0 > 1", "division by zero"},
        {"portrange 10-", "syntax error"},
    };
    CompileOptions opts;
    for (const auto& [expr, words] : cases) {
        RuleSpec r;
        r.name = "cli";
        r.expression = expr;
        auto rs = compile(std::span(&r, 1), opts);
        ASSERT_FALSE(rs.ok()) << expr;
        EXPECT_EQ(rs.error().rfind("rule 'cli': ", 0), 0u) << rs.error();
        EXPECT_GT(rs.error().size(), std::string("rule 'cli': ").size()) << expr;
        EXPECT_NE(rs.error().find(words), std::string::npos) << expr << " -> " << rs.error();
    }
    // The rule's position names an unnamed rule.
    std::vector<RuleSpec> two(2);
    two[0].expression = "tcp";
    two[1].expression = "tcp and";
    auto rs = compile(two, opts);
    ASSERT_FALSE(rs.ok());
    EXPECT_EQ(rs.error().rfind("rule #1: ", 0), 0u) << rs.error();
}

/* `ip broadcast` needs a netmask: 0 (tcpdump's for files) accepts only
 * 0.0.0.0 and 255.255.255.255; an interface's /24 also its subnet's. */
TEST(RuleSetCompile, IpBroadcastUsesTheNetmask) {
    using testing::build;
    using testing::GenSpec;
    using testing::ipv4;
    using testing::L4;
    auto frame = [](uint32_t dst) {
        GenSpec g;
        g.src4 = ipv4(198, 18, 5, 1);
        g.dst4 = dst;
        g.l4 = L4::kUdp;
        return build(g);
    };
    const auto subnet = frame(ipv4(198, 18, 5, 255)), all = frame(ipv4(255, 255, 255, 255)),
               host = frame(ipv4(198, 18, 5, 2));
    for (bool jit : {false, true}) {
        for (uint32_t mask : {0u, 0xffffff00u}) {
            RuleSpec r;
            r.name = "bcast";
            r.expression = "ip broadcast";
            CompileOptions opts;
            opts.jit = jit;
            opts.netmask = mask;
            auto rs = compile(std::span(&r, 1), opts);
            ASSERT_TRUE(rs.ok()) << rs.error();
            auto classic = compile_classic(r.expression, opts.linktype, opts.snaplen, mask);
            ASSERT_TRUE(classic.ok()) << classic.error();
            auto verdict = [&](const std::vector<uint8_t>& b) {
                uint32_t len = static_cast<uint32_t>(b.size());
                return classic_run(*classic, b.data(), len, len) != 0;
            };
            EXPECT_TRUE(verdict(all)) << mask;
            EXPECT_EQ(verdict(subnet), mask != 0) << mask;
            EXPECT_FALSE(verdict(host)) << mask;
            auto scratch = (*rs)->make_scratch();
            for (const auto* b : {&all, &subnet, &host}) {
                Packet p{b->data(), static_cast<uint32_t>(b->size()),
                         static_cast<uint32_t>(b->size())};
                uint8_t v = 2;
                (*rs)->classify_burst(&p, 1, &v, *scratch);
                EXPECT_EQ(v != 0, verdict(*b)) << mask << " jit " << jit;
            }
        }
    }
}

TEST(RuleSetDescribe, ShowsClassicListingTheEbpfThatRunsAndTheJit) {
    RuleSpec r;
    r.name = "cli";
    r.expression = "tcp[13] & 2 != 0";
    CompileOptions opts;
    auto rs = compile(std::span(&r, 1), opts);
    ASSERT_TRUE(rs.ok()) << rs.error();
    const std::string d = (*rs)->describe();
    auto classic = compile_classic(r.expression, opts.linktype, opts.snaplen);
    ASSERT_TRUE(classic.ok());
    const std::string listing = classic_listing(*classic);
    // Exactly what `tcpdump -d 'tcp[13] & 2 != 0'` prints.
    EXPECT_EQ(listing.rfind("(000) ldh      [12]\n(001) jeq      #0x800", 0), 0u) << listing;
    EXPECT_NE(listing.find("jset     #0x2"), std::string::npos) << listing;
    EXPECT_NE(d.find(listing), std::string::npos) << d;
    EXPECT_NE(d.find("rule 'cli'"), std::string::npos);
    EXPECT_NE(d.find("x86-64 JIT"), std::string::npos) << d;
    EXPECT_NE(d.find("JIT: 1 of 1 programs run as x86-64 native code"), std::string::npos) << d;
    EXPECT_NE(d.find("(000) ldxw r3, [r1+8]"), std::string::npos) << d;
    EXPECT_NE(d.find("jset r0, r4"), std::string::npos) << d;

    opts.jit = false;
    auto interp = compile(std::span(&r, 1), opts);
    ASSERT_TRUE(interp.ok());
    EXPECT_NE((*interp)->describe().find("interpreter (JIT disabled)"), std::string::npos)
        << (*interp)->describe();
    EXPECT_NE((*interp)->describe().find("JIT: off"), std::string::npos);

    RuleSpec loop;
    loop.name = "chain";
    loop.expression = "ip6 protochain 6";
    auto lrs = compile(std::span(&loop, 1), CompileOptions{});
    ASSERT_TRUE(lrs.ok()) << lrs.error();
    EXPECT_NE((*lrs)->describe().find("bpf_filter()"), std::string::npos) << (*lrs)->describe();
}

TEST(Disassembler, PrintsEveryForm) {
    const std::vector<ebpf_insn> prog = {insn(BPF_LD | BPF_IMM | EBPF_DW, 3, 0, 0, 0x11223344),
                                         insn(0, 0, 0, 0, 0x55667788),
                                         insn(BPF_ALU | EBPF_END | EBPF_TO_BE, 0, 0, 0, 16),
                                         insn(BPF_ST | BPF_MEM | BPF_W, 10, 0, -8, 5),
                                         insn(BPF_STX | BPF_MEM | EBPF_DW, 10, 2, -16, 0),
                                         insn(BPF_ALU | BPF_NEG, 0, 0, 0, 0),
                                         insn(BPF_JMP | EBPF_CALL, 0, 0, 0, 3),
                                         insn(BPF_JMP | EBPF_JNE | BPF_X, 1, 2, -3, 0),
                                         exit_insn()};
    const std::string d = disassemble(prog);
    EXPECT_NE(d.find("(000) lddw r3, #0x5566778811223344"), std::string::npos) << d;
    EXPECT_EQ(d.find("(001)"), std::string::npos) << d;
    EXPECT_NE(d.find("(002) be16 r0"), std::string::npos) << d;
    EXPECT_NE(d.find("(003) stw [r10-8], #0x5"), std::string::npos) << d;
    EXPECT_NE(d.find("(004) stxdw [r10-16], r2"), std::string::npos) << d;
    EXPECT_NE(d.find("(005) neg32 r0"), std::string::npos) << d;
    EXPECT_NE(d.find("(006) call #3"), std::string::npos) << d;
    EXPECT_NE(d.find("(007) jne r1, r2, -> 5"), std::string::npos) << d;
    EXPECT_NE(d.find("(008) exit"), std::string::npos) << d;
}

}  // namespace
}  // namespace linecap::filters
