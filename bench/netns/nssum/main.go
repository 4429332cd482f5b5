// Command nssum prints the summary of bench/netns/run.sh: the per-namespace
// benchmarks (medians over rounds, and ratios taken within each round,
// since the machine is shared and noisy) and the daemon runs.
//
//	nssum -bench bench.txt -daemon daemon.txt
//
// bench.txt is `go test -bench` output with a "# round N" line before each
// round; daemon.txt has one line of key=value fields per daemon run, as
// run.sh writes them.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
)

func main() {
	benchPath := flag.String("bench", "", "benchmark output with # round lines")
	daemonPath := flag.String("daemon", "", "daemon runs, key=value per line")
	flag.Parse()
	if *benchPath != "" {
		if err := benchSummary(os.Stdout, *benchPath); err != nil {
			fmt.Fprintln(os.Stderr, "nssum:", err)
			os.Exit(1)
		}
	}
	if *daemonPath != "" {
		if *benchPath != "" {
			fmt.Println()
		}
		if err := daemonSummary(os.Stdout, *daemonPath); err != nil {
			fmt.Fprintln(os.Stderr, "nssum:", err)
			os.Exit(1)
		}
	}
}

// result is one benchmark line's metrics by unit.
type result map[string]float64

// rounds[r][name] is the result of benchmark name in round r.
type rounds []map[string]result

func parseBench(r io.Reader) (rounds, error) {
	var out rounds
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if n, ok := strings.CutPrefix(line, "# round "); ok {
			if _, err := strconv.Atoi(strings.TrimSpace(n)); err != nil {
				return nil, fmt.Errorf("bad round line %q", line)
			}
			out = append(out, map[string]result{})
			continue
		}
		if !strings.HasPrefix(line, "Benchmark") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 || len(out) == 0 {
			continue
		}
		name := strings.TrimPrefix(f[0], "Benchmark")
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			name = name[:i] // the -GOMAXPROCS suffix
		}
		res := result{}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("bad value %q in %q", f[i], line)
			}
			res[f[i+1]] = v
		}
		out[len(out)-1][name] = res
	}
	return out, sc.Err()
}

// order and descriptions of the benchmarks in the table.
var benchRows = []struct{ name, what string }{
	{"EmptyV2", "empty ns: tcp v2 ×2 + udp ×2"},
	{"EmptyV1", "empty ns: tcp v1 + udp ×2 (daemon's requests)"},
	{"EmptyTCPV2", "empty ns: tcp v2 ×2 only"},
	{"EmptyTCPV1", "empty ns: tcp v1 only"},
	{"EmptyTCPV1NoBound", "empty ns: tcp v1, no bound-inactive"},
	{"EmptyUDP", "empty ns: udp ×2 only"},
	{"EmptySockstat", "empty ns: sockstat read alone"},
	{"EmptySkip", "empty ns: daemon's poll (sockstat + udp ×2)"},
	{"FewV2", "few sockets: tcp v2 ×2 + udp ×2"},
	{"FewV1", "few sockets: tcp v1 + udp ×2 (daemon)"},
	{"FewV1NoBound", "few sockets: daemon's, no bound-inactive"},
	{"OwnHashEmptyV1", "own hashes, empty: daemon's requests"},
	{"OwnHashFewV1", "own hashes, few: daemon's requests"},
	{"OwnHashFewV1NoBound", "own hashes, few: no bound-inactive"},
	{"OwnHashEmptyV1NoBound", "own hashes, empty: no bound-inactive"},
	{"EmptyV1Load", "EmptyV1, +load sockets elsewhere"},
	{"OwnHashEmptyV1Load", "OwnHashEmptyV1, +load sockets elsewhere"},
	{"OwnHashEmptyV1NoBoundLoad", "OwnHashEmptyV1NoBound, +load elsewhere"},
}

// slopeRows: what each TCP socket elsewhere on the host adds to a dump,
// (num − den) ÷ num's load, per 1000 sockets.
var slopeRows = []struct{ num, den, what string }{
	{"EmptyV1Load", "EmptyV1", "shared hashes, daemon's requests"},
	{"OwnHashEmptyV1Load", "OwnHashEmptyV1", "own hashes, daemon's requests"},
	{"OwnHashEmptyV1NoBoundLoad", "OwnHashEmptyV1NoBound", "own hashes, no bound-inactive"},
}

var ratioRows = []struct{ num, den, what string }{
	{"EmptyV1", "EmptyV2", "v1 ÷ v2, empty namespace, whole dump"},
	{"EmptyTCPV1", "EmptyTCPV2", "v1 ÷ v2, empty namespace, TCP only"},
	{"FewV1", "FewV2", "v1 ÷ v2, few sockets"},
	{"EmptySockstat", "EmptyTCPV1", "sockstat read ÷ TCP v1 dump, empty namespace"},
	{"EmptySkip", "EmptyV1", "daemon's empty poll (sockstat skip) ÷ its full dump"},
	{"EmptyUDP", "EmptySkip", "UDP dumps ÷ daemon's empty poll (what a UDP skip could save)"},
	{"EmptyTCPV1NoBound", "EmptyTCPV1", "no bound-inactive ÷ all states, TCP v1, empty"},
	{"FewV1NoBound", "FewV1", "no bound-inactive ÷ all states, few sockets"},
	{"OwnHashEmptyV1", "EmptyV1", "own hashes ÷ shared, empty namespace"},
	{"OwnHashFewV1", "FewV1", "own hashes ÷ shared, few sockets"},
	{"OwnHashFewV1NoBound", "FewV1", "own hashes + no bound-inactive ÷ shared, few sockets"},
}

