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

std::string list_sources(std::vector<std::string>& notes) {
    std::ostringstream out;
    int n = 1;
    std::error_code ec;
    // PCI network controllers (class 0x02xxxx), with the driver they are bound to.
    for (const auto& d : fs::directory_iterator("/sys/bus/pci/devices", ec)) {
        if (read_line(d.path() / "class").rfind("0x02", 0) != 0) continue;
        std::string driver = "none";
        fs::path link = d.path() / "driver";
        if (fs::is_symlink(link, ec)) driver = fs::read_symlink(link, ec).filename().string();
        bool dpdk = driver == "vfio-pci" || driver == "uio_pci_generic" || driver == "igb_uio";
        out << n++ << "." << d.path().filename().string() << " (PCI, driver " << driver
            << (dpdk ? ", usable" : ", bind to vfio-pci to use") << ")\n";
    }
    for (const auto& d : fs::directory_iterator("/sys/class/net", ec)) {
        std::string name = d.path().filename().string();
        std::string state = read_line(d.path() / "operstate");
        out << n++ << ".af_packet:" << name << " (kernel interface, " << state << "; also af_xdp:"
            << name << ")\n";
    }
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
            out << n++ << ".af_packet:" << at << " (interface in network namespace " << name << ", "
                << flags_state(i.flags) << "; also af_xdp:" << at << ")\n";
        }
    }
    out << n++ << ".pcap:FILE[,loop] (capture file)\n";
    out << n++ << ".null[:SIZE] (synthetic packets)\n";
    return out.str();
}

}  // namespace linecap::dataplane
