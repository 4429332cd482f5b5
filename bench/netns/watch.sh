#!/usr/bin/env bash
# watch.sh: what watching namespaces as they appear costs the daemon,
# against finding them by the periodic rescan alone.
#
# Two daemons run side by side in the host namespace, on the same
# configuration (`namespaces: all`, everything else the default: interval
# 1s, namespace_rescan 5s, a file sink), over the same window, so that
# they share the machine's noise:
#   new: this tree's cmd/connlogd (inotify on the bind directories and the
#        process-event connector, the rescan as the safety net)
#   old: the daemon of git revision BASE (default: main's merge base with
#        this branch), which finds namespaces by the rescan only
#   fast: the same, with namespace_rescan: 500ms, what it takes today to
#        see namespaces that live a second
# Scenarios, each over DAEMON_SECONDS after WARMUP seconds:
#   idle:  IDLE namespaces (ip netns add, loopback up) that do not change
#   churn: RATE namespaces created and deleted per second, each living
#          LIFE seconds (ip netns add, then ip netns del)
# For each: the CPU time of each daemon (sum_exec_runtime of its threads),
# the ratio new/old, and how many of the churned namespaces each daemon
# watched ("watching namespace" in its log).
#
# Environment: IDLE (100), RATE (20), LIFE (1), DAEMON_SECONDS (20),
# WARMUP (5), ROUNDS (3), BASE (a git revision).
# Results stay in a directory under /tmp, printed at the end.
set -euo pipefail

IDLE=${IDLE:-100}
RATE=${RATE:-20}
LIFE=${LIFE:-1}
DAEMON_SECONDS=${DAEMON_SECONDS:-20}
WARMUP=${WARMUP:-5}
ROUNDS=${ROUNDS:-3}
PREFIX=connlogd-nswatch

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"
BASE=${BASE:-$(git merge-base HEAD main)}

log() { echo "watch: $*" >&2; }
[[ $(id -u) == 0 ]] || { log "needs root (ip netns, setns)"; exit 1; }

WORK=$(mktemp -d /tmp/connlogd-nswatch.XXXXXX)
PIDS=()
CHURN_PID=

cleanup() {
	local p
	[[ -n $CHURN_PID ]] && kill "$CHURN_PID" 2>/dev/null && wait "$CHURN_PID" 2>/dev/null
	for p in "${PIDS[@]}"; do
		kill -TERM "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	PIDS=()
	for n in $(ip netns list | awk -v p="$PREFIX-$$-" 'index($1, p) == 1 { print $1 }'); do
		ip netns del "$n" 2>/dev/null || true
	done
}
trap cleanup EXIT

log "building this tree and $BASE in $WORK"
go build -o "$WORK/new" ./cmd/connlogd
mkdir "$WORK/base-src"
git archive "$BASE" | tar -x -C "$WORK/base-src"
(cd "$WORK/base-src" && go build -o "$WORK/old" ./cmd/connlogd)

# CPU_NS: CPU time in ns of process $1, the sum over its threads of
# sum_exec_runtime (/proc/PID/task/TID/schedstat).
CPU_NS=0
cpu_ns() {
	local t a sum=0
	for t in /proc/"$1"/task/*/schedstat; do
		read -r a _ <"$t" 2>/dev/null || continue
		sum=$((sum + a))
	done
	CPU_NS=$sum
}

start_daemon() { # start_daemon NAME BINARY [EXTRA]: runs $WORK/BINARY; sets DPID
	local name=$1 bin=$2 extra=${3:-}
	local dir=$WORK/$name.$ROUND.$SCEN
	mkdir -p "$dir"
	printf 'namespaces: all\n%bsinks:\n  - type: file\n    path: %s/events.json\n' "$extra" "$dir" >"$dir/config.yaml"
	"$WORK/$bin" -config "$dir/config.yaml" 2>"$dir/stderr" &
	DPID=$!
	PIDS+=("$DPID")
}

churn() { # creates RATE namespaces a second, each deleted LIFE s later
	local i=0 n alive=$((RATE * LIFE)) q=() start now due wait
	start=${EPOCHREALTIME/./}
	while :; do
		n=$PREFIX-$$-c$i
		ip netns add "$n" && q+=("$n")
		if ((${#q[@]} > alive)); then
			ip netns del "${q[0]}"
			q=("${q[@]:1}")
		fi
		i=$((i + 1))
		echo "$i" >"$WORK/churned.$ROUND"
		# Paced by the clock, not by sleeps: ip's own time is not added.
		due=$((start + i * 1000000 / RATE))
		now=${EPOCHREALTIME/./}
		wait=$((due - now))
		if ((wait > 0)); then
			sleep "$(printf '0.%06d' "$wait")"
		fi
	done
}

RESULTS=$WORK/results.tsv
printf 'round\tscenario\tnew_cpu_ms\told_cpu_ms\tnew/old\tfast_cpu_ms\tnew/fast\tchurned\tnew_watched\told_watched\tfast_watched\n' >"$RESULTS"
for ROUND in $(seq 1 "$ROUNDS"); do
	for SCEN in idle churn; do
		if [[ $SCEN == idle ]]; then
			for i in $(seq 1 "$IDLE"); do
				ip netns add "$PREFIX-$$-i$i"
				ip -n "$PREFIX-$$-i$i" link set lo up
			done
		fi
		start_daemon new new
		NEW=$DPID
		start_daemon old old
		OLD=$DPID
		start_daemon fast old "namespace_rescan: 500ms\n"
		FAST=$DPID
		sleep "$WARMUP"
		if [[ $SCEN == churn ]]; then
			churn &
			CHURN_PID=$!
		fi
		cpu_ns "$NEW"; n0=$CPU_NS
		cpu_ns "$OLD"; o0=$CPU_NS
		cpu_ns "$FAST"; f0=$CPU_NS
		sleep "$DAEMON_SECONDS"
		cpu_ns "$NEW"; n1=$CPU_NS
		cpu_ns "$OLD"; o1=$CPU_NS
		cpu_ns "$FAST"; f1=$CPU_NS
		churned=0
		if [[ -n $CHURN_PID ]]; then
			kill "$CHURN_PID"
			wait "$CHURN_PID" 2>/dev/null || true
			CHURN_PID=
			churned=$(cat "$WORK/churned.$ROUND")
		fi
		nw=$(grep -c "msg=\"watching namespace\" netns=$PREFIX-$$-c" "$WORK/new.$ROUND.$SCEN/stderr" || true)
		ow=$(grep -c "msg=\"watching namespace\" netns=$PREFIX-$$-c" "$WORK/old.$ROUND.$SCEN/stderr" || true)
		fw=$(grep -c "msg=\"watching namespace\" netns=$PREFIX-$$-c" "$WORK/fast.$ROUND.$SCEN/stderr" || true)
		nms=$(((n1 - n0) / 1000000))
		oms=$(((o1 - o0) / 1000000))
		fms=$(((f1 - f0) / 1000000))
		ratio=$(awk -v a="$nms" -v b="$oms" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "-" }')
		fratio=$(awk -v a="$nms" -v b="$fms" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "-" }')
		printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$ROUND" "$SCEN" "$nms" "$oms" "$ratio" "$fms" "$fratio" "$churned" "$nw" "$ow" "$fw" | tee -a "$RESULTS"
		cleanup
	done
done
log "results in $RESULTS"
column -t "$RESULTS"
