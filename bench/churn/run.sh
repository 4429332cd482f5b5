#!/usr/bin/env bash
# run.sh: the short-connection benchmark (README.md). In network namespace
# connlogd-churn it runs connlogd (interval 1s, file sink, default destroy
# settings) and bench/churn twice:
#
#  a. latency: LAT_RATE connections/s for LAT_SECONDS, a load the machine
#     carries easily, so the close-to-event latency is the daemon's own
#  b. churn: as many connections/s as CHURN_WORKERS clients manage (or
#     CHURN_RATE/s) for CHURN_SECONDS
#
# sampling the daemon's utime+stime (/proc/PID/stat) around each pass,
# then bench/churn/analyze on each. The namespace, the daemon and the
# generator are removed on exit, also on failure.
#
# Environment: LAT_RATE (1000), LAT_SECONDS (20), LAT_WORKERS (4),
# CHURN_SECONDS (60), CHURN_WORKERS (4), CHURN_RATE (0: unpaced),
# ADDRS (4 server addresses 127.0.0.1..N), LINGER0=1 (clients close with
# SO_LINGER 0: RST, no TIME_WAIT), GEN_NICE (run the generator at this
# niceness, e.g. 19, so the daemon gets the CPU it asks for), QUIET_WAIT
# (300: seconds to wait for an idle machine before each pass), METRICS=1
# (serve the daemon's metrics in the namespace and report the polls'
# durations; recent versions only), SAMPLE (10: seconds between samples
# of the daemon's CPU and RSS during a pass), SKIP_LATENCY=1, SKIP_CHURN=1, KEEP=1
# (keep the event and record files), CONNLOGD_REV (build connlogd from
# this commit, e.g. HEAD, instead of the working tree, which may be
# mid-edit), CONNLOGD (a daemon binary to use as is), AUDIT=1 (audit
# attribution on; counts the closed events that name their process). Results stay in a
# directory under /tmp, printed at the end.
set -euo pipefail

LAT_RATE=${LAT_RATE:-1000}
LAT_SECONDS=${LAT_SECONDS:-20}
LAT_WORKERS=${LAT_WORKERS:-4}
CHURN_SECONDS=${CHURN_SECONDS:-60}
CHURN_WORKERS=${CHURN_WORKERS:-4}
CHURN_RATE=${CHURN_RATE:-0}
ADDRS=${ADDRS:-4}
NS=${CHURN_NS:-connlogd-churn}
BIN=/tmp/$NS
# Past two polls after a pass: closes confirmed by a poll are in by then.
SETTLE=3

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"

log() { echo "churn-run: $*" >&2; }

WORK=$(mktemp -d /tmp/connlogd-churn-run.XXXXXX)
NS_MADE=
DAEMON_PID=
GEN_PID=

