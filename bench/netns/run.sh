#!/usr/bin/env bash
# run.sh: the cost of watching many network namespaces, in one run.
#
#  1. ROUNDS rounds of the per-namespace benchmarks of this directory
#     (ns_test.go); each round runs every benchmark once, each in its own
#     process, in an order rotated from round to round, so that the ratios
#     taken within a round share its noise
#  2. for N in COUNTS (1 10 100): N namespaces connlogd-nsbench-1…N, each
#     with loopback up and a few sockets (nsfill: a TCP listener, one
#     established loopback pair, one UDP socket), and for each variant in
#     VARIANTS the daemon (cmd/connlogd) in the host namespace at interval
#     1s, namespace_rescan 5s, a file sink; its CPU over DAEMON_SECONDS
#     from /proc/PID/stat, its namespace polls from its own metrics;
#     alongside it, over the same window, the baseline: a second daemon
#     watching the host namespace only
#  3. a summary (nssum), then everything removed, also on failure
#
# Variants: all (`namespaces: all`: every namespace on the host, other
# engineers' included), listed (host and ours only, by name), ownhash
# (listed, with namespaces created with their own TCP and UDP hashes of
# OWN_HASH buckets instead of sharing the host's).
#
# Environment: COUNTS ("1 10 100"), VARIANTS ("all listed ownhash"),
# ROUNDS (5), BENCHTIME (1s, -test.benchtime), DAEMON_SECONDS (20),
# OWN_HASH (1024), LOAD (0: TCP sockets to hold, for the whole run, in one
# more namespace, connlogd-nsbench-load, which shares the host's hashes:
# a known floor of "sockets elsewhere on the host"), CONNLOGD (a daemon
# binary instead of building one), SKIP_BENCH=1 (daemon runs only),
# SKIP_DAEMON=1 (benchmarks only).
# Results stay in a directory under /tmp, printed at the end.
set -euo pipefail

COUNTS=${COUNTS:-"1 10 100"}
VARIANTS=${VARIANTS:-"all listed ownhash"}
ROUNDS=${ROUNDS:-5}
BENCHTIME=${BENCHTIME:-1s}
DAEMON_SECONDS=${DAEMON_SECONDS:-20}
OWN_HASH=${OWN_HASH:-1024}
LOAD=${LOAD:-0}
PREFIX=connlogd-nsbench

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"

log() { echo "run: $*" >&2; }
die() {
	log "$*"
	exit 1
}

[[ $(id -u) == 0 ]] || die "needs root (ip netns, setns)"
command -v ip >/dev/null || die "needs ip (iproute2)"
command -v curl >/dev/null || die "needs curl (reads the daemon's metrics)"
have_nsenter=0
if command -v nsenter >/dev/null; then
	have_nsenter=1
fi

WORK=$(mktemp -d /tmp/connlogd-nsbench-run.XXXXXX)
DAEMON_PID=
BASE_PID=
FILL_PID=
LOAD_PIDS=()
LOAD_NS=
CREATED=() # namespaces this run created and has not deleted

