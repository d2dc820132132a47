#!/bin/sh
# Builds the libFuzzer targets with clang, ASan and UBSan, and runs each for
# FUZZ_SECONDS (default 30) on a copy of its committed corpus in tests/fuzz/.
# A crash leaves its input in build-fuzz/crashes/ and fails the script.
set -eu
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-30}
if [ ! -f build-fuzz/build.ninja ]; then
	CC=clang CXX=clang++ meson setup build-fuzz --buildtype=debugoptimized \
		-Dfuzzing=true -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
fi
ninja -C build-fuzz tests/fuzz/fuzz_ctl_protocol tests/fuzz/fuzz_filter_frontend \
	tests/fuzz/fuzz_pcap_encoder tests/fuzz/fuzz_recover_scan \
	tests/fuzz/fuzz_index_file tests/fuzz/fuzz_capture_reader >/dev/null
mkdir -p build-fuzz/crashes
status=0
for t in ctl_protocol filter_frontend pcap_encoder recover_scan index_file capture_reader; do
	work=build-fuzz/corpus/$t
	rm -rf "$work"
	mkdir -p "$work"
	cp tests/fuzz/$t/* "$work/"
	echo "fuzz_$t: ${seconds}s"
	if ! UBSAN_OPTIONS=halt_on_error=1 ASAN_OPTIONS=detect_leaks=0 \
		./build-fuzz/tests/fuzz/fuzz_$t -max_total_time="$seconds" -max_len=4096 \
		-artifact_prefix=build-fuzz/crashes/$t- -print_final_stats=1 "$work" \
		>build-fuzz/fuzz_$t.log 2>&1; then
		echo "fuzz_$t: FAILED (see build-fuzz/fuzz_$t.log, inputs in build-fuzz/crashes)"
		tail -30 build-fuzz/fuzz_$t.log
		status=1
	else
		grep -E "stat::number_of_executed_units" build-fuzz/fuzz_$t.log || true
	fi
done
exit $status
