#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <optional>

#include "ctl/handlers.hh"
#include "dataplane/options.hh"
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
std::optional<Response> attach_object(const Request& req, const std::string& bpf_dir,
                                      filters::RuleSpec& r) {
    if (r.bpf_object.empty()) return std::nullopt;
    const bool privileged = req.peer_uid == 0 || req.peer_uid == static_cast<long long>(geteuid());
    if (privileged) {
        auto prog = filters::load_bpf_object(r.bpf_object);
        if (!prog) return Response::error(prog.failure(), "rule '" + r.name + "': ");
        r.bpf_program = std::make_shared<const filters::BpfProgram>(std::move(*prog));
        return std::nullopt;
    }
    if (bpf_dir.empty())
        return Response::error(EACCES,
                               "rule '" + r.name +
                                   "': only root may name an eBPF object file; capd --bpf-dir DIR "
                                   "lets the control group load the objects in DIR by name");
    const std::string spec = r.bpf_object;
    const size_t colon = spec.find(':');
    const std::string name = spec.substr(0, colon);
    const std::string program = colon == std::string::npos ? "" : spec.substr(colon + 1);
    if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos)
        return Response::error(EACCES, "rule '" + r.name + "': name an object in " + bpf_dir +
                                           " by its file name (NAME[:PROGRAM], no '/'); only "
                                           "root may give a path");
    const std::string label = bpf_dir + "/" + name;
    const int dir = open(bpf_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0)
        return Response::error(EIO, "rule '" + r.name + "': --bpf-dir " + bpf_dir +
                                        ": cannot open: " + std::strerror(errno));
    auto image = filters::read_object_file(dir, name);
    close(dir);
    if (!image)
        return Response::error(image.failure(),
                               "rule '" + r.name + "': bpf object '" + label + "': ");
    auto prog = filters::load_bpf_object_image(std::move(*image), label, program);
    if (!prog) return Response::error(prog.failure(), "rule '" + r.name + "': ");
    r.bpf_object = label + (program.empty() ? "" : ":" + program);
    r.bpf_program = std::make_shared<const filters::BpfProgram>(std::move(*prog));
    return std::nullopt;
}

/* Reads a rule from request arguments: name, expression, patterns, scan.
 * Errors are EINVAL. */
Result<filters::RuleSpec> rule_from_args(const nlohmann::json& a) {
    if (!a.contains("name") || !a["name"].is_string() || a["name"].get<std::string>().empty())
        return make_error(EINVAL, "a rule needs a \"name\"");
    filters::RuleSpec r;
    r.name = a["name"].get<std::string>();
    if (r.name.size() > 64 || r.name.find_first_of(" \t\n\"") != std::string::npos)
        return make_error(EINVAL,
                          "rule name '" + r.name + "': at most 64 characters, no spaces or quotes");
    r.expression = a.value("expression", "");
    if (a.contains("patterns")) {
        if (!a["patterns"].is_array())
            return make_error(EINVAL, "\"patterns\" must be an array of strings");
        for (const auto& p : a["patterns"]) {
            if (!p.is_string())
                return make_error(EINVAL, "\"patterns\" must be an array of strings");
            r.patterns.push_back(p.get<std::string>());
        }
    }
    std::string scan = a.value("scan", "payload");
    if (scan != "payload" && scan != "frame")
        return make_error(EINVAL, "\"scan\" must be payload or frame");
    r.scope = scan == "frame" ? filters::ScanScope::kFrame : filters::ScanScope::kPayload;
    r.bpf_object = a.value("bpf_object", "");
    // The rule's own flow cutoff: "flow_cutoff" bytes (a number, or text
    // such as "20k") and/or "flow_packets"; either set, the rule's packets
    // take these two (the one not given: no limit) instead of capd's.
    if (a.contains("flow_cutoff")) {
        const auto& v = a["flow_cutoff"];
        std::string text = v.is_string()            ? v.get<std::string>()
                           : v.is_number_unsigned() ? std::to_string(v.get<uint64_t>())
                                                    : std::string("?");
        auto b = dataplane::parse_flow_bytes(text);
        if (!b) return make_error(EINVAL, "rule '" + r.name + "': " + b.error());
        r.flow_cutoff_set = true;
        r.flow_cutoff_bytes = *b;
    }
    if (a.contains("flow_packets")) {
        const auto& v = a["flow_packets"];
        if (!v.is_number_unsigned() || v.get<uint64_t>() == 0 || v.get<uint64_t>() > 1000000000)
            return make_error(
                EINVAL,
                "rule '" + r.name + "': --flow-packets: 1..1000000000 packets, not " + v.dump());
        r.flow_cutoff_set = true;
        r.flow_cutoff_packets = v.get<uint64_t>();
    }
    return r;
}

nlohmann::json rule_json(const filters::RuleSpec& r) {
    nlohmann::json j = {{"name", r.name},
                        {"expression", r.expression},
                        {"patterns", r.patterns},
                        {"scan", r.scope == filters::ScanScope::kFrame ? "frame" : "payload"},
                        {"bpf_object", r.bpf_object}};
    if (r.flow_cutoff_set) {
        j["flow_cutoff"] = r.flow_cutoff_bytes;
        j["flow_packets"] = r.flow_cutoff_packets;
    }
    return j;
}

