#!/bin/sh
# Installs dependencies, builds, and runs a real capture on the bundled demo
# traffic: the capture is replayed through a pcap: source 50 times, filtered,
# and written to rotating files (-C 5 MB, at most -W 3 files). Then it shows
# what was written, as tcpdump and capinfos see it, and what capq finds
# through the index written beside each file.
set -eu
cd "$(dirname "$0")/.."
sh scripts/install-deps.sh
sh scripts/build.sh >/dev/null

out=demo-out
rm -rf "$out"
mkdir -p "$out"
filter=${DEMO_FILTER-"tcp port 80 or udp port 53"}
set -x
./build/dataplane/capd -i pcap:tests/data/demo/web-mix.pcap,loop -c 160000 \
	-w "$out/web.pcap" -C 5 -W 3 --nano --stats-json "$out/stats.json" $filter
set +x
echo
echo "== files written (at most 3, each about 5 MB) =="
ls -l "$out"
echo
echo "== capinfos =="
capinfos -c -d -u "$out"/web.pcap*
echo
echo "== the newest file, first packets, as tcpdump reads it =="
last=$(ls "$out"/web.pcap* | sort | tail -1)
tcpdump -nn -r "$last" -c 8 2>/dev/null
echo
echo "== DNS flows, from the files' indexes alone (capq --flows) =="
./build/query/capq -r "$out" --flows udp port 53 | head -6
echo
echo "== one client's packets across the files, found through the index (capq) =="
./build/query/capq -r "$out" --explain -w "$out/one-client.pcap" host 198.18.1.137 2>&1 | tail -1
tcpdump -nn -r "$out/one-client.pcap" -c 6 2>/dev/null
echo
echo "== summary as JSON ($out/stats.json) =="
cat "$out/stats.json" | head -25
