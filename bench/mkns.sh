#!/usr/bin/env bash
# mkns.sh up [SOCKETS] | down | status
#
# Builds (or removes) the network namespace connlogd-bench holding about
# SOCKETS (default 100000) established TCP sockets on 127.0.0.0/8, owned
# by sockfill processes, for the benchmarks in this directory.
#
#   up      creates the namespace and fills it; prints the socket count
#           (`ss -tanH | wc -l` inside it) on stdout. When the namespace
#           is already up with the same target, it is reused.
#   down    stops the sockfill processes and deletes the namespace.
#   status  prints the socket count, or fails when the namespace is down.
#
# Needs root and iproute2. Both commands are safe to rerun.
set -euo pipefail

NS=connlogd-bench
STATE=/tmp/connlogd-bench # pid file, sockfill binary and its outputs; removed by down
PIDS=$STATE/pids
# 2*9000 sockets + listeners + runtime fds stay under a 20000 fd limit.
PAIRS_PER_PROC=9000
BASE_PORT=5000 # listeners take BASE_PORT, BASE_PORT+1, …: below the ephemeral range
READY_TIMEOUT=180

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")

log() { echo "mkns: $*" >&2; }

ns_exists() { [[ -e /run/netns/$NS ]]; }

# is_sockfill PID: the pid file may be stale and its pids reused.
is_sockfill() { [[ "$(cat "/proc/$1/comm" 2>/dev/null)" == sockfill ]]; }

count() { ip netns exec "$NS" ss -tanH | wc -l; }

down() {
	local pids=() pid
	if [[ -f $PIDS ]]; then
		while read -r pid; do
			is_sockfill "$pid" && pids+=("$pid")
		done <"$PIDS"
	fi
	# Processes left in the namespace by a lost pid file, or by a run.sh
	# that was killed, were started by these scripts too.
	if ns_exists; then
		for pid in $(ip netns pids "$NS"); do
			pids+=("$pid")
		done
	fi
	if ((${#pids[@]})); then
		kill -TERM "${pids[@]}" 2>/dev/null || true
		for _ in $(seq 100); do
			local alive=()
			for pid in "${pids[@]}"; do
				kill -0 "$pid" 2>/dev/null && alive+=("$pid")
			done
			((${#alive[@]})) || break
			sleep 0.1
		done
		for pid in "${pids[@]}"; do
			kill -KILL "$pid" 2>/dev/null || true
		done
	fi
	if ns_exists; then
		ip netns del "$NS"
	fi
	rm -rf "$STATE"
}

# already_up TARGET: the namespace exists with every sockfill of a run
# with the same target still alive, and their sockets still there.
already_up() {
	ns_exists && [[ -f $PIDS && -f $STATE/target ]] || return 1
	[[ "$(cat "$STATE/target")" == "$1" ]] || return 1
	local pid
	while read -r pid; do
		is_sockfill "$pid" || return 1
	done <"$PIDS"
	(($(ip netns exec "$NS" ss -tanH state established | wc -l) >= $1 / 2 * 2))
}

up() {
	local target=${1:-100000}
	if ! [[ $target =~ ^[0-9]+$ ]] || ((target < 2)); then
		log "SOCKETS must be a number ≥ 2, not '$target'"
		exit 2
	fi
	if already_up "$target"; then
		log "$NS is already up"
		count
		return
	fi
	down
	mkdir -p "$STATE"
	(cd "$repo" && go build -o "$STATE/sockfill" ./bench/sockfill)

	ip netns add "$NS"
	# From here on a failure must not leave a half-built namespace.
	trap 'log "failed; cleaning up"; down' EXIT
	ip -n "$NS" link set lo up
	# 50k connections to a handful of listeners need more ephemeral
	# ports than the default range's ~28k.
	ip netns exec "$NS" sysctl -qw net.ipv4.ip_local_port_range="10000 64999"

	local pairs=$((target / 2))
	local procs=$(((pairs + PAIRS_PER_PROC - 1) / PAIRS_PER_PROC))
	local v6=()
	# One [::1] listener keeps the tcp/ipv6 dump from being empty.
	if [[ -e /proc/net/if_inet6 ]]; then v6=(-ipv6); fi
	log "starting $procs sockfill processes for $pairs connections"
	local i n left=$pairs
	: >"$PIDS"
	for ((i = 0; i < procs; i++)); do
		n=$((left < PAIRS_PER_PROC ? left : PAIRS_PER_PROC))
		left=$((left - n))
		# ip netns exec execs the program in place, so $! is sockfill.
		ip netns exec "$NS" "$STATE/sockfill" -port $((BASE_PORT + i)) -pairs "$n" "${v6[@]}" \
			</dev/null >"$STATE/fill.$i.out" 2>"$STATE/fill.$i.err" &
		echo $! >>"$PIDS"
		v6=()
	done

	local deadline=$((SECONDS + READY_TIMEOUT)) pid ready
	while :; do
		ready=0
		i=0
		while read -r pid; do
			if grep -q '^ready ' "$STATE/fill.$i.out"; then
				ready=$((ready + 1))
			elif ! kill -0 "$pid" 2>/dev/null; then
				log "sockfill $i exited: $(cat "$STATE/fill.$i.err")"
				exit 1
			fi
			i=$((i + 1))
		done <"$PIDS"
		((ready == procs)) && break
		if ((SECONDS > deadline)); then
			log "sockfill not ready after ${READY_TIMEOUT}s"
			exit 1
		fi
		sleep 0.2
	done
	trap - EXIT
	echo "$target" >"$STATE/target"
	count
}

case "${1:-}" in
up) up "${2:-100000}" ;;
down) down ;;
status)
	if ! ns_exists; then
		log "$NS is down"
		exit 1
	fi
	count
	;;
*)
	echo "usage: $0 up [SOCKETS] | down | status" >&2
	exit 2
	;;
esac
