#!/bin/sh
# A capture fleet on one machine: the catalogue and three capture hosts.
#
#   scripts/fleet.sh start DIR [BUILD_DIR]   start everything, state under DIR
#   scripts/fleet.sh stop DIR                stop what start started, remove the namespaces
#   scripts/fleet.sh status DIR              what runs
#   scripts/fleet.sh hosts-stop DIR          stop the hosts' capd (their files close and publish)
#   scripts/fleet.sh serve-stop DIR          stop the hosts' capq --serve
#   scripts/fleet.sh clickhouse-start DIR    only the two ClickHouse shards and the tables
#   scripts/fleet.sh clickhouse-stop DIR     only stop them (the tests stop and restart it)
#
# The catalogue: two ClickHouse 18.16 servers (Debian's clickhouse-server, run
# as plain processes with their own config, data and logs under DIR/ch1 and
# DIR/ch2, never the system service), listening on 127.0.0.1 only:
#   shard 1: HTTP $LINECAP_CH_PORT (default 18123), native +1 (18124), interserver +2
#   shard 2: HTTP  port + 10 (18133), native +11, interserver +12
# a remote_servers cluster `linecap` of the two shards, one MergeTree table
# per shard (linecap_files_local, linecap_flows_local) and Distributed tables
# over them on both servers (linecap_files, linecap_flows), rows sharded by
# host. Either server answers for the whole catalogue.
#
# The hosts: network namespaces lcf-h1..lcf-h3 (LINECAP_FLEET_PREFIX changes
# "lcf"), each with eth0 at 198.18.0.1..3/24, joined by veth pairs to a bridge
# in a fourth namespace (lcf-sw): traffic between the hosts never meets the
# machine's own interfaces. Each host runs a capd in the root namespace
# capturing its namespace's eth0 (-i af_packet:eth0@netns=lcf-hN), writing to
# DIR/hN/cap (-G 2 -W 100), publishing to the catalogue as host hN, its serve
# address 127.0.0.1:(LINECAP_SERVE_PORT, default port + 20) + N, where its capq --serve answers over HTTPS for
# DIR/hN/cap. The fleet CA and the certificates (DIR/ca: ca.pem, hN.pem/.key
# for the hosts, client.pem/.key for capq --fleet) are made at the first
# start, with openssl, valid 30 days.
set -eu

cmd=${1:-}
dir=${2:-}
build=${3:-${LINECAP_BUILD_DIR:-build}}
pfx=${LINECAP_FLEET_PREFIX:-lcf}
base=${LINECAP_CH_PORT:-18123}
sbase=${LINECAP_SERVE_PORT:-$((base + 20))}
[ -n "$cmd" ] && [ -n "$dir" ] || {
	echo "usage: fleet.sh start|stop|status|clickhouse-start|clickhouse-stop DIR [BUILD_DIR]" >&2
	exit 1
}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

ch_config() { # n http native inter
	d=$dir/ch$1
	mkdir -p "$d/data" "$d/tmp" "$d/user_files" "$d/log" "$d/format_schemas"
	cp /etc/clickhouse-server/users.xml "$d/users.xml"
	cat >"$d/config.xml" <<EOF
<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <log>$d/log/server.log</log>
        <errorlog>$d/log/server.err.log</errorlog>
        <size>10M</size>
        <count>2</count>
    </logger>
    <http_port>$2</http_port>
    <tcp_port>$3</tcp_port>
    <interserver_http_port>$4</interserver_http_port>
    <interserver_http_host>127.0.0.1</interserver_http_host>
    <listen_host>127.0.0.1</listen_host>
    <max_connections>256</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>100</max_concurrent_queries>
    <uncompressed_cache_size>8589934592</uncompressed_cache_size>
    <mark_cache_size>268435456</mark_cache_size>
    <path>$d/data/</path>
    <tmp_path>$d/tmp/</tmp_path>
    <user_files_path>$d/user_files/</user_files_path>
    <format_schema_path>$d/format_schemas/</format_schema_path>
    <users_config>$d/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <mlock_executable>false</mlock_executable>
    <remote_servers>
        <linecap>
            <shard><replica><host>127.0.0.1</host><port>$((base + 1))</port></replica></shard>
            <shard><replica><host>127.0.0.1</host><port>$((base + 11))</port></replica></shard>
        </linecap>
    </remote_servers>
    <builtin_dictionaries_reload_interval>3600</builtin_dictionaries_reload_interval>
    <max_session_timeout>3600</max_session_timeout>
    <default_session_timeout>60</default_session_timeout>
</yandex>
EOF
}

