#!/bin/sh
# Installs dependencies, builds, and runs the whole test suite: unit and
# integration tests, the fast suite under ASan/UBSan, and the fuzz targets.
set -eu
cd "$(dirname "$0")/.."
sh scripts/install-deps.sh
# Unformatted sources fail the suite (sh scripts/format.sh formats them).
sh scripts/format.sh --check
sh scripts/build.sh
meson test -C build --print-errorlogs --num-processes 2 "$@"
# The fast suite again under AddressSanitizer and UndefinedBehaviorSanitizer,
# then each fuzz target for a bounded time. LINECAP_QUICK=1 skips both.
if [ "${LINECAP_QUICK:-0}" != 1 ]; then
	sh scripts/sanitize.sh
	FUZZ_SECONDS=${FUZZ_SECONDS:-20} sh scripts/fuzz.sh
fi
