/* What the FlowTable tests (flow_table_test.cc, flow_tcp_test.cc) share: a
 * table made from a config, and a frame parsed and offered to it as a worker
 * does. Test code: one thread, allocation allowed. */
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "dataplane/flow_table.hh"

namespace linecap::dataplane::testing {

/* The table for c; a test failure and nullptr when create() refuses it. */
inline std::unique_ptr<FlowTable> table(const FlowConfig& c) {
    auto t = FlowTable::create(c);
    if (!t) ADD_FAILURE() << t.error();
    return t ? std::move(*t) : nullptr;
}

/* Frame f (link type lt, captured whole) parsed as a worker parses it. */
inline FlowPacket parsed(const std::vector<uint8_t>& f, uint16_t lt = 1) {
    FlowPacket p;
    parse_flow(lt, f.data(), uint32_t(f.size()), p);
    return p;
}

/* The table's verdict on f (parsed as p) at ts, under its own cutoff. */
inline FlowTable::Verdict verdict(FlowTable& t, const FlowPacket& p, const std::vector<uint8_t>& f,
                                  uint64_t ts) {
    return t.packet(p, f.data(), uint32_t(f.size()), uint32_t(f.size()), ts);
}

}  // namespace linecap::dataplane::testing