const cpuUnit = "cpu-ns/op"

func benchSummary(w io.Writer, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	rs, err := parseBench(f)
	if err != nil {
		return err
	}
	if len(rs) == 0 {
		return fmt.Errorf("%s: no rounds", path)
	}
	fmt.Fprintf(w, "Per-namespace dumps: CPU per op (process user+sys, getrusage), median of %d rounds [min–max]\n\n", len(rs))
	fmt.Fprintf(w, "%-26s %-46s %26s %10s %9s %8s\n", "benchmark", "one op", "cpu µs/op", "host-tcp", "buckets", "sockets")
	fmt.Fprintln(w, "(host-tcp: TCP sockets of every namespace, TIME_WAIT included, median at the end of each round's run;")
	fmt.Fprintln(w, "buckets: the namespace's TCP hash)")
	for _, b := range benchRows {
		var cpu, host, buckets, socks []float64
		for _, r := range rs {
			if res, ok := r[b.name]; ok {
				cpu = append(cpu, res[cpuUnit]/1e3)
				host = append(host, res["host-tcp"])
				buckets = append(buckets, res["buckets"])
				socks = append(socks, res["sockets"])
			}
		}
		if len(cpu) == 0 {
			fmt.Fprintf(w, "%-26s %-46s %26s\n", b.name, b.what, "(not run or skipped)")
			continue
		}
		bk := "shared"
		if m := median(buckets); m > 0 {
			bk = strconv.Itoa(int(m))
		}
		fmt.Fprintf(w, "%-26s %-46s %26s %10.0f %9s %8.0f\n", b.name, b.what, spread(cpu, "%.1f"), median(host), bk, median(socks))
	}
	fmt.Fprintf(w, "\nRatios of CPU per op, taken within each round: median [min–max]. A round counts only when\n"+
		"the host-wide TCP sockets (other users') stayed within %.0f%% (or %d) during and between the two benchmarks.\n\n", hostTolerance*100, hostFloor)
	for _, q := range ratioRows {
		var rat []float64
		dropped := 0
		for _, r := range rs {
			n, okn := r[q.num]
			d, okd := r[q.den]
			if !okn || !okd || d[cpuUnit] <= 0 {
				continue
			}
			if !steadyHost(n, d) {
				dropped++
				continue
			}
			rat = append(rat, n[cpuUnit]/d[cpuUnit])
		}
		s := "(missing)"
		if len(rat) > 0 {
			s = spread(rat, "%.4g")
		}
		if dropped > 0 {
			s += fmt.Sprintf("  (%d round(s) left out: host sockets changed)", dropped)
		}
		fmt.Fprintf(w, "%-62s %-32s %s\n", q.what, q.num+" ÷ "+q.den, s)
	}
	fmt.Fprintf(w, "\nCPU a dump spends per 1000 TCP sockets of another namespace (Load benchmark − its namesake, ÷ load),\n"+
		"within each round (host steadiness as above): µs, median [min–max]\n\n")
	for _, q := range slopeRows {
		var sl []float64
		dropped := 0
		for _, r := range rs {
			n, okn := r[q.num]
			d, okd := r[q.den]
			if !okn || !okd || n["load"] <= 0 {
				continue
			}
			if !steadyHost(n, d) {
				dropped++
				continue
			}
			sl = append(sl, (n[cpuUnit]-d[cpuUnit])/1e3/n["load"]*1000)
		}
		s := "(missing)"
		if len(sl) > 0 {
			s = spread(sl, "%.1f")
		}
		if dropped > 0 {
			s += fmt.Sprintf("  (%d round(s) left out: host sockets changed)", dropped)
		}
		fmt.Fprintf(w, "%-62s %-32s %s\n", q.what, q.num, s)
	}
	return nil
}

// hostTolerance and hostFloor bound how far the host-wide TCP socket
// count may move for a round's ratio to count: a shared-hash dump walks
// every one of them (about 0.1 µs each here), on top of its empty buckets
// (about 0.3 ms).
const (
	hostTolerance = 0.10
	hostFloor     = 200
)

