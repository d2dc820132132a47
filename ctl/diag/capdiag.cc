/* capdiag: TCP diagnosis and two-point comparison of capture files.
 *
 *   capdiag diagnose [--json] [--all] [--max-flows N] FILE...
 *   capdiag compare [--json] [--nat A_ADDR=B_ADDR]... A.pcap B.pcap
 *
 * The commands live in the diag library (ctl/diag/cli.hh) so that capctl
 * can offer the same ones.
 */
#include "ctl/diag/cli.hh"

int main(int argc, char** argv) { return linecap::ctl::diag::capdiag_main(argc, argv); }
