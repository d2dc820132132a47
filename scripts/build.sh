#!/bin/sh
# Configures and builds linecap into ./build (release with debug info).
set -eu
cd "$(dirname "$0")/.."
if [ ! -f build/build.ninja ]; then
	meson setup build --buildtype=debugoptimized ${MESON_ARGS:-}
fi
ninja -C build
