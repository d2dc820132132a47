/* The stages at which capd loses packets, as one table. It drives the
 * end-of-run summary's text and JSON (dataplane/summary.cc) and capctl's text
 * and Prometheus output (ctl/format.cc); the JSON lists it as "drop_stages",
 * so scripts and tests read the names from there instead of keeping their
 * own copy. Header-only, no DPDK: ctl/ includes it too.
 *
 * Packets discarded on purpose are not losses and are not here: those
 * received while `capctl pause`d and those past -c are counted apart
 * (Summary::paused, Summary::over_limit; "packets_paused" and
 * "packets_over_limit" in the JSON). */
#pragma once

#include <cstdint>

namespace linecap::dataplane {

/* Packets lost, by stage. Filled by Pipeline::collect() on the control
 * thread from the ports' and the workers' and writers' counters. */
struct Drops {
    uint64_t nic_imissed = 0;
    uint64_t nic_ierrors = 0;
    uint64_t nic_nombuf = 0;
    uint64_t ring_full = 0;
    uint64_t writer_slow = 0;  // no free chunk: the writers are behind
    uint64_t disk = 0;         // write errors
    uint64_t total() const;
};

struct DropStage {
    /* The key in the JSON's "drops" and the Prometheus label value
     * (linecap_drops_total{stage="nic_imissed"}): one spelling for machines. */
    const char* name;
    /* In the summary's "capd: dropped N: nic-imissed 0, ..." line. */
    const char* label;
    /* Counted by the NIC, for packets capd never received; the other stages
     * lose packets after receipt, so received = filtered_out + over_limit +
     * paused + written + (the after-receipt stages). */
    bool before_receipt;
    const char* help;
    uint64_t Drops::*count;
};

/* In the order every output lists them. */
inline constexpr DropStage kDropStages[] = {
    {"nic_imissed", "nic-imissed", true,
     "the NIC had no free receive descriptor: the worker did not poll in time",
     &Drops::nic_imissed},
    {"nic_ierrors", "nic-ierrors", true, "frames the NIC received in error", &Drops::nic_ierrors},
    {"nic_nombuf", "nic-nombuf", true, "the NIC found no free packet buffer (mbuf)",
     &Drops::nic_nombuf},
    {"ring_full", "ring-full", false,
     "a full chunk could not be handed to its writer: the ring was full", &Drops::ring_full},
    {"writer_slow", "writer-slow", false,
     "no free chunk to copy into: the writers held every chunk", &Drops::writer_slow},
    {"disk", "disk", false, "packets lost to a failed write", &Drops::disk},
};

inline uint64_t Drops::total() const {
    uint64_t n = 0;
    for (const DropStage& st : kDropStages) n += this->*st.count;
    return n;
}

}  // namespace linecap::dataplane
