#include "dataplane/netns.hh"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/nsfs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace linecap::dataplane {
namespace {

const char* const kNotPermitted =
    "not permitted (capturing in another network namespace needs root or CAP_SYS_ADMIN)";

bool is_permission(int err) { return err == EPERM || err == EACCES; }

/* Opens a namespace file and makes sure it is a network namespace. `missing`
 * is the message for ENOENT. */
Result<NetnsFd> open_ns_file(const std::string& path, const std::string& label,
                             const std::string& missing) {
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        if (err == ENOENT) return make_error(missing);
        if (is_permission(err))
            return make_error(label + ": not permitted (" + path + ": " + std::strerror(err) + ")");
        return make_error(label + ": " + path + ": " + std::strerror(err));
    }
    NetnsFd ns(fd, label);
    // A stray file in /run/netns (say, left by a namespace that was deleted
    // while mounted elsewhere) is not something setns() can enter.
    int type = ioctl(fd, NS_GET_NSTYPE);
    if (type < 0 || type != CLONE_NEWNET)
        return make_error(label + ": " + path + " is not a network namespace");
    return ns;
}

}  // namespace

NetnsFd& NetnsFd::operator=(NetnsFd&& o) noexcept {
    if (this != &o) {
        if (fd_ >= 0) close(fd_);
        fd_ = o.fd_;
        label_ = std::move(o.label_);
        o.fd_ = -1;
    }
    return *this;
}

NetnsFd::~NetnsFd() {
    if (fd_ >= 0) close(fd_);
}

Result<NetnsFd> open_named_netns(const std::string& name) {
    std::string label = "network namespace '" + name + "'";
    return open_ns_file("/run/netns/" + name, label,
                        "no such " + label + " (`ip netns list` shows the names)");
}

Result<NetnsFd> open_netns(const SourceSpec& spec) {
    Result<NetnsFd> ns = make_error("no namespace");
    if (!spec.netns.empty()) {
        ns = open_named_netns(spec.netns);
    } else {
        std::string pid = std::to_string(spec.netns_pid);
        struct stat st;
        if (stat(("/proc/" + pid).c_str(), &st) != 0)
            ns = make_error("no such process " + pid);
        else
            ns = open_ns_file("/proc/" + pid + "/ns/net", "the network namespace of process " + pid,
                              "no such process " + pid);
    }
    if (!ns) return make_error("source '" + spec.text + "': " + ns.error());
    return ns;
}

Result<NetnsScope> NetnsScope::enter(const NetnsFd& ns) {
    int back = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (back < 0)
        return make_error(std::string("cannot open this thread's network namespace: ") +
                          std::strerror(errno));
    struct stat here, there;
    if (fstat(back, &here) == 0 && fstat(ns.fd(), &there) == 0 && here.st_dev == there.st_dev &&
        here.st_ino == there.st_ino) {
        close(back);
        return NetnsScope(-1);
    }
    if (setns(ns.fd(), CLONE_NEWNET) != 0) {
        int err = errno;
        close(back);
        return make_error("cannot enter " + ns.label() + ": " +
                          (is_permission(err) ? kNotPermitted : std::strerror(err)));
    }
    return NetnsScope(back);
}

NetnsScope::~NetnsScope() {
    if (back_ < 0) return;
    // Staying in the other namespace would put every later socket (and the
    // next source's look-ups) in the wrong place: that is not survivable.
    if (setns(back_, CLONE_NEWNET) != 0) {
        std::fprintf(stderr, "capd: cannot return to the original network namespace: %s\n",
                     std::strerror(errno));
        std::abort();
    }
    close(back_);
}

std::vector<NetIf> current_interfaces() {
    std::vector<NetIf> out;
    struct if_nameindex* list = if_nameindex();
    if (!list) return out;
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    for (struct if_nameindex* i = list; i->if_index != 0 && i->if_name; i++) {
        NetIf n;
        n.name = i->if_name;
        struct ifreq ifr {};
        std::strncpy(ifr.ifr_name, i->if_name, IFNAMSIZ - 1);
        if (s >= 0 && ioctl(s, SIOCGIFFLAGS, &ifr) == 0)
            n.flags = static_cast<unsigned short>(ifr.ifr_flags);
        out.push_back(std::move(n));
    }
    if (s >= 0) close(s);
    if_freenameindex(list);
    return out;
}

Status enter_source_netns(const SourceSpec& spec, NetnsFd& ns, std::optional<NetnsScope>& scope) {
    if (!spec.in_netns()) return Status::success();
    auto opened = open_netns(spec);
    if (!opened) return make_error(opened.error());
    ns = std::move(*opened);
    auto entered = NetnsScope::enter(ns);
    if (!entered) return make_error("source '" + spec.text + "': " + entered.error());
    scope.emplace(std::move(*entered));
    return Status::success();
}

uint32_t filter_netmask(const std::vector<SourceSpec>& sources) {
    for (const SourceSpec& spec : sources) {
        if (spec.kind != SourceSpec::Kind::kAfPacket && spec.kind != SourceSpec::Kind::kAfXdp)
            continue;
        NetnsFd ns;
        std::optional<NetnsScope> scope;
        if (!enter_source_netns(spec, ns, scope)) return 0;
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0) return 0;
        ifreq ifr{};
        std::snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", spec.arg.c_str());
        uint32_t mask = 0;
        if (ioctl(fd, SIOCGIFNETMASK, &ifr) == 0)
            mask = ntohl(reinterpret_cast<const sockaddr_in*>(&ifr.ifr_netmask)->sin_addr.s_addr);
        close(fd);
        return mask;
    }
    return 0;
}

Status check_source_interface(const SourceSpec& spec) {
    if (!spec.in_netns()) {
        if (spec.any_interface()) return Status::success();
        if (if_nametoindex(spec.arg.c_str()) != 0) return Status::success();
        if (!spec.bare) return make_error("source '" + spec.text + "': no such interface");
        // -i NAME: say what a bare name is taken for, and spot a file.
        struct stat st;
        bool file = stat(spec.arg.c_str(), &st) == 0 && S_ISREG(st.st_mode);
        return make_error("-i " + spec.arg + ": no such interface" +
                          (file ? " (for a capture file write pcap:" + spec.arg + ")"
                                : " (a bare name is a kernel interface; capd -D lists them)"));
    }
    NetnsFd ns;
    std::optional<NetnsScope> scope;
    Status entered = enter_source_netns(spec, ns, scope);
    if (!entered) return entered;
    if (spec.any_interface()) return Status::success();
    if (if_nametoindex(spec.arg.c_str()) == 0)
        return make_error("source '" + spec.text + "': no such interface '" + spec.arg + "' in " +
                          ns.label());
    return Status::success();
}

}  // namespace linecap::dataplane
