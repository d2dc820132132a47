/* Network namespaces for sources that capture in another one:
 * af_packet:IFACE@netns=NAME and af_packet:IFACE@pid=PID (af_xdp alike).
 *
 * The kernel gives a socket the network namespace of the thread that creates
 * it, and the af_packet and af_xdp PMDs create theirs, resolve the interface
 * index and set flags by interface name when the port is probed, configured
 * and started. So capd switches the calling thread into the target namespace
 * around those steps (NetnsScope) and back afterwards; the sockets stay bound
 * to the namespace they were made in, and the workers read them from the root
 * namespace. Only the calling thread moves: the workers, writers and EAL
 * threads never change namespace.
 *
 * Cold code, control thread only. Entering a namespace other than one's own
 * needs CAP_SYS_ADMIN; every error is a one-line message naming the source.
 */
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/result.hh"
#include "dataplane/options.hh"

namespace linecap::dataplane {

/* An open file descriptor to a network namespace (owned, closed on
 * destruction). */
class NetnsFd {
public:
    NetnsFd() = default;
    explicit NetnsFd(int fd, std::string label) : fd_(fd), label_(std::move(label)) {}
    NetnsFd(NetnsFd&& o) noexcept : fd_(o.fd_), label_(std::move(o.label_)) { o.fd_ = -1; }
    NetnsFd& operator=(NetnsFd&& o) noexcept;
    NetnsFd(const NetnsFd&) = delete;
    NetnsFd& operator=(const NetnsFd&) = delete;
    ~NetnsFd();

    int fd() const { return fd_; }
    bool valid() const { return fd_ >= 0; }
    /* How messages name it: "network namespace 'blue'" or "the network
     * namespace of process 1234". */
    const std::string& label() const { return label_; }

private:
    int fd_ = -1;
    std::string label_;
};

/* Opens the namespace a source names (/run/netns/NAME or /proc/PID/ns/net).
 * Errors: no such namespace, no such process, not a network namespace, not
 * permitted. The source must have in_netns(). */
Result<NetnsFd> open_netns(const SourceSpec& spec);

/* Opens /run/netns/NAME (for capd -D). */
Result<NetnsFd> open_named_netns(const std::string& name);

/* While alive, the calling thread is in the namespace given to enter(); the
 * destructor switches it back to the namespace it was in. When the target is
 * the thread's own namespace nothing is switched (and no privilege needed). */
class NetnsScope {
public:
    /* Errors: "cannot enter <label>: Operation not permitted (...)". */
    static Result<NetnsScope> enter(const NetnsFd& ns);
    NetnsScope(NetnsScope&& o) noexcept : back_(o.back_) { o.back_ = -1; }
    NetnsScope& operator=(NetnsScope&&) = delete;
    NetnsScope(const NetnsScope&) = delete;
    ~NetnsScope();

private:
    explicit NetnsScope(int back) : back_(back) {}
    int back_ = -1;  // the thread's own namespace, or -1 when not switched
};

/* For a source that names another namespace (in_netns()): opens it into
 * `ns` and moves the calling thread into it while `scope` lives. Does
 * nothing for other sources. Errors name the source. */
Status enter_source_netns(const SourceSpec& spec, NetnsFd& ns, std::optional<NetnsScope>& scope);

/* A kernel interface as seen from inside one namespace. */
struct NetIf {
    std::string name;
    unsigned flags = 0;  // IFF_UP, IFF_RUNNING, ...
};

/* The interfaces of the calling thread's current namespace, in index order. */
std::vector<NetIf> current_interfaces();

/* Pre-EAL check for an af_packet/af_xdp source: the interface exists, in the
 * source's namespace when it names one (which is opened and entered for the
 * look-up). Errors name the source and say which of namespace, process,
 * permission or interface is wrong. */
Status check_source_interface(const SourceSpec& spec);

/* The IPv4 netmask, host byte order, that filters of these sources compile
 * with (what `ip broadcast` and `net` without a mask use): the first kernel
 * interface's (af_packet/af_xdp, looked up in its namespace), as libpcap
 * documents; 0 when there is none or it has no IPv4 address, as tcpdump
 * uses for files. Never PCAP_NETMASK_UNKNOWN, which makes such filters
 * fail to compile. */
uint32_t filter_netmask(const std::vector<SourceSpec>& sources);

}  // namespace linecap::dataplane
