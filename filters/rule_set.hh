/* Compiled rule sets: both sides, for code that compiles rules and hands
 * them on (capd's start-up, the pipeline, the control handlers).
 *
 * As Hyperscan's hs.h includes hs_compile.h and hs_runtime.h, this header
 * only includes the two halves:
 *   - rule_set_compile.hh: RuleSpec, CompileOptions, check_limits(),
 *     compile(): the control thread, once per rule change;
 *   - rule_set_run.hh: Packet, RuleSet, Scratch: what a worker holds and
 *     runs on every burst.
 * Worker code includes rule_set_run.hh only.
 */
#pragma once

#include "filters/rule_set_compile.hh"
#include "filters/rule_set_run.hh"
