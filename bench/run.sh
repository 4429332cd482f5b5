#!/usr/bin/env bash
# run.sh [SOCKETS]: the whole poll-cost measurement in one run.
#
#  1. bench/mkns.sh up SOCKETS (default 100000)
#  2. ROUNDS rounds of the Go benchmarks of this directory inside the
#     namespace; each round runs every benchmark once, so that the
#     baseline and the figures compared with it share the round's noise
#  3. the real daemon (cmd/connlogd) inside the namespace for
#     DAEMON_SECONDS at interval 1s, its CPU read from /proc/PID/stat,
#     bracketed by the minimal dump paced at the same 1s
#  4. a summary (bench/benchsum), then bench/mkns.sh down, also on failure
#
# Environment: ROUNDS (5), BENCHTIME (20x: polls per benchmark per round),
# DAEMON_SECONDS (30), WARMUP (10 s before the daemon's window, for its
# first poll's burst of events), CONNLOGD (a daemon binary to use instead
# of building cmd/connlogd), DAEMON_ENV (VAR=value … for the daemon only,
# e.g. GOMEMLIMIT=110MiB), KEEP_NS=1 (leave the namespace up).
# Results stay in a directory under /tmp, printed at the end.
set -euo pipefail

SOCKETS=${1:-100000}
ROUNDS=${ROUNDS:-5}
BENCHTIME=${BENCHTIME:-20x}
DAEMON_SECONDS=${DAEMON_SECONDS:-30}
WARMUP=${WARMUP:-10}
NS=connlogd-bench

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
cd "$repo"

log() { echo "run: $*" >&2; }

WORK=$(mktemp -d /tmp/connlogd-bench-run.XXXXXX)
DAEMON_PID=

