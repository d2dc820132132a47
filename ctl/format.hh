/* Human and Prometheus renderings of capd's status and stats responses
 * (capctl side). Inputs are the "data" objects of the responses. */
#pragma once

#include <nlohmann/json.hpp>

#include <string>

namespace linecap::ctl {

std::string format_status(const nlohmann::json& status);
std::string format_stats(const nlohmann::json& stats);
std::string format_rules(const nlohmann::json& rules);
/* `capctl flows`: one line a flow, most bytes first. */
std::string format_flows(const nlohmann::json& flows);
/* Prometheus text exposition format, version 0.0.4. */
std::string format_prometheus(const nlohmann::json& stats);
/* Rates between two stats snapshots (prev may be null: rates are 0). */
nlohmann::json rates_json(const nlohmann::json& prev, const nlohmann::json& cur);
std::string format_top(const nlohmann::json& prev, const nlohmann::json& cur);

}  // namespace linecap::ctl