stop_pid() { # stop_pid PID: TERM, then KILL after 10 s
	local pid=$1 i
	kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

delete_ns() {
	local ns rc=0
	for ns in "${CREATED[@]}"; do
		ip netns del "$ns" 2>/dev/null || {
			log "could not delete namespace $ns"
			rc=1
		}
	done
	CREATED=()
	return "$rc"
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [[ -n $DAEMON_PID ]]; then
		stop_pid "$DAEMON_PID"
	fi
	if [[ -n $BASE_PID ]]; then
		stop_pid "$BASE_PID"
	fi
	if [[ -n $FILL_PID ]]; then
		stop_pid "$FILL_PID"
	fi
	for pid in "${LOAD_PIDS[@]}"; do
		stop_pid "$pid"
	done
	if [[ -n $LOAD_NS ]]; then
		CREATED+=("$LOAD_NS")
	fi
	delete_ns || rc=1
	# The event files hold a line per socket of every watched namespace.
	rm -f "$WORK"/*.jsonl
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Build everything before measuring anything.
log "building into $WORK"
go test -c -o "$WORK/ns.test" ./bench/netns
go build -o "$WORK/nsfill" ./bench/netns/nsfill
go build -o "$WORK/nssum" ./bench/netns/nssum
daemon_bin=${CONNLOGD:-}
if [[ -z $daemon_bin && ${SKIP_DAEMON:-} != 1 ]]; then
	daemon_bin=/tmp/connlogd-nsbench
	go build -o "$daemon_bin" ./cmd/connlogd
fi

# sockstat_field LINE FIELD [FILE]: a count from a sockstat file.
sockstat_field() {
	awk -v l="$1:" -v f="$2" '$1 == l { for (i = 2; i < NF; i += 2) if ($i == f) print $(i + 1) }' "${3:-/proc/net/sockstat}"
}

# host_load: prints the TCP sockets of every namespace, TIME_WAIT
# included, as ns_test.go's hostTCP counts them: sockstat's alloc (all
# namespaces, no TIME_WAIT) plus the tw of each namespace (its own only).
# Ours are skipped: they hold no TIME_WAIT socket.
host_load() {
	local total ino p tw seen=" "
	total=$(sockstat_field TCP alloc)
	if ((have_nsenter)); then
		while read -r ino p; do
			[[ $seen == *" $ino "* || $p == /run/netns/$PREFIX-* ]] && continue
			seen+="$ino "
			tw=$(nsenter --net="$p" cat /proc/net/sockstat 2>/dev/null | sockstat_field TCP tw -) || true
			total=$((total + ${tw:-0}))
		done < <(stat -L -c '%i %n' /run/netns/* /proc/[0-9]*/ns/net 2>/dev/null || true)
	fi
	echo "$total"
}

{
	echo "# $(date -u +%FT%TZ) $(uname -r) $(go version)"
	echo "# host: $(ip netns list | wc -l) named namespaces, $(find /proc/[0-9]*/ns/net -maxdepth 0 -printf '%l\n' 2>/dev/null | sort -u | wc -l) namespaces of processes," \
		"$(sockstat_field TCP alloc) TCP sockets host-wide (sockstat alloc), $(host_load) with TIME_WAIT," \
		"tcp_ehash_entries $(cat /proc/sys/net/ipv4/tcp_ehash_entries)," \
		"tcp_child_ehash_entries $(cat /proc/sys/net/ipv4/tcp_child_ehash_entries 2>/dev/null || echo -)"
} | tee "$WORK/header.txt" >&2

# create_ns ENTRIES NAME…: namespaces with loopback up. The size of a new
# namespace's TCP and UDP hashes is read from the sysctls
# tcp_child_ehash_entries and udp_child_hash_entries of the namespace its
# creator is in (0: share the host's), so they are created from a scratch
# parent that sets both: the host's own sysctls are left alone, and
# whatever another user set there does not change our namespaces.
create_ns() {
	local entries=$1 parent=$PREFIX-parent-$$ ns
	shift
	for ns in "$@" "$parent"; do
		[[ ! -e /run/netns/$ns ]] || die "namespace $ns exists already (another run? delete it with ip netns del $ns)"
	done
	if ((have_nsenter)); then
		ip netns add "$parent"
		CREATED+=("$parent")
		if ! nsenter --net="/run/netns/$parent" sysctl -q -w \
			"net.ipv4.tcp_child_ehash_entries=$entries" "net.ipv4.udp_child_hash_entries=$entries" >/dev/null 2>&1 &&
			((entries != 0)); then
			die "cannot set tcp_child_ehash_entries (kernel before 5.19/6.2?)"
		fi
	elif ((entries != 0)); then
		die "own hashes need nsenter (util-linux)"
	fi
	for ns in "$@"; do
		if ((have_nsenter)); then
			nsenter --net="/run/netns/$parent" ip netns add "$ns"
		else
			ip netns add "$ns"
		fi
		CREATED+=("$ns")
		ip -n "$ns" link set lo up
	done
	if ((have_nsenter)); then
		ip netns del "$parent"
		local kept=()
		for ns in "${CREATED[@]}"; do
			[[ $ns == "$parent" ]] || kept+=("$ns")
		done
		CREATED=("${kept[@]}")
	fi
	# Negative: the namespace shares the host's hash.
	BUCKETS=$(nsenter --net="/run/netns/$1" cat /proc/sys/net/ipv4/tcp_ehash_entries 2>/dev/null ||
		ip netns exec "$1" cat /proc/sys/net/ipv4/tcp_ehash_entries)
	if ((entries == 0 && BUCKETS > 0)) || ((entries != 0 && BUCKETS <= 0)); then
		die "namespace $1 has tcp_ehash_entries $BUCKETS, asked for $entries (0: shared)"
	fi
}

