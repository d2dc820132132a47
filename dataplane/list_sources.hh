/* capd -D: the capture sources this host offers. */
#pragma once

#include <string>
#include <vector>

namespace linecap::dataplane {

/* DPDK-capable PCI network devices, kernel interfaces, and the interfaces
 * inside each named network namespace (/run/netns/NAME, as IFACE@netns=NAME),
 * one per line, in the -i spelling that selects them. Reads /sys and enters
 * each named namespace on the calling thread in turn; needs no EAL. A
 * namespace that cannot be listed (not permitted, say) adds a line to
 * `notes` instead. */
std::string list_sources(std::vector<std::string>& notes);

}  // namespace linecap::dataplane
