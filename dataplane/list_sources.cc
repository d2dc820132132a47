#include "dataplane/list_sources.hh"

#include <net/if.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "dataplane/netns.hh"

namespace linecap::dataplane {
namespace fs = std::filesystem;

namespace {
std::string read_line(const fs::path& p) {
    std::ifstream in(p);
    std::string s;
    std::getline(in, s);
    return s;
}

std::string flags_state(unsigned flags) {
    if (!(flags & IFF_UP)) return "down";
    return (flags & IFF_RUNNING) ? "up" : "up, no carrier";
}
}  // namespace

std::vector<ListedSource> listed_sources(std::vector<std::string>& notes) {
    std::vector<ListedSource> out;
    std::error_code ec;
    // PCI network controllers (class 0x02xxxx), with the driver they are bound to.
    std::vector<fs::path> pci;
    for (const auto& d : fs::directory_iterator("/sys/bus/pci/devices", ec))
        if (read_line(d.path() / "class").rfind("0x02", 0) == 0) pci.push_back(d.path());
    std::sort(pci.begin(), pci.end());
    for (const auto& d : pci) {
        std::string driver = "none";
        fs::path link = d / "driver";
        if (fs::is_symlink(link, ec)) driver = fs::read_symlink(link, ec).filename().string();
        bool dpdk = driver == "vfio-pci" || driver == "uio_pci_generic" || driver == "igb_uio";
        out.push_back(
            {d.filename().string(),
             "PCI, driver " + driver + (dpdk ? ", usable" : ", bind to vfio-pci to use")});
    }
    // This namespace's interfaces, in index order, by the bare name -i takes
    // (af_packet, as tcpdump reads them).
    for (const NetIf& i : current_interfaces())
        out.push_back({i.name, "af_packet:" + i.name + ", kernel interface, " +
                                   flags_state(i.flags) + "; also af_xdp:" + i.name});
    out.push_back({"any",
                   "af_packet:any, every kernel interface of this namespace, "
                   "link-type LINUX_SLL2"});
    // Interfaces inside each named network namespace (ip netns add NAME),
    // listed from inside it: /sys/class/net shows only this namespace's.
    std::vector<std::string> names;
    for (const auto& d : fs::directory_iterator("/run/netns", ec))
        names.push_back(d.path().filename().string());
    std::sort(names.begin(), names.end());
    for (const auto& name : names) {
        auto ns = open_named_netns(name);
        if (!ns) {
            notes.push_back(ns.error());
            continue;
        }
        auto scope = NetnsScope::enter(*ns);
        if (!scope) {
            notes.push_back(scope.error());
            continue;
        }
        for (const NetIf& i : current_interfaces()) {
            std::string at = i.name + "@netns=" + name;
            out.push_back({"af_packet:" + at, "interface in network namespace " + name + ", " +
                                                  flags_state(i.flags) + "; also af_xdp:" + at});
        }
    }
    out.push_back({"pcap:FILE[,loop]", "capture file", false});
    out.push_back({"null[:SIZE]", "synthetic packets", false});
    return out;
}

std::string list_sources(std::vector<std::string>& notes) {
    std::ostringstream out;
    int n = 1;
    for (const ListedSource& s : listed_sources(notes))
        out << n++ << "." << s.name << " (" << s.note << ")\n";
    return out.str();
}

Result<std::string> listed_source_by_number(unsigned long number) {
    std::vector<std::string> notes;
    std::vector<ListedSource> all = listed_sources(notes);
    if (number == 0 || number > all.size())
        return make_error("-i " + std::to_string(number) + ": capd -D lists " +
                          std::to_string(all.size()) + " sources, numbered from 1");
    const ListedSource& s = all[number - 1];
    if (!s.selectable)
        return make_error("-i " + std::to_string(number) + ": entry " + std::to_string(number) +
                          " of capd -D is " + s.name + ", which needs to be written out");
    return s.name;
}

}  // namespace linecap::dataplane