if ((LOAD > 0)); then
	log "load: $LOAD TCP sockets in $PREFIX-load"
	create_ns 0 "$PREFIX-load"
	LOAD_NS=$PREFIX-load
	CREATED=()
	# Processes of at most 9000 connections: the open-file limit may not
	# be raised past 20000 here.
	procs=$(((LOAD + 17999) / 18000))
	for ((p = 0; p < procs; p++)); do
		: >"$WORK/load-$p.out"
		"$WORK/nsfill" -pairs "$(((LOAD / procs + 1) / 2))" "$LOAD_NS" >"$WORK/load-$p.out" 2>&1 &
		LOAD_PIDS+=($!)
	done
	for ((p = 0; p < procs; p++)); do
		for ((i = 0; i < 600; i++)); do
			grep -q '^ready' "$WORK/load-$p.out" && break
			kill -0 "${LOAD_PIDS[p]}" 2>/dev/null || die "the load did not start: $(cat "$WORK/load-$p.out")"
			sleep 0.1
		done
		grep -q '^ready' "$WORK/load-$p.out" || die "the load did not get ready in 60 s"
	done
	cat "$WORK"/load-*.out >"$WORK/load.out"
	echo "# load: $(awk '{ n += $3 } END { print n }' "$WORK/load.out") sockets in $LOAD_NS ($procs processes); host now: $(host_load) TCP sockets with TIME_WAIT" |
		tee -a "$WORK/header.txt" >&2
fi

# ---------------------------------------------------------------- benchmarks

