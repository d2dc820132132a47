/* capd -D: the capture sources this host offers. */
#pragma once

#include <string>

namespace linecap::dataplane {

/* DPDK-capable PCI network devices and kernel interfaces, one per line, in
 * the -i spelling that selects them. Reads /sys only; needs no EAL. */
std::string list_sources();

}  // namespace linecap::dataplane
