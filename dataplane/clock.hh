/* TscClock: wall-clock nanoseconds from the TSC, for ports without usable
 * receive timestamps. One rdtsc and one 128-bit multiply: a few ns. */
#pragma once

#include <rte_cycles.h>

#include <cstdint>
#include <ctime>

namespace linecap::dataplane {

class TscClock {
public:
    TscClock() {
        hz_ = rte_get_tsc_hz();
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        base_tsc_ = rte_rdtsc();
        base_ns_ = static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + ts.tv_nsec;
        // ns = cycles * mult >> 32
        mult_ = static_cast<uint64_t>((static_cast<unsigned __int128>(1000000000ull) << 32) / hz_);
    }
    uint64_t now_ns() const { return to_ns(rte_rdtsc()); }
    uint64_t to_ns(uint64_t tsc) const {
        return base_ns_ + static_cast<uint64_t>(
                              (static_cast<unsigned __int128>(tsc - base_tsc_) * mult_) >> 32);
    }
    uint64_t hz() const { return hz_; }

private:
    uint64_t hz_, base_tsc_, base_ns_, mult_;
};

}  // namespace linecap::dataplane
