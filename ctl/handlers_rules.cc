#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <optional>

#include "ctl/handlers.hh"
#include "filters/bpf_object.hh"

namespace linecap::ctl {
namespace {

/* eBPF objects named over the socket. A peer with capd's own rights (root or
 * capd's user) may name any path, as on capd's command line. Any other
 * member of the control group may only name an object in --bpf-dir, by file
 * name: capd opens it in that directory and nowhere else, so a name can
 * neither read nor probe a file the member could not, and no message says
 * anything about a path outside the directory. Either way the file is
 * opened once (read_object_file(): no symbolic link, no FIFO, size cap) and
 * the loaded program travels in the RuleSpec, so later rule changes never
 * reopen it. Returns the refusal, if any. */
std::optional<Response> attach_object(const Request& req, const HandlerOptions& o,
                                      filters::RuleSpec& r) {
    if (r.bpf_object.empty()) return std::nullopt;
    const bool privileged = req.peer_uid == 0 || req.peer_uid == static_cast<long long>(geteuid());
    if (privileged) {
        auto prog = filters::load_bpf_object(r.bpf_object);
        if (!prog) return Response::error(EINVAL, "rule '" + r.name + "': " + prog.error());
        r.bpf_program = std::make_shared<const filters::BpfProgram>(std::move(*prog));
        return std::nullopt;
    }
    if (o.bpf_dir.empty())
        return Response::error(EACCES,
                               "rule '" + r.name +
                                   "': only root may name an eBPF object file; capd --bpf-dir DIR "
                                   "lets the control group load the objects in DIR by name");
    const std::string spec = r.bpf_object;
    const size_t colon = spec.find(':');
    const std::string name = spec.substr(0, colon);
    const std::string program = colon == std::string::npos ? "" : spec.substr(colon + 1);
    if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos)
        return Response::error(EACCES, "rule '" + r.name + "': name an object in " + o.bpf_dir +
                                           " by its file name (NAME[:PROGRAM], no '/'); only "
                                           "root may give a path");
    const std::string label = o.bpf_dir + "/" + name;
    const int dir = open(o.bpf_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0)
        return Response::error(EIO, "rule '" + r.name + "': --bpf-dir " + o.bpf_dir +
                                        ": cannot open: " + std::strerror(errno));
    auto image = filters::read_object_file(dir, name);
    close(dir);
    if (!image)
        return Response::error(
            EINVAL, "rule '" + r.name + "': bpf object '" + label + "': " + image.error());
    auto prog = filters::load_bpf_object_image(std::move(*image), label, program);
    if (!prog) return Response::error(EINVAL, "rule '" + r.name + "': " + prog.error());
    r.bpf_object = label + (program.empty() ? "" : ":" + program);
    r.bpf_program = std::make_shared<const filters::BpfProgram>(std::move(*prog));
    return std::nullopt;
}

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

void register_rules_handlers(HandlerTable& t, dataplane::Pipeline& p, const HandlerOptions& o) {
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
    t["rules.add"] = [&p, o](const Request& req) {
        filters::RuleSpec r;
        std::string err;
        if (!rule_from_args(req.args, r, err)) return Response::error(EINVAL, err);
        auto rules = p.rules();
        for (const auto& x : rules)
            if (x.name == r.name)
                return Response::error(EEXIST, "rule '" + r.name + "' exists; use rules replace");
        if (auto refused = attach_object(req, o, r)) return *refused;
        rules.push_back(r);
        return apply(p, std::move(rules), "rule '" + r.name + "' added");
    };
    t["rules.replace"] = [&p, o](const Request& req) {
        filters::RuleSpec r;
        std::string err;
        if (!rule_from_args(req.args, r, err)) return Response::error(EINVAL, err);
        if (auto refused = attach_object(req, o, r)) return *refused;
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