cleanup() {
	local rc=$?
	if [[ -n $GEN_PID ]] && kill -0 "$GEN_PID" 2>/dev/null; then
		kill -TERM "$GEN_PID" 2>/dev/null || true
		wait "$GEN_PID" 2>/dev/null || true
	fi
	stop_daemon || rc=1
	if [[ -n $NS_MADE ]]; then
		ip netns del "$NS" || rc=1
	fi
	# Event files reach gigabytes at full churn.
	if [[ ${KEEP:-} != 1 ]]; then
		rm -f "$WORK"/*.jsonl "$WORK"/*.csv
	fi
	log "results in $WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop_daemon() {
	[[ -n $DAEMON_PID ]] || return 0
	local pid=$DAEMON_PID rc=0
	DAEMON_PID=
	kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || rc=$?; return "$rc"; }
	kill -TERM "$pid"
	for _ in $(seq 150); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		log "connlogd ignored SIGTERM for 15 s; killing it"
		kill -KILL "$pid"
	fi
	wait "$pid" || rc=$?
	return "$rc"
}

# cpu_ticks PID: utime+stime in clock ticks (fields 14 and 15; the
# command name in field 2 may hold spaces, so split after its ')').
cpu_ticks() {
	local stat rest
	stat=$(<"/proc/$1/stat")
	rest=${stat##*) }
	read -r -a f <<<"$rest"
	echo $((f[11] + f[12]))
}

# busy_ticks: the whole machine's non-idle ticks, all ticks, and softirq
# ticks (loopback packets are processed there), to show how loaded it was.
busy_ticks() {
	local user nice sys idle iowait irq softirq steal
	read -r _ user nice sys idle iowait irq softirq steal _ </proc/stat
	echo $((user + nice + sys + irq + softirq + steal)) $((user + nice + sys + idle + iowait + irq + softirq + steal)) "$softirq"
}

now() { date +%s.%N; }

# proc_ticks: "PID COMM TICKS" for every task on the machine, to name what
# else used the CPU during a pass. (Reaped children are not counted: a
# child's whole life lands in its parent at once.) The command name may
# hold spaces and parentheses; the fields after its last ')' are fixed.
# Tasks vanish while cat reads them: not an error.
proc_ticks() {
	{ cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk '{
		i = index($0, "("); j = length($0); while (substr($0, j, 1) != ")") j--
		comm = substr($0, i + 1, j - i - 1); gsub(/ /, "_", comm)
		split(substr($0, j + 2), f, " ")
		print $1, comm, f[12] + f[13]
	}'
}

# metrics NAME: the daemon's Prometheus samples whose name starts with
# NAME (METRICS=1 only; empty otherwise).
metrics() {
	[[ ${METRICS:-} == 1 ]] || return 0
	ip netns exec "$NS" curl -s --max-time 5 "http://$METRICS_ADDR/metrics" | grep "^$1" || true
}

# wait_quiet: on a shared machine, wait (up to QUIET_WAIT s) for a 5 s
# window in which the machine is at least 90% idle, so that other work
# does not compete with the pass; say so when it never comes.
wait_quiet() {
	local deadline=$((SECONDS + ${QUIET_WAIT:-300})) b0 b1
	while ((SECONDS < deadline)); do
		b0=$(busy_ticks)
		sleep 5
		b1=$(busy_ticks)
		if echo "$b0 $b1" | awk '{ exit !(($4 - $1) * 10 < ($5 - $2)) }'; then
			return 0
		fi
	done
	log "machine still busy after ${QUIET_WAIT:-300} s; measuring anyway"
	echo "WARNING: the machine was busy with other work when this pass started" >>"$WORK/summary.txt"
}

if ip netns list | awk '{ print $1 }' | grep -qx "$NS"; then
	log "namespace $NS exists: another run, or a leftover (ip netns del $NS)"
	exit 1
fi

log "building into $WORK"
if [[ -n ${CONNLOGD:-} ]]; then
	BIN=$CONNLOGD
	daemon_src="$CONNLOGD (given)"
elif [[ -n ${CONNLOGD_REV:-} ]]; then
	rev=$(git rev-parse --short "$CONNLOGD_REV")
	mkdir "$WORK/src"
	git archive "$rev" | tar -x -C "$WORK/src"
	(cd "$WORK/src" && go build -o "$BIN" ./cmd/connlogd)
	rm -rf "$WORK/src"
	daemon_src="commit $rev"
else
	go build -o "$BIN" ./cmd/connlogd
	daemon_src="working tree at $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!bench' || echo ' + uncommitted changes')"
fi
go build -o "$WORK/churn" ./bench/churn
go build -o "$WORK/analyze" ./bench/churn/analyze
TCK=$(getconf CLK_TCK)

ip netns add "$NS"
NS_MADE=1
# Another job's net.ipv4.tcp_child_ehash_entries on the host gives a new
# namespace a hash of its own, with 64 TIME_WAIT buckets instead of 131072:
# a different benchmark. Such settings are often brief (a test's): make
# the namespace again for up to a minute before measuring anyway.
for _ in $(seq 30); do
	(($(ip netns exec "$NS" sysctl -n net.ipv4.tcp_max_tw_buckets) >= 65536)) && break
	ip netns del "$NS"
	sleep 2
	ip netns add "$NS"
done
ip -n "$NS" link set lo up
# A 60 s run at thousands of connections/s would exhaust the default
# 28k ephemeral ports with TIME_WAIT: widen the range and let connect
# reuse TIME_WAIT tuples (the server port stays above the range).
ip netns exec "$NS" sysctl -q -w net.ipv4.ip_local_port_range="1024 65000" net.ipv4.tcp_tw_reuse=1

cat >"$WORK/config.yaml" <<CFG
interval: 1s
sinks:
  - type: file
    path: $WORK/events.jsonl
CFG
# AUDIT=1: audit attribution on (owners of every connection, however
# short); the analysis then counts the closed events that name a process.
if [[ ${AUDIT:-} == 1 ]]; then
	printf 'attribution:\n  audit: true\n' >>"$WORK/config.yaml"
fi
# Metrics give the poll durations, which hold notifications back; the key
# exists only in recent versions of the configuration.
METRICS_ADDR=127.0.0.1:9477
if [[ ${METRICS:-} == 1 ]]; then
	printf 'metrics:\n  listen: %s\n' "$METRICS_ADDR" >>"$WORK/config.yaml"
fi
ip netns exec "$NS" "$BIN" -config "$WORK/config.yaml" 2>"$WORK/daemon.log" &
DAEMON_PID=$!
# ip netns exec execs the daemon in place: the PID is connlogd's.
for _ in $(seq 50); do
	[[ -s $WORK/events.jsonl ]] && break
	kill -0 "$DAEMON_PID" 2>/dev/null || { cat "$WORK/daemon.log" >&2; exit 1; }
	sleep 0.1
done
[[ $(</proc/$DAEMON_PID/comm) == "$(basename "$BIN" | cut -c1-15)" ]] || { log "PID $DAEMON_PID is not connlogd"; exit 1; }
sleep 2

{
	echo "date:    $(date -u +%FT%TZ)"
	echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), kernel $(uname -r), $(go version | cut -d' ' -f3)"
	echo "connlogd: $daemon_src"
	echo "generator niceness: ${GEN_NICE:-0}"
	# Past tcp_max_tw_buckets the kernel drops TIME_WAIT sockets: fewer
	# remnants to dump and to confuse with new sockets.
	echo "namespace: $(ip netns exec "$NS" sysctl net.ipv4.tcp_max_tw_buckets net.ipv4.tcp_ehash_entries | tr '\n' ' ')"
	# The host's net.ipv4.tcp_child_ehash_entries, when set, gives a new
	# namespace a hash of its own, and half as many TIME_WAIT buckets.
	if (($(ip netns exec "$NS" sysctl -n net.ipv4.tcp_max_tw_buckets) < 65536)); then
		echo "WARNING: few TIME_WAIT buckets (net.ipv4.tcp_child_ehash_entries on the host?): not comparable with other runs"
	fi
} >"$WORK/summary.txt"

# Idle cost, for reference: a near-empty table polled every second.
wait_quiet
c0=$(cpu_ticks "$DAEMON_PID"); t0=$(now)
sleep 5
c1=$(cpu_ticks "$DAEMON_PID"); t1=$(now)
awk -v c="$((c1 - c0))" -v tck="$TCK" -v t0="$t0" -v t1="$t1" \
	'BEGIN { printf "idle daemon: %.2f%% of one core\n", 100 * c / tck / (t1 - t0) }' >>"$WORK/summary.txt"

# pass NAME PORT CHURN-FLAGS...: one generator run, with the daemon's CPU
# during it and up to SETTLE s after (the closes it still had to log).
pass() {
	local name=$1 port=$2
	shift 2
	log "pass $name: churn $*"
	local c0 c1 c2 t0 t1 b0 b1 load0
	wait_quiet
	proc_ticks >"$WORK/$name.procs0"
	load0=$(cut -d' ' -f1-3 /proc/loadavg)
	metrics connlogd_poll_duration_seconds >"$WORK/$name.metrics0"
	b0=$(busy_ticks)
	c0=$(cpu_ticks "$DAEMON_PID")
	t0=$(now)
	ip netns exec "$NS" nice -n "${GEN_NICE:-0}" "$WORK/churn" -port "$port" -addrs "$ADDRS" -out "$WORK/$name.csv" "$@" >"$WORK/$name.gen" &
	GEN_PID=$!
	sample "$WORK/$name.samples" &
	local sampler=$!
	wait "$GEN_PID"
	GEN_PID=
	kill "$sampler" 2>/dev/null || true
	wait "$sampler" 2>/dev/null || true
	c1=$(cpu_ticks "$DAEMON_PID")
	t1=$(now)
	b1=$(busy_ticks)
	proc_ticks >"$WORK/$name.procs1"
	metrics connlogd_poll_duration_seconds >"$WORK/$name.metrics1"
	local sockets
	sockets=$(metrics connlogd_sockets | awk '{ n += $2 } END { print n + 0 }')
	sleep "$SETTLE"
	c2=$(cpu_ticks "$DAEMON_PID")
	cat "$WORK/$name.gen" >&2
	local made
	made=$(sed -n 's/.* made=\([0-9]*\) .*/\1/p' "$WORK/$name.gen")
	{
		echo
		echo "== $name: churn $*"
		echo "load average at start: $load0; at end: $(cut -d' ' -f1-3 /proc/loadavg)"
		cat "$WORK/$name.gen"
		ip netns exec "$NS" nstat -asz TcpExtTCPTimeWaitOverflow | awk 'NR > 1 && $1 ~ /^TcpExt/ { print "kernel: " $1 " (cumulative) " $2 }'
		local gen
		gen=$(sed -n 's/.* cpu_pct=\([0-9]*\) .*/\1/p' "$WORK/$name.gen")
		# Whatever is neither daemon, generator nor softirq: kernel
		# threads (the destroy broadcasts run in kworkers) and other
		# users of the machine, which make a pass unreliable.
		echo "$b0 $b1" | awk -v n="$(nproc)" -v gen="$gen" -v c="$((c1 - c0))" -v tck="$TCK" -v t0="$t0" -v t1="$t1" '{
			busy = 100 * n * ($4 - $1) / ($5 - $2); d = 100 * c / tck / (t1 - t0); si = 100 * n * ($6 - $3) / ($5 - $2)
			printf "machine busy: %.0f%% of %d CPUs; softirq %.0f%% of one core; neither daemon, generator nor softirq: %.0f%% of one core%s\n",
				busy / n, n, si, busy - d - gen - si, (busy - d - gen - si > 25 ? " (other work competed: rerun when the machine is quiet)" : "")
		}'
		# Tasks alive through the whole pass (so not the generator):
		# short-lived ones are missed, the "neither" figure above is not.
		awk -v me="$DAEMON_PID" '
			NR == FNR { before[$1] = $3; next }
			($1 in before) && $1 != me && $3 > before[$1] { use[$2] += $3 - before[$1] }
			END { for (c in use) print use[c], c }' "$WORK/$name.procs0" "$WORK/$name.procs1" |
			sort -rn | head -6 | awk -v tck="$TCK" -v t0="$t0" -v t1="$t1" '
			{ out = out sprintf(" %s %.0f%%", $2, 100 * $1 / tck / (t1 - t0)) }
			END { print "busiest other tasks, % of one core:" out }'
		if [[ ${METRICS:-} == 1 ]]; then
			# Polls during the pass: count, mean, and the histogram's
			# bucket holding the slowest.
			awk -v socks="$sockets" '
				NR == FNR { before[$1] = $2; next }
				{ d[$1] = $2 - before[$1] }
				/_bucket/ && d[$1] > prev { slow = $1; sub(/.*le="/, "", slow); sub(/".*/, "", slow) }
				/_bucket/ { prev = d[$1] }
				END {
					n = d["connlogd_poll_duration_seconds_count"]; s = d["connlogd_poll_duration_seconds_sum"]
					if (n > 0) printf "polls: %d, mean %.0f ms, slowest <= %s s; %d sockets in the last poll\n", n, 1000 * s / n, slow, socks
				}' "$WORK/$name.metrics0" "$WORK/$name.metrics1"
		fi
		awk -v c01="$((c1 - c0))" -v c02="$((c2 - c0))" -v tck="$TCK" -v t0="$t0" -v t1="$t1" -v n="$made" -v s="$SETTLE" 'BEGIN {
			printf "daemon CPU: %.1f%% of one core during the pass; %.2f s in all (to %d s after), %.1f ms per 1000 connections\n",
				100 * c01 / tck / (t1 - t0), c02 / tck, s, 1000 * c02 / tck / n * 1000
		}'
		# CPU (% of one core over each sample period) and RSS over time.
		awk -v tck="$TCK" 'NR > 1 && $1 > pt { printf "%s %ds %.0f%% %.1fMiB", (n++ ? "," : "daemon over time (s since start: CPU, RSS):"), $1, 100 * ($2 - pc) / tck / ($1 - pt), $3 / 1024 }
			{ pt = $1; pc = $2 } END { if (n) print "" }' "$WORK/$name.samples"
	} >>"$WORK/summary.txt"
}