ch_query() { # port sql
	curl -sS --max-time 10 --data-binary "$2" "http://127.0.0.1:$1/" || return 1
}

ch_start() {
	command -v clickhouse-server >/dev/null 2>&1 || [ -x /usr/sbin/clickhouse-server ] || {
		echo "fleet: clickhouse-server is not installed (apt-get install clickhouse-server clickhouse-client)" >&2
		exit 1
	}
	for n in 1 2; do
		http=$((base + (n - 1) * 10))
		if [ -f "$dir/ch$n/pid" ] && kill -0 "$(cat "$dir/ch$n/pid")" 2>/dev/null; then continue; fi
		ch_config "$n" "$http" "$((http + 1))" "$((http + 2))"
		(cd "$dir/ch$n" && exec /usr/sbin/clickhouse-server --config-file="$dir/ch$n/config.xml" \
			>"$dir/ch$n/log/stdout" 2>&1) &
		echo $! >"$dir/ch$n/pid"
	done
	for n in 1 2; do
		http=$((base + (n - 1) * 10))
		i=0
		until [ "$(ch_query "$http" "SELECT 1" 2>/dev/null)" = "1" ]; do
			i=$((i + 1))
			if [ $i -gt 120 ]; then
				echo "fleet: ClickHouse shard $n did not answer on port $http within 60 s; see $dir/ch$n/log" >&2
				exit 1
			fi
			sleep 0.5
		done
	done
	# The tables: on each server its local tables and the Distributed ones.
	for n in 1 2; do
		http=$((base + (n - 1) * 10))
		"$build/query/capq" --fleet-schema linecap | while IFS= read -r sql; do
			ch_query "$http" "$sql" >/dev/null
		done
	done
}

ch_stop() {
	for n in 1 2; do
		f=$dir/ch$n/pid
		[ -f "$f" ] || continue
		pid=$(cat "$f")
		kill "$pid" 2>/dev/null || true
		i=0
		while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do
			sleep 0.2
			i=$((i + 1))
		done
		kill -9 "$pid" 2>/dev/null || true
		rm -f "$f"
	done
}

net_start() {
	ip netns add "$pfx-sw"
	ip -n "$pfx-sw" link add br0 type bridge
	ip -n "$pfx-sw" link set br0 up
	for n in 1 2 3; do
		ip netns add "$pfx-h$n"
		ip link add "$pfx-h$n-e" type veth peer name "$pfx-h$n-p"
		ip link set "$pfx-h$n-e" netns "$pfx-h$n" name eth0
		ip link set "$pfx-h$n-p" netns "$pfx-sw"
		ip -n "$pfx-sw" link set "$pfx-h$n-p" master br0 up
		ip -n "$pfx-h$n" addr add "198.18.0.$n/24" dev eth0
		ip -n "$pfx-h$n" link set eth0 up
		ip -n "$pfx-h$n" link set lo up
	done
}

net_stop() {
	for n in 1 2 3; do ip netns del "$pfx-h$n" 2>/dev/null || true; done
	ip netns del "$pfx-sw" 2>/dev/null || true
}

