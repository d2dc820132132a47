// Writes the diagnosis and comparison test captures into a directory, with
// truth.json holding the lines capdiag must print (for test_capdiag.py).
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/diag/capture_builder.hh"
#include "tests/diag/scenarios.hh"

using namespace linecap::tests::diag;

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: diag_gencaps OUTDIR\n");
        return 1;
    }
    const std::string dir = argv[1];
    nlohmann::json truth;

    const DiagnoseStory st = diagnose_story();
    nlohmann::json files = nlohmann::json::array();
    struct Out {
        const char* name;
        Link link;
    };
    for (const Out& o :
         {Out{"stories_eth.pcap", Link::kEthernet}, Out{"stories_qinq.pcap", Link::kQinQ},
          Out{"stories_sll.pcap", Link::kSll}, Out{"stories_sll2.pcap", Link::kSll2},
          Out{"stories_raw.pcap", Link::kRaw}}) {
        if (!write_pcap(dir + "/" + o.name, linktype_of(o.link), st.trace.packets(o.link)))
            return 1;
        files.push_back(o.name);
    }
    auto pkts = st.trace.packets(Link::kVlan);
    for (size_t i = 0; i < pkts.size(); i++) pkts[i].ifid = static_cast<uint32_t>(i % 2);
    if (!write_pcapng(dir + "/stories_2if.pcapng", {1, 1}, pkts)) return 1;
    files.push_back("stories_2if.pcapng");
    pkts[3].ifid = 2;
    if (!write_pcapng(dir + "/mixed.pcapng", {1, 1, 113}, pkts)) return 1;

    truth["diagnose"] = {{"files", files},
                         {"lines", st.lines},
                         {"also", st.also},
                         {"verdict", st.verdict},
                         {"frames", st.trace.events.size()}};

    struct Variant {
        const char* name;
        TwoPointOptions opt;
    };
    TwoPointOptions nat;
    nat.nat = true;
    TwoPointOptions offset;
    offset.clock_offset_s = 0.1;
    nlohmann::json cmp;
    for (const Variant& v :
         {Variant{"plain", {}}, Variant{"nat", nat}, Variant{"offset", offset}}) {
        const TwoPoint tp = two_point(v.opt);
        const std::string a = std::string("a_") + v.name + ".pcap";
        const std::string b = std::string("b_") + v.name + ".pcap";
        if (!write_pcap(dir + "/" + a, 1, tp.a) || !write_pcap(dir + "/" + b, 1, tp.b)) return 1;
        cmp[v.name] = {{"a", a},
                       {"b", b},
                       {"nat", tp.nat_args},
                       {"verdicts", tp.verdicts},
                       {"matched", tp.matched},
                       {"blocked_frames_a", tp.blocked_frames_a}};
    }
    truth["compare"] = cmp;
    std::ofstream(dir + "/truth.json") << truth.dump(2) << "\n";
    return 0;
}
