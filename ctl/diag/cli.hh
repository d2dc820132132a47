/* Command-line front end shared by capdiag and capctl.
 *
 *   diagnose [--json] [--all] [--max-flows N] FILE...
 *   compare [--json] [--nat A_ADDR[:PORT]=B_ADDR[:PORT]]... [--ignore-ip-id]
 *           [--max-frames N] A.pcap B.pcap
 *
 * Each function takes the words after the command name, prints the report
 * on io.out and one line per problem on io.err ("PROG: x.pcap: empty file
 * (0 bytes), not a capture"), and returns the exit status:
 *   0  every input read completely (problems found in the traffic are not
 *      an error: they are the report);
 *   1  bad usage, or an input could not be read;
 *   2  an input was truncated; the readable part was analysed.
 */
#pragma once

#include <cstdio>
#include <string>
#include <vector>

namespace linecap::ctl::diag {

struct CliIo {
    std::FILE* out = stdout;
    std::FILE* err = stderr;
    const char* prog = "capdiag"; /* prefix of error lines */
};

int run_diagnose(const std::vector<std::string>& args, const CliIo& io = {});
int run_compare(const std::vector<std::string>& args, const CliIo& io = {});

/* capdiag's main: "capdiag diagnose ..." or "capdiag compare ...". */
int capdiag_main(int argc, char** argv);

extern const char* const kDiagnoseUsage;
extern const char* const kCompareUsage;

}  // namespace linecap::ctl::diag
