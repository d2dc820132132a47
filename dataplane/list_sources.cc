#include "dataplane/list_sources.hh"

#include <filesystem>
#include <fstream>
#include <sstream>

namespace linecap::dataplane {
namespace fs = std::filesystem;

namespace {
std::string read_line(const fs::path& p) {
    std::ifstream in(p);
    std::string s;
    std::getline(in, s);
    return s;
}
}  // namespace

std::string list_sources() {
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
    out << n++ << ".pcap:FILE[,loop] (capture file)\n";
    out << n++ << ".null[:SIZE] (synthetic packets)\n";
    return out.str();
}

}  // namespace linecap::dataplane
