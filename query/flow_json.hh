/* The JSON of one flow, shared by `capq --flows --json` and
 * `capq --fleet URL --flows --json`; defined in query/commands.cc. */
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>

#include "index/flow_key.hh"

namespace linecap::query {

/* One flow as `--flows --json` prints it (capq's and the catalogue's):
 * "flow", "directions" (always "both": src/sport is the conversation's
 * lower endpoint, not the sender), first/last (RFC 3339 and ns), packets,
 * bytes, and the key's fields (proto, src, dst, ports, ethertype, vlan). */
nlohmann::json flow_json(const index::FlowKey& key, uint64_t first_ns, uint64_t last_ns,
                         uint64_t packets, uint64_t bytes);

}  // namespace linecap::query
