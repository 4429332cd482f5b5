#!/usr/bin/env bash
# dual.sh BIN_A BIN_B: two connlogd builds watching one namespace at once
#
# Both daemons (interval 1 s, a file sink each) are started in one fresh
# namespace, where the bench/churn generator opens and closes connections;
# each daemon's utime+stime (/proc/PID/stat) is taken across the pass and
# SETTLE s after, and the analyzer checks each one's events. Both see the
# same connections at the same time on the same machine, so their CPU
# ratio is free of the rate's variation and of other work's swings,
# which on a shared machine are larger than the difference measured. Each
# costs the other some CPU; swap the order in a second run.
#
# Environment: DURATION (30: the pass's seconds), RATE (0: unpaced),
# WORKERS (4), GEN_NICE (0), SETTLE (3), KEEP=1 (keep the event and record
# files, gigabytes at full rate), LINGER0=1 (clients close with
# SO_LINGER 0: RST, the socket destroyed at close(2), so the latency is
# the notification's alone, not the FIN handshake's). Needs root, iproute2 and Go.
# The namespace and both daemons are removed on exit.
set -euo pipefail

[[ $# == 2 ]] || { echo "usage: $0 BIN_A BIN_B" >&2; exit 2; }
A=$(realpath "$1")
B=$(realpath "$2")
SECS=${DURATION:-30}
RATE=${RATE:-0}
WORKERS=${WORKERS:-4}
SETTLE=${SETTLE:-3}
NS=connlogd-dual

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
WORK=$(mktemp -d /tmp/connlogd-dual.XXXXXX)
PA= PB= NS_MADE=

cleanup() {
	local rc=$?
	for p in $PA $PB; do
		kill -TERM "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	[[ -z $NS_MADE ]] || ip netns del "$NS" || rc=1
	[[ ${KEEP:-} == 1 ]] || rm -f "$WORK"/*.jsonl "$WORK"/churn.csv
	echo "dual: results in $WORK" >&2
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ip netns list | awk '{ print $1 }' | grep -qx "$NS"; then
	echo "dual: namespace $NS exists: another run, or a leftover (ip netns del $NS)" >&2
	exit 1
fi
(cd "$repo" && go build -o "$WORK/churn" ./bench/churn && go build -o "$WORK/analyze" ./bench/churn/analyze)

ip netns add "$NS"
NS_MADE=1
ip -n "$NS" link set lo up
ip netns exec "$NS" sysctl -q -w net.ipv4.ip_local_port_range="1024 65000" net.ipv4.tcp_tw_reuse=1
for x in A B; do
	printf 'interval: 1s\nsinks:\n  - type: file\n    path: %s/%s.jsonl\n' "$WORK" "$x" >"$WORK/$x.yaml"
done
ip netns exec "$NS" "$A" -config "$WORK/A.yaml" 2>"$WORK/A.log" &
PA=$!
ip netns exec "$NS" "$B" -config "$WORK/B.yaml" 2>"$WORK/B.log" &
PB=$!
# Both have made their first poll once they log "watching".
for _ in $(seq 300); do
	grep -q msg=watching "$WORK/A.log" && grep -q msg=watching "$WORK/B.log" && break
	kill -0 "$PA" && kill -0 "$PB" || { cat "$WORK/A.log" "$WORK/B.log" >&2; exit 1; }
	sleep 0.1
done
sleep 2

# ticks PID: utime+stime (the fields after the command name's ')').
ticks() {
	local stat rest
	stat=$(<"/proc/$1/stat")
	rest=${stat##*) }
	read -r -a f <<<"$rest"
	echo $((f[11] + f[12]))
}

linger=()
[[ ${LINGER0:-} == 1 ]] && linger=(-linger0)
a0=$(ticks "$PA")
b0=$(ticks "$PB")
ip netns exec "$NS" nice -n "${GEN_NICE:-0}" "$WORK/churn" -port 65102 -addrs 4 -workers "$WORKERS" \
	-rate "$RATE" -duration "${SECS}s" -out "$WORK/churn.csv" "${linger[@]}" >"$WORK/gen.txt"
sleep "$SETTLE"
a1=$(ticks "$PA")
b1=$(ticks "$PB")
hwm() { awk '/^VmHWM/ { print $2 }' "/proc/$1/status"; }
ha=$(hwm "$PA")
hb=$(hwm "$PB")
# SIGTERM drains and flushes: analyse complete files.
kill -TERM "$PA" "$PB"
wait "$PA" || true
wait "$PB" || true
PA= PB=

made=$(sed -n 's/.* made=\([0-9]*\) .*/\1/p' "$WORK/gen.txt")
tck=$(getconf CLK_TCK)
{
	echo "date: $(date -u +%FT%TZ); load average: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "A: $A"
	echo "B: $B"
	cat "$WORK/gen.txt"
	awk -v a=$((a1 - a0)) -v b=$((b1 - b0)) -v n="$made" -v tck="$tck" -v ha="$ha" -v hb="$hb" 'BEGIN {
		printf "CPU per 1000 connections: A %.1f ms, B %.1f ms, B/A %.3f; peak RSS: A %.1f MiB, B %.1f MiB\n",
			1e6 * a / tck / n, 1e6 * b / tck / n, b / a, ha / 1024, hb / 1024
	}'
	for x in A B; do
		"$WORK/analyze" -events "$WORK/$x.jsonl" -records "$WORK/churn.csv" -port 65102 >"$WORK/$x.analysis"
		# The connections lost, if any, are named: each one is a defect.
		grep -E '^  missing:|^RESULT' "$WORK/$x.analysis" | sed "s/^/$x: /"
	done
} | tee "$WORK/summary.txt"
