// libFuzzer target: the filter front end. The first byte chooses what the rest
// is: a pcap-filter expression, Hyperscan pattern texts (one per line), or the
// bytes of an eBPF ELF object. Whatever compiles is run on a few packets.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "filters/rule_set.hh"

namespace {

const uint8_t kTcpGet[] = {
    0,    1,    2,   3,  4, 5, 6,    7, 8,  9, 10, 11, 0x08, 0x00,  // ethernet
    0x45, 0,    0,   44, 0, 1, 0x40, 0, 64, 6, 0,  0,  198,  18,
    0,    1,    198, 18, 0, 2,  // ipv4
    0x9c, 0x40, 0,   80, 0, 0, 0,    1, 0,  0, 0,  0,  0x50, 0x18,
    0xff, 0xff, 0,   0,  0, 0,  // tcp
    'G',  'E',  'T', ' '};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace linecap::filters;
    if (size < 1) return 0;
    uint8_t mode = data[0] % 3;
    std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
    RuleSpec rule;
    rule.name = "fuzz";
    std::string object_path;
    if (mode == 0) {
        rule.expression = text;
    } else if (mode == 1) {
        size_t start = 0;
        for (size_t i = 0; i <= text.size() && rule.patterns.size() < 16; i++)
            if (i == text.size() || text[i] == '\n') {
                rule.patterns.push_back(text.substr(start, i - start));
                start = i + 1;
            }
    } else {
        char tmpl[] = "/tmp/linecap-fuzz-XXXXXX";
        int fd = mkstemp(tmpl);
        if (fd < 0) return 0;
        if (write(fd, text.data(), text.size()) != ssize_t(text.size())) {
            close(fd);
            unlink(tmpl);
            return 0;
        }
        close(fd);
        object_path = tmpl;
        rule.bpf_object = object_path;
    }
    CompileOptions opts;
    opts.time_limit_ms = 0;  // libpcap and Hyperscan in this process: their crashes are ours
    auto rs = compile(std::span(&rule, 1), opts);
    if (rs) {
        auto scratch = (*rs)->make_scratch();
        std::vector<Packet> pkts;
        for (uint32_t len = 0; len <= sizeof(kTcpGet); len += 9)
            pkts.push_back(Packet{kTcpGet, len, uint32_t(sizeof(kTcpGet))});
        std::vector<uint8_t> verdict(pkts.size());
        (void)(*rs)->classify_burst(pkts.data(), pkts.size(), verdict.data(), *scratch);
        (void)(*rs)->describe();
    }
    if (!object_path.empty()) unlink(object_path.c_str());
    return 0;
}
