#!/usr/bin/env bash
# run.sh [SOCKETS]: socket attribution at scale, in one run.
#
# In a network namespace of its own (connlogd-attr-bench) and a pid
# namespace of its own (so that /proc holds exactly the processes below,
# whatever else runs on the machine), it starts IDLE idle processes
# (`sleep`, started first so that their pids come first: the resolver
# reads processes in pid order) and ⌈SOCKETS/18000⌉ bench/sockfill
# processes holding SOCKETS established TCP sockets; then it runs ROUNDS
# rounds of the Go benchmarks of this directory, each benchmark once per
# round in its own process, in an order rotated from round to round, and
# prints the ratios of each round's figures to its baseline.
#
# Environment: ROUNDS (5), IDLE (1000), BENCHTIME (5x: passes per
# benchmark per round; the steady state runs 20 times as many, `ss -tanp`
# 2), KEEP=1 keeps the results directory. Needs root, iproute2, util-linux
# (unshare) and Go; the fd hard limit must be at least 18016.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# --inner: pid 1 of the pid namespace, inside the network namespace. Its
# exit kills every process of the namespace: nothing can be left behind.
if [[ ${1:-} == --inner ]]; then
	work=$2 sockets=$3
	idle=${IDLE:-1000}
	for ((i = 0; i < idle; i++)); do
		sleep infinity </dev/null >/dev/null 2>&1 &
	done
	sysctl -qw net.ipv4.ip_local_port_range="10000 64999"
	pairs=$((sockets / 2))
	procs=$(((pairs + 8999) / 9000))
	left=$pairs
	for ((i = 0; i < procs; i++)); do
		n=$((left < 9000 ? left : 9000))
		left=$((left - n))
		"$work/sockfill" -port $((5000 + i)) -pairs "$n" </dev/null >"$work/fill.$i.out" 2>"$work/fill.$i.err" &
	done
	for ((i = 0; i < procs; i++)); do
		until grep -qs '^ready ' "$work/fill.$i.out"; do
			if [[ -s $work/fill.$i.err ]]; then
				echo "sockfill $i: $(cat "$work/fill.$i.err")" >&2
				exit 1
			fi
			sleep 0.2
		done
	done
	echo "# processes $(ls /proc | grep -c '^[0-9]') sockets $(ss -tanH | wc -l)" >>"$work/bench.txt"
	benchtime=${BENCHTIME:-5x}
	n=${benchtime%x}
	declare -A times=([BareFDLinks]=$benchtime [FirstPass]=$benchtime [Steady]=$((n * 20))x [NewConnection]=$benchtime [SSTanp]=2x)
	benches=(BareFDLinks FirstPass Steady NewConnection SSTanp)
	for ((r = 0; r < ${ROUNDS:-5}; r++)); do
		echo "round $((r + 1))/${ROUNDS:-5}" >&2
		for ((i = 0; i < ${#benches[@]}; i++)); do
			b=${benches[(i + r) % ${#benches[@]}]}
			"$work/bench.test" -test.run '^$' -test.bench "^Benchmark$b\$" -test.benchtime "${times[$b]}" |
				sed -n "s/^\(Benchmark$b\)-[0-9]*/round=$r \1/p" >>"$work/bench.txt"
		done
	done
	exit 0
fi

SOCKETS=${1:-100000}
NS=connlogd-attr-bench
repo=$(cd "$here/../.." && pwd)
cd "$repo"
work=$(mktemp -d /tmp/connlogd-attr-bench.XXXXXX)

cleanup() {
	local rc=$?
	[[ -e /run/netns/$NS ]] && ip netns del "$NS"
	if [[ ${KEEP:-} != 1 ]]; then
		rm -rf "$work"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "run: building into $work" >&2
go build -o "$work/sockfill" ./bench/sockfill
go test -c -o "$work/bench.test" ./bench/attribution
echo "# $(date -u +%FT%TZ) $(uname -r) $(go version) sockets=$SOCKETS idle=${IDLE:-1000} rounds=${ROUNDS:-5}" >"$work/bench.txt"

[[ -e /run/netns/$NS ]] && ip netns del "$NS"
ip netns add "$NS"
ip -n "$NS" link set lo up
unshare --pid --fork --mount-proc ip netns exec "$NS" "$here/run.sh" --inner "$work" "$SOCKETS"

# Each round's figures against that round's baseline; medians and ranges
# over the rounds.
awk '
function metric(name,   i) { for (i = 3; i < NF; i++) if ($(i + 1) == name) return $i; return "" }
/^round=/ {
	split($1, a, "="); r = a[2]; b = $2
	cpu[b, r] = metric("cpu-ns/op")
	if (metric("links") != "") links[b] = metric("links")
	if (metric("links/op") != "") lop[b] = metric("links/op")
	if (metric("owned-frac") != "") owned = metric("owned-frac")
	rounds[r] = 1
}
function median(v, n,   i, j, t) {
	for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
	return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
}
function row(label, num, den, target,   r, n, v, lo, hi, m) {
	n = 0
	for (r in rounds) if (cpu[num, r] != "" && cpu[den, r] > 0) v[++n] = cpu[num, r] / cpu[den, r]
	if (n == 0) return
	lo = hi = v[1]
	for (r = 1; r <= n; r++) { if (v[r] < lo) lo = v[r]; if (v[r] > hi) hi = v[r] }
	m = median(v, n)
	printf "%-44s %8.4f  (%.4f-%.4f)  %s\n", label, m, lo, hi, target
}
function ms(b,   r, n, v) {
	n = 0
	for (r in rounds) if (cpu[b, r] != "") v[++n] = cpu[b, r] / 1e6
	return n ? median(v, n) : 0
}
END {
	printf "%-44s %12s\n", "CPU per operation, median over rounds", "ms"
	printf "  %-42s %12.2f  (%d links)\n", "bare fd links (baseline)", ms("BenchmarkBareFDLinks"), links["BenchmarkBareFDLinks"]
	printf "  %-42s %12.2f  (%d links, %.4f of inodes owned)\n", "first attribution pass", ms("BenchmarkFirstPass"), links["BenchmarkFirstPass"], owned
	printf "  %-42s %12.3f  (%g links/op)\n", "steady state, nothing changed", ms("BenchmarkSteady"), lop["BenchmarkSteady"]
	printf "  %-42s %12.2f\n", "one new connection (one cgroup for all)", ms("BenchmarkNewConnection")
	printf "  %-42s %12.2f\n", "ss -tanp", ms("BenchmarkSSTanp")
	print ""
	printf "%-44s %8s  %-15s  %s\n", "ratio, median over rounds", "", "(range)", "goal"
	row("first pass / bare fd links", "BenchmarkFirstPass", "BenchmarkBareFDLinks", "<= 1.2")
	row("steady state / first pass", "BenchmarkSteady", "BenchmarkFirstPass", "<= 0.05")
	row("one new connection / first pass", "BenchmarkNewConnection", "BenchmarkFirstPass", "")
	row("ss -tanp / bare fd links", "BenchmarkSSTanp", "BenchmarkBareFDLinks", "")
}' "$work/bench.txt" | tee "$work/summary.txt"
echo "run: raw figures in $work/bench.txt$([[ ${KEEP:-} == 1 ]] || echo ' (removed; KEEP=1 keeps them)')" >&2
if [[ ${KEEP:-} != 1 ]]; then
	cat "$work/bench.txt" >&2
fi