: >"$WORK/bench.txt"
if [[ ${SKIP_BENCH:-} != 1 ]]; then
	mapfile -t benches < <("$WORK/ns.test" -test.list '^Benchmark')
	for ((r = 0; r < ROUNDS; r++)); do
		log "benchmark round $((r + 1))/$ROUNDS"
		echo "# round $((r + 1))" >>"$WORK/bench.txt"
		for ((i = 0; i < ${#benches[@]}; i++)); do
			b=${benches[(i + r) % ${#benches[@]}]}
			if ! "$WORK/ns.test" -test.run '^$' -test.bench "^$b\$" \
				-test.benchtime "$BENCHTIME" -test.count 1 >"$WORK/last.txt" 2>&1; then
				cat "$WORK/last.txt" >&2
				exit 1
			fi
			grep -E '^(Benchmark|--- SKIP|    )' "$WORK/last.txt" | tee -a "$WORK/bench.txt" >&2 || true
		done
	done
fi

# ------------------------------------------------------------------- daemon

start_fill() {
	: >"$WORK/nsfill.out"
	"$WORK/nsfill" "$@" >"$WORK/nsfill.out" 2>&1 &
	FILL_PID=$!
	local i
	for ((i = 0; i < 300; i++)); do
		grep -q '^ready' "$WORK/nsfill.out" && return 0
		kill -0 "$FILL_PID" 2>/dev/null || break
		sleep 0.1
	done
	die "nsfill did not get ready: $(cat "$WORK/nsfill.out")"
}

stop_fill() {
	stop_pid "$FILL_PID"
	FILL_PID=
}

# TICKS: user+system clock ticks of process $1, read without forking.
TICKS=0
cpu_ticks() {
	local line f
	read -r line <"/proc/$1/stat"
	read -ra f <<<"${line##*) }" # fields from 3 on: utime is 14, stime 15
	TICKS=$((f[11] + f[12]))
}

# CPU_NS: CPU time in ns of process $1 (the sum over its live threads of
# sum_exec_runtime, /proc/PID/task/TID/schedstat), read without forking:
# precise where /proc/PID/stat counts 10 ms ticks. Time of threads that
# exit is lost; the Go runtime seldom ends threads.
CPU_NS=0
cpu_ns() {
	local t a sum=0
	for t in /proc/"$1"/task/*/schedstat; do
		read -r a _ 2>/dev/null <"$t" || continue
		sum=$((sum + a))
	done
	CPU_NS=$sum
}

# wait_after_poll PID: returns 0.3 s after the process ends a burst of CPU
# use (0.3 ms or more within 20 ms), that is just after a poll, so that
# windows between two such points hold a whole number of polls. Each wait
# is capped at 3 s: a daemon never idle for 0.3 s (destroy notifications
# from a busy namespace) is measured over an unaligned window, off by at
# most one poll.
wait_after_poll() {
	local last still=0 waited=0
	cpu_ns "$1"
	last=$CPU_NS
	while ((waited < 150)); do
		sleep 0.02
		waited=$((waited + 1))
		cpu_ns "$1"
		((CPU_NS - last >= 300000)) && break
		last=$CPU_NS
	done
	last=$CPU_NS waited=0
	while ((still < 15 && waited < 150)); do
		sleep 0.02
		waited=$((waited + 1))
		cpu_ns "$1"
		if ((CPU_NS - last < 100000)); then
			still=$((still + 1))
		else
			still=0
		fi
		last=$CPU_NS
	done
}

# scrape ADDR: "POLLS SECONDS", the daemon's namespace polls so far (host
# included) and the time they took, from its metrics.
scrape() {
	curl -fsS --max-time 5 "http://$1/metrics" | awk '
		$1 == "connlogd_poll_duration_seconds_count" { c = $2 }
		$1 == "connlogd_poll_duration_seconds_sum" { s = $2 }
		END { printf "%d %.6f\n", c, s }'
}

# count_seen FILE: how many of our namespaces have an event in FILE.
count_seen() {
	{ grep -o "\"netns_name\":\"$PREFIX-[0-9]*\"" "$1" || true; } | sort -u | wc -l
}

# host_tcp_sample: updates HOST_MIN and HOST_MAX with the host-wide TCP
# socket count, read without forking.
host_tcp_sample() {
	local l f v
	while read -r l; do
		[[ $l == TCP:* ]] || continue
		read -ra f <<<"$l"
		for ((v = 1; v + 1 < ${#f[@]}; v += 2)); do
			[[ ${f[v]} == alloc ]] || continue
			((HOST_MIN < 0 || f[v + 1] < HOST_MIN)) && HOST_MIN=${f[v + 1]}
			((f[v + 1] > HOST_MAX)) && HOST_MAX=${f[v + 1]}
		done
	done </proc/net/sockstat
}

# start_daemon CONFIG LOG: starts the daemon, sets STARTED to its pid.
start_daemon() {
	"$daemon_bin" -config "$1" -check-config >/dev/null || die "the daemon rejects $1"
	: >"$2" # before the daemon's own redirection, which may come later
	"$daemon_bin" -config "$1" </dev/null >/dev/null 2>"$2" &
	STARTED=$!
}

# run_daemon VARIANT N NAME…: one daemon run, with the baseline daemon
# (the host namespace only, no metrics) running alongside over the same
# window, so that both see the same host: other users' sockets come and
# go, and every shared-hash dump walks them. Appends a line to daemon.txt.
run_daemon() {
	local variant=$1 n=$2 tag=$1-$2 ns
	shift 2
	local cfg=$WORK/$tag.yaml dlog=$WORK/daemon-$tag.log events=$WORK/events-$tag.jsonl
	local bcfg=$WORK/base-$tag.yaml blog=$WORK/base-$tag.log
	{
		echo "interval: 1s"
		echo "namespace_rescan: 5s"
		if [[ $variant == all ]]; then
			echo "namespaces: all"
		else
			echo "namespaces:"
			echo "  - host"
			for ns in "$@"; do echo "  - $ns"; done
		fi
		echo "metrics:"
		echo "  listen: 127.0.0.1:0"
		echo "sinks:"
		echo "  - type: file"
		echo "    path: $events"
	} >"$cfg"
	{
		echo "interval: 1s"
		echo "sinks:"
		echo "  - type: file"
		echo "    path: $WORK/base-events-$tag.jsonl"
	} >"$bcfg"
	log "daemon $variant, $n namespaces: start (and the baseline)"
	local start_ns
	start_ns=$(date +%s%N)
	start_daemon "$bcfg" "$blog"
	BASE_PID=$STARTED
	start_daemon "$cfg" "$dlog"
	DAEMON_PID=$STARTED
	local i watched='' addr=''
	for ((i = 0; i < 1200; i++)); do
		watched=$(sed -n 's/.* msg=watching namespaces=\([0-9]*\).*/\1/p' "$dlog")
		[[ -n $watched ]] && break
		kill -0 "$DAEMON_PID" 2>/dev/null || die "the daemon exited: $(tail -5 "$dlog")"
		sleep 0.1
	done
	[[ -n $watched ]] || die "the daemon logged no 'watching' line in 120 s: $(tail -5 "$dlog")"
	addr=$(sed -n 's/.* msg=metrics listen=\([^ ]*\).*/\1/p' "$dlog")
	[[ -n $addr ]] || die "no metrics address in $dlog"
	# Warm-up. The first poll of a namespace logs its sockets. Past the
	# budget, namespaces are polled in turn, per_interval a second (the
	# warning, when logged before the "watching" line), so every one has
	# been polled ceil((watched-1)/per_interval) s after the first poll.
	# Wait for that, and for each namespace of ours to have logged its
	# sockets.
	local per warm t_watch now
	per=$(sed -n 's/.* per_interval=\([0-9]*\).*/\1/p' "$dlog" | head -1)
	warm=2
	if [[ -n $per ]] && ((per > 0)); then
		warm=$(((watched - 1 + per - 1) / per + 2))
	fi
	t_watch=$(date +%s)
	while :; do
		now=$(date +%s)
		((now - t_watch >= warm && $(count_seen "$events") >= n)) && break
		if ((now - t_watch > 120)); then
			log "warm-up: $(count_seen "$events") of our $n namespaces logged after 120 s; measuring anyway"
			break
		fi
		sleep 1
	done
	kill -0 "$BASE_PID" 2>/dev/null || die "the baseline daemon exited: $(tail -5 "$blog")"
	log "daemon $variant, $n namespaces: watching $watched, warm after $(($(date +%s%N) / 1000000 - start_ns / 1000000)) ms; measuring ${DAEMON_SECONDS}s"
	local c0 c1 b0 b1 n0 n1 bn0 bn1 load0 load1 t0 t1 p0 p1 s0 s1 e0 e1 hwm rss
	HOST_MIN=-1 HOST_MAX=0
	wait_after_poll "$DAEMON_PID"
	cpu_ticks "$BASE_PID"
	b0=$TICKS
	cpu_ns "$BASE_PID"
	bn0=$CPU_NS
	cpu_ticks "$DAEMON_PID"
	c0=$TICKS
	cpu_ns "$DAEMON_PID"
	n0=$CPU_NS t0=$(date +%s%N) e0=$(wc -l <"$events")
	load0=$(host_load)
	read -r p0 s0 < <(scrape "$addr")
	for ((i = 0; i < DAEMON_SECONDS; i++)); do
		host_tcp_sample
		sleep 1
	done
	wait_after_poll "$DAEMON_PID"
	cpu_ticks "$DAEMON_PID"
	c1=$TICKS
	cpu_ns "$DAEMON_PID"
	n1=$CPU_NS t1=$(date +%s%N) e1=$(wc -l <"$events")
	cpu_ticks "$BASE_PID"
	b1=$TICKS
	cpu_ns "$BASE_PID"
	bn1=$CPU_NS
	load1=$(host_load)
	host_tcp_sample
	read -r p1 s1 < <(scrape "$addr")
	hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$DAEMON_PID/status")
	rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$DAEMON_PID/status")
	stop_pid "$DAEMON_PID"
	DAEMON_PID=
	stop_pid "$BASE_PID"
	BASE_PID=
	local seen warns errors
	seen=$(count_seen "$events")
	# The warning may come after the first poll too.
	per=$(sed -n 's/.* per_interval=\([0-9]*\).*/\1/p' "$dlog" | head -1)
	warns=$(grep -c 'level=WARN' "$dlog" || true)
	errors=$(grep -c 'level=ERROR' "$dlog" || true)
	rm -f "$events" "$WORK/base-events-$tag.jsonl"
	echo "variant=$variant n=$n watched=$watched buckets=$BUCKETS" \
		"polls=$(((t1 - t0 + 500000000) / 1000000000)) ticks=$((c1 - c0)) base_ticks=$((b1 - b0)) clk_tck=$(getconf CLK_TCK)" \
		"cpu_ns=$((n1 - n0)) base_cpu_ns=$((bn1 - bn0))" \
		"nspolls=$((p1 - p0)) nspollsum=$(awk -v a="$s0" -v b="$s1" 'BEGIN { printf "%.6f", b - a }')" \
		"hwm=$hwm rss=$rss per_interval=${per:--} events=$((e1 - e0)) seen=$seen" \
		"warns=$warns errors=$errors host_tcp_min=$HOST_MIN host_tcp_max=$HOST_MAX" \
		"host_load0=$load0 host_load1=$load1" | tee -a "$WORK/daemon.txt" >&2
	if ((warns + errors > 0)); then
		{
			echo "$variant, $n namespaces: $warns warnings, $errors errors on stderr:"
			grep -E 'level=(WARN|ERROR)' "$dlog" | sed 's/^time=[^ ]* //' | sort | uniq -c | sort -rn | head -8
		} >>"$WORK/daemon-notes.txt"
	fi
	if grep -qE 'level=(WARN|ERROR)' "$blog"; then
		{
			echo "baseline of $variant, $n namespaces:"
			grep -E 'level=(WARN|ERROR)' "$blog" | sed 's/^time=[^ ]* //' | sort | uniq -c | sort -rn | head -8
		} >>"$WORK/daemon-notes.txt"
	fi
}

: >"$WORK/daemon.txt"
: >"$WORK/daemon-notes.txt"
if [[ ${SKIP_DAEMON:-} != 1 ]]; then
	for v in $VARIANTS; do
		case $v in
		all | listed | ownhash) ;;
		*) die "unknown variant $v (all, listed, ownhash)" ;;
		esac
	done
	for n in $COUNTS; do
		((n > 0)) || die "COUNTS: numbers of namespaces, at least 1"
		names=()
		for ((i = 1; i <= n; i++)); do names+=("$PREFIX-$i"); done
		for hash in shared own; do
			vs=()
			for v in $VARIANTS; do
				case $v in
				all | listed) [[ $hash == shared ]] && vs+=("$v") ;;
				ownhash) [[ $hash == own ]] && vs+=("$v") ;;
				esac
			done
			((${#vs[@]} > 0)) || continue
			entries=0
			[[ $hash == own ]] && entries=$OWN_HASH
			log "creating $n namespaces ($hash hashes)"
			create_ns "$entries" "${names[@]}"
			start_fill "${names[@]}"
			log "nsfill: $(cat "$WORK/nsfill.out")"
			for v in "${vs[@]}"; do
				run_daemon "$v" "$n" "${names[@]}"
			done
			stop_fill
			delete_ns
			sleep 2 # the kernel frees the namespaces in the background
		done
	done
fi

echo
cat "$WORK/header.txt"
echo
sum_args=()
[[ -s $WORK/bench.txt ]] && sum_args+=(-bench "$WORK/bench.txt")
[[ -s $WORK/daemon.txt ]] && sum_args+=(-daemon "$WORK/daemon.txt")
"$WORK/nssum" "${sum_args[@]}" | tee "$WORK/summary.txt"
if [[ -s $WORK/daemon-notes.txt ]]; then
	echo
	tee -a "$WORK/summary.txt" <"$WORK/daemon-notes.txt"
fi
echo
log "results in $WORK"
