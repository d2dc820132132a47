#!/bin/sh
# Installs the Debian 12 packages linecap needs to build, test and demonstrate.
# Safe to run repeatedly; does nothing when everything is present.
set -eu

PKGS="build-essential meson ninja-build pkg-config python3
libdpdk-dev dpdk dpdk-dev libpcap-dev libbpf-dev libelf-dev libhyperscan-dev
libgtest-dev libbenchmark-dev nlohmann-json3-dev libcli11-dev liburing-dev
clang clang-format llvm libclang-rt-14-dev
tcpdump tshark wireshark-common iproute2 gnuplot-nox util-linux
libssl-dev openssl
clickhouse-server clickhouse-client curl
libzstd-dev liblz4-dev zlib1g-dev zstd lz4 gzip
strace"

missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing="$missing $p"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
	echo "install-deps: missing packages:$missing (run as root)" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# tshark asks whether non-root users may capture; answer no.
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing
