/* Watching a kernel interface that a source captures on: was it deleted,
 * is its link down?
 *
 * An InterfaceWatch is an AF_PACKET socket bound to the interface with
 * protocol 0, so it receives nothing. When the interface is unregistered
 * the kernel sets the interface index of every packet socket bound to it to
 * -1 (getsockname shows it), and the socket keeps the network namespace it
 * was made in, so the check works from any thread, in any namespace, and
 * after -Z has dropped root. It can also hold the interface in promiscuous
 * mode (PACKET_MR_PROMISC): the kernel counts that per socket and drops it
 * when the socket closes, even after kill -9, where setting IFF_PROMISC
 * would outlive capd.
 *
 * open(): cold, on the thread that is inside the source's namespace.
 * state(): the control thread, a few times a second; two or three
 * syscalls, nothing on the workers' path.
 */
#pragma once

#include <cstdint>
#include <string>

#include "common/result.hh"

namespace linecap::dataplane {

/* A kernel interface as a source sees it. kDown: it exists but is
 * administratively down or has no carrier (no frames arrive until it comes
 * back); kGone: it was deleted (for good: an interface made again under
 * the same name is another interface). */
enum class LinkState : uint8_t { kUp, kDown, kGone };

class InterfaceWatch {
public:
    InterfaceWatch() = default;
    InterfaceWatch(InterfaceWatch&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
    InterfaceWatch& operator=(InterfaceWatch&& o) noexcept;
    InterfaceWatch(const InterfaceWatch&) = delete;
    InterfaceWatch& operator=(const InterfaceWatch&) = delete;
    ~InterfaceWatch();

    /* Watches `iface` in the calling thread's network namespace; with
     * `promisc`, also holds it in promiscuous mode while the watch lives.
     * Errors: no such interface, no AF_PACKET socket (not root), the
     * promiscuous request refused. */
    static Result<InterfaceWatch> open(const std::string& iface, bool promisc);

    bool valid() const { return fd_ >= 0; }
    /* kUp when not valid(). */
    LinkState state() const;

private:
    int fd_ = -1;
};

}  // namespace linecap::dataplane
