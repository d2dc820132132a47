/* Command-line front end shared by capdiag and capctl.
 *
 *   diagnose [--json] [--all] [--max-flows N] FILE...
 *   compare [--json] [--nat A_ADDR[:PORT]=B_ADDR[:PORT]]... [--ignore-ip-id]
 *           [--max-frames N] A.pcap B.pcap
 *   compare [those options] (--fleet-hosts A,B | --fleet URL --hosts A,B)
 *           --cert F --key F --ca F [--since T] [--until T] [--partial] [EXPRESSION]
 *
 * Each function takes the words after the command name, prints the report
 * on io.out and one line per problem on io.err ("PROG: x.pcap: empty file
 * (0 bytes), not a capture"), and returns the exit status:
 *   0  every input read completely (problems found in the traffic are not
 *      an error: they are the report);
 *   1  bad usage, or an input could not be read;
 *   2  an input was truncated, or (--partial) a host's answer was partial;
 *      the readable part was analysed.
 * compare with two hosts: a host unreachable, refused, over its cap or cut
 * off is one line and 1 (its missing packets would read as loss), unless
 * --partial, when the report names the partial side.
 */
#pragma once

#include <cstdio>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace linecap::ctl::diag {

struct CliIo {
    std::FILE* out = stdout;
    std::FILE* err = stderr;
    const char* prog = "capdiag"; /* prefix of error lines */
};

/* The words of one command, as CLI11 parsed them. Numbers are kept as text
 * and checked by run_*, so that a bad one is named in the command's words. */
struct DiagnoseArgs {
    bool json = false;
    bool all = false;
    bool help = false;
    std::string max_flows;
    std::vector<std::string> files;
};

struct CompareArgs {
    bool json = false;
    bool ignore_ip_id = false;
    bool help = false;
    std::vector<std::string> nat;
    std::string max_frames;
    std::vector<std::string> files; /* A.pcap B.pcap, or the query's EXPRESSION */
    /* The two sides as two hosts' answers to one query (fleet_fetch.hh):
     * --fleet-hosts ADDR:PORT,ADDR:PORT, or --fleet URL --hosts NAME,NAME
     * (the catalogue's host names); TLS files and the window as capq's. */
    std::string fleet_hosts;
    std::string fleet;
    std::string hosts;
    std::string fleet_tables;
    std::string cert, key, ca;
    std::string since, until;
    bool partial = false; /* compare a partial answer anyway, saying so */
};

/* Declare the command's options and operands on `app` (a CLI11 app or
 * subcommand: capdiag's and capctl's are the same), storing into `a`, which
 * must outlive the parse. -h/--help sets a.help instead of CLI11's help, so
 * that the command prints its own usage. Unknown options are left in
 * app.remaining() (allow_extras) for run_* to name. */
void add_diagnose_options(CLI::App& app, DiagnoseArgs& a);
void add_compare_options(CLI::App& app, CompareArgs& a);

/* Check the parsed words and run the command. `extras`: words the parse left
 * over (an unknown option is a usage error). */
int run_diagnose(const DiagnoseArgs& a, const std::vector<std::string>& extras,
                 const CliIo& io = {});
int run_compare(const CompareArgs& a, const std::vector<std::string>& extras, const CliIo& io = {});

/* Parse the words after the command name with CLI11 and run. */
int run_diagnose(const std::vector<std::string>& args, const CliIo& io = {});
int run_compare(const std::vector<std::string>& args, const CliIo& io = {});

/* capdiag's main: "capdiag diagnose ..." or "capdiag compare ...". */
int capdiag_main(int argc, char** argv);

extern const char* const kDiagnoseUsage;
extern const char* const kCompareUsage;

}  // namespace linecap::ctl::diag
