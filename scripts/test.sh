#!/bin/sh
# Installs dependencies, builds, and runs the whole test suite (unit + integration).
set -eu
cd "$(dirname "$0")/.."
sh scripts/install-deps.sh
sh scripts/build.sh
meson test -C build --print-errorlogs --num-processes 2 "$@"