/* A rule's own cutoff needs the workers' flow tables. */
std::optional<Response> needs_flow_table(const dataplane::Pipeline& p, const filters::RuleSpec& r) {
    if (!r.flow_cutoff_set || p.has_flow_tables()) return std::nullopt;
    return Response::error(ENOTSUP, "rule '" + r.name +
                                        "': a flow cutoff needs capd's flow table: start capd "
                                        "with --flow-table N (or --flow-cutoff, --flow-packets, "
                                        "--dedup)");
}

/* Control-thread state of the rules handlers. */
struct RulesState {
    // From submit until the new set is installed (or refused). One change at
    // a time: one computed meanwhile from the set still in force would undo
    // this one when it lands.
    bool changing = false;
};

/* Compiles `rules` on the CompileWorker and, back on the control thread,
 * swaps them in and answers `done`. The caps are checked first, here, so an
 * oversized request costs nothing more. */
void apply(HandlerContext ctx, const std::shared_ptr<RulesState>& state,
           std::vector<filters::RuleSpec> rules, std::string done, Deferred reply) {
    if (state->changing) {
        reply.complete([] {
            return Response::error(EBUSY,
                                   "another rules change is being compiled; try again when "
                                   "it is done (capctl status shows the rule generation)");
        });
        return;
    }
    Status within = filters::check_limits(rules, ctx.pipeline.compile_options().limits);
    if (!within) {
        reply.complete([e = within.failure()] { return Response::error(e); });  // E2BIG
        return;
    }
    // std::function needs a copyable callable; the Deferred is move-only.
    auto shared_reply = std::make_shared<Deferred>(std::move(reply));
    auto specs = std::make_shared<std::vector<filters::RuleSpec>>(rules);
    dataplane::Pipeline* p = &ctx.pipeline;
    state->changing = true;
    bool started = ctx.compiler.submit(
        std::move(rules), ctx.pipeline.compile_options(), ctx.pipeline.rule_set(),
        [shared_reply, specs, p, done, state](Result<std::shared_ptr<const filters::RuleSet>> r) {
            // Compile thread: nothing here may touch the pipeline or state.
            shared_reply->complete([r, specs, p, done, state]() mutable {
                state->changing = false;
                if (!r) return Response::error(r.failure());
                Status s = p->install_rules(std::move(*specs), *r);
                if (!s) return Response::error(EIO, s.error());
                return Response::ok(done);
            });
        });
    if (!started) {
        state->changing = false;
        shared_reply->complete([] { return Response::error(EBUSY, "capd is stopping"); });
    }
}

}  // namespace

void register_rules_handlers(Handlers& t, HandlerContext ctx) {
    dataplane::Pipeline& p = ctx.pipeline;
    auto state = std::make_shared<RulesState>();
    t.sync["rules.list"] = [&p](const Request&) {
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
    t.async["rules.add"] = [ctx, state](const Request& req, Deferred reply) {
        Result<filters::RuleSpec> parsed = rule_from_args(req.args);
        if (!parsed) return reply.complete([e = parsed.failure()] { return Response::error(e); });
        filters::RuleSpec& r = *parsed;
        if (auto refused = needs_flow_table(ctx.pipeline, r))
            return reply.complete([resp = *refused] { return resp; });
        auto rules = ctx.pipeline.rules();
        for (const auto& x : rules)
            if (x.name == r.name)
                return reply.complete([name = r.name] {
                    return Response::error(EEXIST, "rule '" + name + "' exists; use rules replace");
                });
        if (auto refused = attach_object(req, ctx.bpf_dir, r))
            return reply.complete([resp = *refused] { return resp; });
        rules.push_back(r);
        apply(ctx, state, std::move(rules), "rule '" + r.name + "' added", std::move(reply));
    };
    t.async["rules.replace"] = [ctx, state](const Request& req, Deferred reply) {
        Result<filters::RuleSpec> parsed = rule_from_args(req.args);
        if (!parsed) return reply.complete([e = parsed.failure()] { return Response::error(e); });
        filters::RuleSpec& r = *parsed;
        if (auto refused = needs_flow_table(ctx.pipeline, r))
            return reply.complete([resp = *refused] { return resp; });
        if (auto refused = attach_object(req, ctx.bpf_dir, r))
            return reply.complete([resp = *refused] { return resp; });
        auto rules = ctx.pipeline.rules();
        for (auto& x : rules)
            if (x.name == r.name) {
                x = r;
                return apply(ctx, state, std::move(rules), "rule '" + r.name + "' replaced",
                             std::move(reply));
            }
        reply.complete(
            [name = r.name] { return Response::error(ENOENT, "no rule named '" + name + "'"); });
    };
    t.async["rules.del"] = [ctx, state](const Request& req, Deferred reply) {
        std::string name = req.args.value("name", "");
        auto rules = ctx.pipeline.rules();
        for (auto it = rules.begin(); it != rules.end(); ++it)
            if (it->name == name) {
                rules.erase(it);
                std::string done = "rule '" + name + "' deleted";
                if (rules.empty())
                    done += "; no rule left: every packet is captured, as with no filter";
                return apply(ctx, state, std::move(rules), std::move(done), std::move(reply));
            }
        reply.complete([name] { return Response::error(ENOENT, "no rule named '" + name + "'"); });
    };
}

}  // namespace linecap::ctl