# sample FILE: every SAMPLE seconds (10), the seconds since the pass
# began, the daemon's utime+stime ticks and its VmRSS in KiB, until
# killed: CPU and RSS over the pass, to see them flat or growing.
sample() {
	local t0=$SECONDS
	while kill -0 "$DAEMON_PID" 2>/dev/null; do
		echo "$((SECONDS - t0)) $(cpu_ticks "$DAEMON_PID") $(awk '/^VmRSS:/ { print $2 }' "/proc/$DAEMON_PID/status")"
		sleep "${SAMPLE:-10}"
	done >"$1"
}

# Separate server ports keep the passes apart in the one event file.
if [[ ${SKIP_LATENCY:-} != 1 ]]; then
	pass latency 65101 -duration "${LAT_SECONDS}s" -workers "$LAT_WORKERS" -rate "$LAT_RATE"
fi
if [[ ${SKIP_CHURN:-} != 1 ]]; then
	linger=()
	[[ ${LINGER0:-} == 1 ]] && linger=(-linger0)
	pass churn 65102 -duration "${CHURN_SECONDS}s" -workers "$CHURN_WORKERS" -rate "$CHURN_RATE" "${linger[@]}"
fi

echo "daemon peak RSS: $(awk '/^VmHWM/ { print $2 " " $3 }' "/proc/$DAEMON_PID/status")" >>"$WORK/summary.txt"
# SIGTERM flushes the sink; analyse the complete file.
stop_daemon
for name in latency churn; do
	port=65101
	[[ $name == churn ]] && port=65102
	[[ -f $WORK/$name.csv ]] || continue
	{
		echo
		echo "== $name: analysis"
		"$WORK/analyze" -events "$WORK/events.jsonl" -records "$WORK/$name.csv" -port "$port"
		if [[ ${AUDIT:-} == 1 ]]; then
			# The generator's sockets: closed events toward the pass's port.
			closed=$(grep '"event":"closed"' "$WORK/events.jsonl" | grep -c "\"dst_port\":$port," || true)
			owned=$(grep '"event":"closed"' "$WORK/events.jsonl" | grep "\"dst_port\":$port," | grep -c '"pid":' || true)
			echo "owners: $owned of $closed closed client sockets name a process"
		fi
	} >>"$WORK/summary.txt"
done
{
	echo
	echo "== daemon warnings and errors (whole run; $WORK/daemon.log)"
	grep -E 'level=(WARN|ERROR)' "$WORK/daemon.log" | sed -E 's/^time=[^ ]+ //; s/ (count|overruns)=[0-9]+//' | sort | uniq -c || echo "none"
	grep 'msg=stopping' "$WORK/daemon.log" | sed -E 's/^time=[^ ]+ //' || true
} >>"$WORK/summary.txt"
echo "events file: $(du -h "$WORK/events.jsonl" | cut -f1)" >>"$WORK/summary.txt"
cat "$WORK/summary.txt"