# The fleet CA, a certificate per host (dialled as 127.0.0.1) and one for the
# client (capq --fleet), unless DIR/ca has them already.
make_ca() {
	c=$dir/ca
	[ -f "$c/ca.pem" ] && return 0
	mkdir -p "$c"
	(
		cd "$c"
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
			-subj /CN=linecap-fleet-ca -keyout ca.key -out ca.pem 2>/dev/null
		for n in h1 h2 h3 client; do
			openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$n" \
				-keyout "$n.key" -out "$n.csr" 2>/dev/null
			if [ $n = client ]; then
				printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n' >"$n.ext"
			else
				printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n' >"$n.ext"
			fi
			openssl x509 -req -in "$n.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
				-extfile "$n.ext" -out "$n.pem" 2>/dev/null
		done
		chmod 600 ./*.key
	)
}

hosts_start() {
	for n in 1 2 3; do
		h=$dir/h$n
		mkdir -p "$h/cap"
		"$build/dataplane/capd" -q -i "af_packet:eth0@netns=$pfx-h$n" \
			-w "$h/cap/h$n-%s.pcap" -G "${LINECAP_FLEET_ROTATE:-2}" -W 100 --nano --ctl "$h/ctl.sock" \
			--catalog "http://127.0.0.1:$base" --catalog-host "h$n" \
			--catalog-serve "127.0.0.1:$((sbase + n))" --catalog-spool "$h/spool" \
			--stats-json "$h/summary.json" \
			${LINECAP_FLEET_CAPD_ARGS:-} >"$h/capd.log" 2>&1 &
		echo $! >"$h/capd.pid"
		# The packet side: capq --serve, when this capq has it.
		if "$build/query/capq" --help 2>/dev/null | grep -q -- "--serve" && [ -f "$dir/ca/ca.pem" ]; then
			"$build/query/capq" --serve "127.0.0.1:$((sbase + n))" --cert "$dir/ca/h$n.pem" \
				--key "$dir/ca/h$n.key" --ca "$dir/ca/ca.pem" -r "$h/cap" >"$h/serve.log" 2>&1 &
			echo $! >"$h/serve.pid"
		else
			echo "fleet: h$n: no capq --serve here (or no $dir/ca); packets not served" >"$h/serve.log"
		fi
	done
	for n in 1 2 3; do
		i=0
		until [ -S "$dir/h$n/ctl.sock" ]; do
			i=$((i + 1))
			if ! kill -0 "$(cat "$dir/h$n/capd.pid")" 2>/dev/null || [ $i -gt 300 ]; then
				echo "fleet: capd of h$n did not start:" >&2
				cat "$dir/h$n/capd.log" >&2
				exit 1
			fi
			sleep 0.1
		done
	done
}

hosts_stop() { # [capd|serve]...
	for n in 1 2 3; do
		for p in "$@"; do
			f=$dir/h$n/$p.pid
			[ -f "$f" ] || continue
			pid=$(cat "$f")
			# (A background job of sh ignores SIGINT unless it sets a handler,
			# as capd does; capq --serve stops on SIGTERM.)
			sig=INT
			[ "$p" = serve ] && sig=TERM
			kill -$sig "$pid" 2>/dev/null || true
			i=0
			while kill -0 "$pid" 2>/dev/null && [ $i -lt 150 ]; do
				sleep 0.2
				i=$((i + 1))
			done
			kill -9 "$pid" 2>/dev/null || true
			rm -f "$f"
		done
	done
}

case $cmd in
start)
	ch_start
	make_ca
	net_start
	hosts_start
	echo "fleet: catalogue http://127.0.0.1:$base (shard 2: $((base + 10))); hosts h1..h3 in $pfx-h1..3 (198.18.0.1..3)"
	;;
stop)
	hosts_stop serve capd
	net_stop
	ch_stop
	;;
status)
	for n in 1 2; do
		f=$dir/ch$n/pid
		if [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; then echo "clickhouse $n: running"; else echo "clickhouse $n: stopped"; fi
	done
	for n in 1 2 3; do
		f=$dir/h$n/capd.pid
		if [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; then echo "h$n capd: running"; else echo "h$n capd: stopped"; fi
	done
	;;
hosts-stop) hosts_stop capd ;;
serve-stop) hosts_stop serve ;;
clickhouse-start) ch_start ;;
clickhouse-stop) ch_stop ;;
*)
	echo "fleet: unknown command '$cmd'" >&2
	exit 1
	;;
esac
