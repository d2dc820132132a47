/* capd -D: the capture sources this host offers, and -i NUMBER. */
#pragma once

#include <string>
#include <vector>

#include "common/result.hh"

namespace linecap::dataplane {

/* One entry of capd -D. */
struct ListedSource {
    std::string name;        // what -i takes: "eth0", "0000:01:00.0", "af_packet:eth0@netns=blue"
    std::string note;        // what it is, shown in parentheses
    bool selectable = true;  // -i NUMBER may name it (not the pcap:/null templates)
};

/* DPDK-capable PCI network devices, the kernel interfaces of capd's network
 * namespace by bare name (each says the af_packet: source it maps to), the
 * `any` device, the interfaces inside each named network namespace
 * (/run/netns/NAME, as af_packet:IFACE@netns=NAME), then the file and null
 * forms. Reads /sys and enters each named namespace on the calling thread in
 * turn; needs no EAL. A namespace that cannot be listed (not permitted, say)
 * adds a line to `notes` instead. */
std::vector<ListedSource> listed_sources(std::vector<std::string>& notes);

/* The listing as capd -D prints it: "N.NAME (NOTE)" per line, from 1. */
std::string list_sources(std::vector<std::string>& notes);

/* tcpdump's -i NUMBER: the name of entry `number` (from 1) of capd -D.
 * Errors: no such entry, or an entry that is a template (pcap:FILE). */
Result<std::string> listed_source_by_number(unsigned long number);

}  // namespace linecap::dataplane
