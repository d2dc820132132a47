#!/bin/sh
# Formats the C and C++ sources with clang-format (.clang-format; the eBPF
# examples have their own, in the kernel's style). With --check, changes
# nothing and fails, naming the files, when one is not formatted.
set -eu
cd "$(dirname "$0")/.."
check=0
[ "${1:-}" = "--check" ] && check=1
bad=""
for f in $(git ls-files '*.cc' '*.hh' '*.c' '*.h'); do
	if [ "$check" = 1 ]; then
		clang-format --style=file "$f" | cmp -s "$f" - || bad="$bad $f"
	else
		clang-format --style=file -i "$f"
	fi
done
if [ -n "$bad" ]; then
	echo "format: not formatted (run sh scripts/format.sh):$bad" >&2
	exit 1
fi
