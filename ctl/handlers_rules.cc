#include <cerrno>

#include "ctl/handlers.hh"

namespace linecap::ctl {
namespace {

/* Reads a rule from request arguments: name, expression, patterns, scan. */
bool rule_from_args(const nlohmann::json& a, filters::RuleSpec& r, std::string& err) {
    if (!a.contains("name") || !a["name"].is_string() || a["name"].get<std::string>().empty()) {
        err = "a rule needs a \"name\"";
        return false;
    }
    r.name = a["name"].get<std::string>();
    if (r.name.size() > 64 || r.name.find_first_of(" \t\n\"") != std::string::npos) {
        err = "rule name '" + r.name + "': at most 64 characters, no spaces or quotes";
        return false;
    }
    r.expression = a.value("expression", "");
    if (a.contains("patterns")) {
        if (!a["patterns"].is_array()) {
            err = "\"patterns\" must be an array of strings";
            return false;
        }
        for (const auto& p : a["patterns"]) {
            if (!p.is_string()) {
                err = "\"patterns\" must be an array of strings";
                return false;
            }
            r.patterns.push_back(p.get<std::string>());
        }
    }
    std::string scan = a.value("scan", "payload");
    if (scan != "payload" && scan != "frame") {
        err = "\"scan\" must be payload or frame";
        return false;
    }
    r.scope = scan == "frame" ? filters::ScanScope::kFrame : filters::ScanScope::kPayload;
    r.bpf_object = a.value("bpf_object", "");
    return true;
}

nlohmann::json rule_json(const filters::RuleSpec& r) {
    return {{"name", r.name},
            {"expression", r.expression},
            {"patterns", r.patterns},
            {"scan", r.scope == filters::ScanScope::kFrame ? "frame" : "payload"},
            {"bpf_object", r.bpf_object}};
}

Response apply(dataplane::Pipeline& p, std::vector<filters::RuleSpec> rules, std::string done) {
    Status s = p.replace_rules(std::move(rules));
    if (!s) return Response::error(EINVAL, s.error());
    return Response::ok(std::move(done));
}

}  // namespace

void register_rules_handlers(HandlerTable& t, dataplane::Pipeline& p) {
    t["rules.list"] = [&p](const Request&) {
        nlohmann::json list = nlohmann::json::array();
        auto sum = p.collect();
        for (const auto& r : p.rules()) {
            nlohmann::json j = rule_json(r);
            for (const auto& c : sum.rules)
                if (c.name == r.name) {
                    j["packets"] = c.packets;
                    j["bytes"] = c.bytes;
                }
            list.push_back(j);
        }
        return Response::ok("OK", {{"rules", list}});
    };
    t["rules.add"] = [&p](const Request& req) {
        filters::RuleSpec r;
        std::string err;
        if (!rule_from_args(req.args, r, err)) return Response::error(EINVAL, err);
        auto rules = p.rules();
        for (const auto& x : rules)
            if (x.name == r.name)
                return Response::error(EEXIST, "rule '" + r.name + "' exists; use rules replace");
        rules.push_back(r);
        return apply(p, std::move(rules), "rule '" + r.name + "' added");
    };
    t["rules.replace"] = [&p](const Request& req) {
        filters::RuleSpec r;
        std::string err;
        if (!rule_from_args(req.args, r, err)) return Response::error(EINVAL, err);
        auto rules = p.rules();
        for (auto& x : rules)
            if (x.name == r.name) {
                x = r;
                return apply(p, std::move(rules), "rule '" + r.name + "' replaced");
            }
        return Response::error(ENOENT, "no rule named '" + r.name + "'");
    };
    t["rules.del"] = [&p](const Request& req) {
        std::string name = req.args.value("name", "");
        auto rules = p.rules();
        for (auto it = rules.begin(); it != rules.end(); ++it)
            if (it->name == name) {
                rules.erase(it);
                return apply(p, std::move(rules),
                             "rule '" + name + "' deleted" +
                                 (rules.empty() ? "; no rule left: every packet is captured, as with no filter" : ""));
            }
        return Response::error(ENOENT, "no rule named '" + name + "'");
    };
}

}  // namespace linecap::ctl
