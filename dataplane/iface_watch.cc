#include "dataplane/iface_watch.hh"

#include <linux/if_packet.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace linecap::dataplane {

InterfaceWatch& InterfaceWatch::operator=(InterfaceWatch&& o) noexcept {
    if (this != &o) {
        if (fd_ >= 0) ::close(fd_);
        fd_ = o.fd_;
        o.fd_ = -1;
    }
    return *this;
}

InterfaceWatch::~InterfaceWatch() {
    if (fd_ >= 0) ::close(fd_);
}

Result<InterfaceWatch> InterfaceWatch::open(const std::string& iface, bool promisc) {
    unsigned ifindex = if_nametoindex(iface.c_str());
    if (ifindex == 0) return make_error("interface '" + iface + "': " + std::strerror(errno));
    InterfaceWatch w;
    // Protocol 0: bound to the interface, but no frame is ever queued on it.
    w.fd_ = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
    if (w.fd_ < 0) return make_error(std::string("AF_PACKET socket: ") + std::strerror(errno));
    sockaddr_ll sll;
    std::memset(&sll, 0, sizeof(sll));
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = 0;
    sll.sll_ifindex = static_cast<int>(ifindex);
    if (bind(w.fd_, reinterpret_cast<sockaddr*>(&sll), sizeof(sll)) != 0)
        return make_error("bind to '" + iface + "': " + std::strerror(errno));
    if (promisc) {
        packet_mreq mr;
        std::memset(&mr, 0, sizeof(mr));
        mr.mr_ifindex = static_cast<int>(ifindex);
        mr.mr_type = PACKET_MR_PROMISC;
        if (setsockopt(w.fd_, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof(mr)) != 0)
            return make_error("promiscuous mode on '" + iface + "': " + std::strerror(errno));
    }
    return w;
}

LinkState InterfaceWatch::state() const {
    if (fd_ < 0) return LinkState::kUp;
    sockaddr_ll sll;
    socklen_t len = sizeof(sll);
    std::memset(&sll, 0, sizeof(sll));
    if (getsockname(fd_, reinterpret_cast<sockaddr*>(&sll), &len) != 0) return LinkState::kUp;
    // The kernel's packet_notifier sets -1 when the interface is unregistered.
    if (sll.sll_ifindex <= 0) return LinkState::kGone;
    // The socket's namespace answers these, whatever this thread's is.
    ifreq ifr;
    std::memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_ifindex = sll.sll_ifindex;
    if (ioctl(fd_, SIOCGIFNAME, &ifr) != 0)
        return errno == ENODEV ? LinkState::kGone : LinkState::kUp;
    if (ioctl(fd_, SIOCGIFFLAGS, &ifr) != 0)
        return errno == ENODEV ? LinkState::kGone : LinkState::kUp;
    bool up = (ifr.ifr_flags & IFF_UP) && (ifr.ifr_flags & IFF_RUNNING);
    return up ? LinkState::kUp : LinkState::kDown;
}

}  // namespace linecap::dataplane
