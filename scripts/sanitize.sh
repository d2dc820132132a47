#!/bin/sh
# Builds linecap with AddressSanitizer and UndefinedBehaviorSanitizer into
# build-asan and runs the fast test suite there.
set -eu
cd "$(dirname "$0")/.."
if [ ! -f build-asan/build.ninja ]; then
	meson setup build-asan --buildtype=debug -Db_sanitize=address,undefined \
		-Db_lundef=false >/dev/null
fi
ninja -C build-asan
# detect_leaks=0: DPDK keeps process-lifetime allocations it never frees.
ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	meson test -C build-asan --suite fast --print-errorlogs --num-processes 2