// steadyHost reports whether the other users' TCP sockets stayed within
// hostTolerance (or hostFloor sockets) during each benchmark and between
// the two.
func steadyHost(a, b result) bool {
	// A Load benchmark's own load is not other users'.
	ha, hb := a["host-tcp"]-a["load"], b["host-tcp"]-b["load"]
	lo := min(ha, hb, ha-a["host-tcp-delta"], hb-b["host-tcp-delta"])
	hi := max(ha, hb, ha-a["host-tcp-delta"], hb-b["host-tcp-delta"])
	return hi-lo <= max(hostTolerance*hi, hostFloor)
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func spread(v []float64, format string) string {
	if len(v) == 1 {
		return fmt.Sprintf(format, v[0])
	}
	return fmt.Sprintf(format+" ["+format+"–"+format+"]", median(v), slices.Min(v), slices.Max(v))
}

// daemonRun is one line of daemon.txt: run.sh's key=value fields.
type daemonRun map[string]string

func (r daemonRun) num(k string) float64 {
	v, err := strconv.ParseFloat(r[k], 64)
	if err != nil {
		return 0
	}
	return v
}

// cpuPerPoll is the process CPU per interval in ms (of the baseline
// daemon when base): from the threads' schedstat (ns) or, with ticks,
// from /proc/PID/stat utime+stime (10 ms ticks).
func (r daemonRun) cpuPerPoll(base, ticks bool) float64 {
	polls := max(r.num("polls"), 1)
	if ticks {
		k := "ticks"
		if base {
			k = "base_ticks"
		}
		return r.num(k) * 1000 / max(r.num("clk_tck"), 1) / polls
	}
	k := "cpu_ns"
	if base {
		k = "base_cpu_ns"
	}
	return r.num(k) / 1e6 / polls
}

func (r daemonRun) nsPerPoll() float64 { return r.num("nspolls") / max(r.num("polls"), 1) }

// daemonSummary prints one row per daemon run. Fields run.sh writes:
// variant, n (our namespaces), watched (the "watching" log line), polls
// (intervals in the window), ticks and clk_tck (CPU of the window),
// base_ticks (the baseline daemon's, which watches the host namespace
// only, over the same window), nspolls and nspollsum (namespace polls and
// their seconds in the window, from the daemon's metrics), hwm and rss
// (KiB), per_interval (the round-robin warning's figure, or -), events
// (written in the window), seen (our namespaces that logged a socket),
// warns and errors (stderr lines), host_tcp_min and host_tcp_max (TCP
// sockets host-wide during the window, sockstat alloc), host_load0 and
// host_load1 (the same with every namespace's TIME_WAIT, at the window's
// start and end).
//
// The marginal cost of a namespace poll is the CPU per poll above the
// baseline's, divided by the namespace polls per interval above its one.
func daemonSummary(w io.Writer, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fmt.Fprintln(w, "Daemon (interval 1s, in the host namespace): CPU per poll over the window, from the threads' schedstat")
	fmt.Fprintln(w, "(ns) and, in (), from /proc/PID/stat utime+stime (10 ms ticks); base: a second daemon watching the host")
	fmt.Fprintln(w, "namespace only, over the same window; ns/poll: namespace polls per interval, host included, from the")
	fmt.Fprintln(w, "daemon's metrics (connlogd_poll_duration_seconds); marg.: (cpu − base) ÷ (ns/poll − 1)")
	fmt.Fprintln(w)
	fmt.Fprintf(w, "%-8s %4s %7s %5s %16s %16s %6s %7s %10s %11s %10s %7s %7s %7s %8s %7s %5s %s\n",
		"variant", "N", "watched", "polls", "cpu ms/poll", "base ms/poll", "×base", "ns/poll", "cpu ms/nsp", "wall ms/nsp", "marg. ms/ns",
		"rr warn", "HWM MiB", "RSS MiB", "events", "seen", "warn", "host TCP: alloc min–max, with TW start→end")
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		r := daemonRun{}
		for _, fld := range strings.Fields(sc.Text()) {
			if k, v, ok := strings.Cut(fld, "="); ok {
				r[k] = v
			}
		}
		if len(r) == 0 {
			continue
		}
		nsp := r.num("nspolls")
		cpu, base := r.cpuPerPoll(false, false), r.cpuPerPoll(true, false)
		cpuStat, baseStat := r.cpuPerPoll(false, true), r.cpuPerPoll(true, true)
		cell := func(x, d float64, format string) string {
			if d <= 0 {
				return "-"
			}
			return fmt.Sprintf(format, x/d)
		}
		fmt.Fprintf(w, "%-8s %4s %7s %5.0f %16s %16s %6s %7.1f %10s %11s %10s %7s %7.1f %7.1f %7s %8s %5s %s–%s, %s→%s\n",
			r["variant"], r["n"], r["watched"], r.num("polls"),
			fmt.Sprintf("%.1f (%.0f)", cpu, cpuStat), fmt.Sprintf("%.1f (%.0f)", base, baseStat),
			cell(cpu, base, "%.2f"), r.nsPerPoll(),
			cell(cpu*r.num("polls"), nsp, "%.2f"), cell(r.num("nspollsum")*1000, nsp, "%.2f"),
			cell(cpu-base, r.nsPerPoll()-1, "%.2f"),
			r["per_interval"], r.num("hwm")/1024, r.num("rss")/1024,
			r["events"], r["seen"]+"/"+r["n"], r["warns"]+"/"+r["errors"], r["host_tcp_min"], r["host_tcp_max"], r["host_load0"], r["host_load1"])
	}
	return sc.Err()
}