cleanup() {
	local rc=$?
	if [[ -n $DAEMON_PID ]] && kill -0 "$DAEMON_PID" 2>/dev/null; then
		kill -TERM "$DAEMON_PID" 2>/dev/null || true
		wait "$DAEMON_PID" 2>/dev/null || true
	fi
	if [[ ${KEEP_NS:-} != 1 ]]; then
		"$here/mkns.sh" down || rc=1
	fi
	# The daemon's event file holds one line per socket: too big to keep.
	rm -f "$WORK/events.jsonl"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Build everything before the measurement, not inside it.
log "building into $WORK"
go test -c -o "$WORK/bench.test" ./bench
go build -o "$WORK/benchsum" ./bench/benchsum
daemon_bin=${CONNLOGD:-}
daemon_note=
if [[ -z $daemon_bin ]]; then
	if go build -o "$WORK/connlogd" ./cmd/connlogd 2>"$WORK/daemon-build.log"; then
		daemon_bin=$WORK/connlogd
	else
		daemon_note="cmd/connlogd does not build ($WORK/daemon-build.log): daemon process not measured"
		log "$daemon_note"
	fi
fi

count=$("$here/mkns.sh" up "$SOCKETS")
log "$NS holds $count TCP sockets"

{
	echo "# $(date -u +%FT%TZ) $(uname -r) $(go version) sockets=$count rounds=$ROUNDS benchtime=$BENCHTIME"
} >"$WORK/bench.txt"
# One process per benchmark, in an order rotated each round, so that
# neither a benchmark's position nor the heap its predecessor left behind
# favours it.
mapfile -t benches < <("$WORK/bench.test" -test.list '^Benchmark' | grep -v Paced)
for ((r = 0; r < ROUNDS; r++)); do
	log "benchmark round $((r + 1))/$ROUNDS"
	for ((i = 0; i < ${#benches[@]}; i++)); do
		b=${benches[(i + r) % ${#benches[@]}]}
		if ! ip netns exec "$NS" "$WORK/bench.test" -test.run '^$' -test.bench "^$b\$" \
			-test.benchtime "$BENCHTIME" -test.count 1 >"$WORK/last.txt" 2>&1; then
			cat "$WORK/last.txt" >&2
			exit 1
		fi
		cat "$WORK/last.txt" >>"$WORK/bench.txt"
		grep -E -A1 '^(Benchmark|--- SKIP)' "$WORK/last.txt" | grep -v -e '^--$' -e '^PASS' || true
	done
done

# TICKS: user+system clock ticks of process $1, read without forking so
# that sampling does not load the machine.
TICKS=0
cpu_ticks() {
	local line f
	read -r line <"/proc/$1/stat"
	read -ra f <<<"${line##*) }" # fields from 3 on: utime is 14, stime 15
	TICKS=$((f[11] + f[12]))
}

# wait_after_poll PID: returns 0.3 s after the process ends a burst of
# CPU use, that is just after a poll. Windows measured between two such
# points start and end at the same phase of the interval, so they hold a
# whole number of polls: their length rounded to seconds.
wait_after_poll() {
	local last still=0 waited=0
	cpu_ticks "$1"
	last=$TICKS
	# A poll first (up to 3 s: a poll too short to register a tick is
	# not waited for)…
	while ((TICKS == last && waited < 150)); do
		sleep 0.02
		waited=$((waited + 1))
		cpu_ticks "$1"
	done
	last=$TICKS
	# …then 0.3 s of idleness.
	while ((still < 15)); do
		sleep 0.02
		cpu_ticks "$1"
		if ((TICKS == last)); then
			still=$((still + 1))
		else
			still=0
			last=$TICKS
		fi
	done
}

daemon_args=()
if [[ -n $daemon_bin ]]; then
	cat >"$WORK/connlogd.yaml" <<-EOF
		interval: 1s
		sinks:
		  - type: file
		    path: $WORK/events.jsonl
	EOF
	if ! "$daemon_bin" -config "$WORK/connlogd.yaml" -check-config >"$WORK/check-config.log" 2>&1; then
		daemon_note="the daemon rejects the benchmark configuration ($WORK/check-config.log): not measured"
		log "$daemon_note"
		daemon_bin=
	fi
fi
# paced_baseline: the minimal dump at the daemon's cadence, DAEMON_SECONDS/2
# polls; run before and after the daemon so that its window is bracketed.
paced_baseline() {
	log "minimal dump paced at 1s, $((DAEMON_SECONDS / 2)) polls"
	ip netns exec "$NS" "$WORK/bench.test" -test.run '^$' -test.bench '^BenchmarkMinimalDumpPaced$' \
		-test.benchtime "$((DAEMON_SECONDS / 2))x" -test.count 1 -paced 1s >"$WORK/last.txt" 2>&1 || {
		cat "$WORK/last.txt" >&2
		exit 1
	}
	cat "$WORK/last.txt" >>"$WORK/bench.txt"
	grep '^Benchmark' "$WORK/last.txt"
}

if [[ -n $daemon_bin ]]; then
	paced_baseline
	log "daemon: ${WARMUP}s warm-up, then ${DAEMON_SECONDS}s measured"
	read -ra denv <<<"${DAEMON_ENV:-}"
	# ip netns exec and env exec in place, so $! is the daemon.
	ip netns exec "$NS" env "${denv[@]}" "$daemon_bin" -config "$WORK/connlogd.yaml" \
		</dev/null >"$WORK/daemon.out" 2>"$WORK/daemon.log" &
	DAEMON_PID=$!
	sleep "$WARMUP"
	kill -0 "$DAEMON_PID" 2>/dev/null || {
		log "the daemon exited: $(tail -5 "$WORK/daemon.log")"
		exit 1
	}
	wait_after_poll "$DAEMON_PID"
	cpu_ticks "$DAEMON_PID"
	c0=$TICKS t0=$(date +%s%N) lines0=$(wc -l <"$WORK/events.jsonl")
	load0=$(cut -d' ' -f1-3 /proc/loadavg)
	sleep "$DAEMON_SECONDS"
	wait_after_poll "$DAEMON_PID"
	cpu_ticks "$DAEMON_PID"
	c1=$TICKS t1=$(date +%s%N) lines1=$(wc -l <"$WORK/events.jsonl")
	hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$DAEMON_PID/status")
	rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$DAEMON_PID/status")
	kill -TERM "$DAEMON_PID"
	wait "$DAEMON_PID" || log "the daemon exited with status $?"
	DAEMON_PID=
	# Both ends of the window are just after a poll; the interval is 1s.
	polls=$(((t1 - t0 + 500000000) / 1000000000))
	cpu_ns=$(((c1 - c0) * 1000000000 / $(getconf CLK_TCK)))
	if ((lines1 != lines0)); then
		daemon_note="$((lines1 - lines0)) events during the window: the table was not steady"
	fi
	log "daemon: $polls polls, $((c1 - c0)) ticks, VmHWM ${hwm} KiB, VmRSS ${rss} KiB, $lines0 events at start"
	# The machine may be shared: the load beside the figures.
	daemon_note="${daemon_note:+$daemon_note; }load average $load0 at the window's start, $(cut -d' ' -f1-3 /proc/loadavg) at its end"
	paced_baseline
	daemon_args=(-daemon-cpu-ns "$cpu_ns" -daemon-polls "$polls" -daemon-hwm-kib "$hwm" -daemon-rss-kib "$rss")
fi

if [[ -n ${DAEMON_ENV:-} && -n ${daemon_args[*]} ]]; then
	daemon_note="${daemon_note:+$daemon_note; }run with $DAEMON_ENV"
fi
echo
"$WORK/benchsum" -in "$WORK/bench.txt" "${daemon_args[@]}" -daemon-note "$daemon_note" | tee "$WORK/summary.txt"
echo
log "results in $WORK"
