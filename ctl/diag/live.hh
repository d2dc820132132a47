/* Live diagnosis: the same verdicts as `diagnose FILE`, computed from the
 * flow tables capd's workers keep.
 *
 * Each worker's flow table keeps TCP connection records fed with the
 * packets it accepted. On a `diagnose` request the control thread gets a
 * copy of every worker's records (dataplane/flow_table.hh) and calls
 * diagnose_tables(), which merges them into one DiagnoseReport: the text and JSON reports are then produced by
 * the same format_diagnose_text() and diagnose_json() as for files.
 *
 * Frame numbers: a live FrameRef is {source index, ordinal of the packet on
 * the source's receive queue}. For a `pcap:FILE` source (one queue) these
 * are the file's own frame numbers.
 *
 * Control-side code: allocates, runs on any thread, never throws for bad
 * input.
 */
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ctl/diag/diagnose.hh"
#include "packet/tcp_tracker.hh"

namespace linecap::ctl::diag {

/* Merges the workers' tables and diagnoses every connection in them. A
 * connection present in several tables (a port whose RSS hash sends the two
 * directions to different queues) is merged: each direction is taken from
 * the table that saw more of it (see merge_conn()). sources names the
 * capture sources by index, for frame labels. */
DiagnoseReport diagnose_tables(const std::vector<TableView>& tables,
                               const std::vector<std::string>& sources);

/* Folds b into a, where a and b are the same 5-tuple tracked by two workers
 * that each saw part of its packets. Exposed for tests. */
void merge_conn(TcpConn& a, const TcpConn& b);

}  // namespace linecap::ctl::diag
