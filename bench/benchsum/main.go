// Command benchsum prints the summary of bench/run.sh: the CPU per poll
// of the daemon and of `ss -tan` as ratios to the minimal dump measured
// in the same run, the allocations per steady poll, and the daemon's RSS.
//
// Its input is the output of several rounds of the benchmarks of package
// bench, each round running every benchmark once (-count 1): the k-th
// result of each benchmark belongs to round k, and ratios are taken
// within a round, so that the machine's drift between rounds cancels.
//
//	benchsum -in bench.txt [-daemon-cpu-ns N -daemon-polls P -daemon-hwm-kib K -daemon-rss-kib K]
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Targets of the issue "Polling 100k sockets must cost close to what the
// kernel's dump itself costs".
const (
	targetRatio  = 1.2
	targetRSSMiB = 120
)

// Benchmark names, as package bench defines them.
const (
	benchMinimal   = "MinimalDump"
	benchNoInfo    = "MinimalDumpNoInfo"
	benchPerFamily = "MinimalDumpPerFamily"
	benchPaced     = "MinimalDumpPaced"
	benchPoll      = "Poll"
	benchListeners = "PollListenersOnly"
	benchParse     = "Parse"
	benchDiff      = "Diff"
	benchSS        = "SSTan"
)

// result is one benchmark line: its metrics by unit.
type result map[string]float64

func main() {
	in := flag.String("in", "", "benchmark output (default stdin)")
	daemonCPU := flag.Float64("daemon-cpu-ns", 0, "CPU time the daemon process used over the measured window, in ns")
	daemonPolls := flag.Int("daemon-polls", 0, "polls in the measured window (0: the daemon was not measured)")
	hwm := flag.Int("daemon-hwm-kib", 0, "daemon VmHWM, KiB")
	rss := flag.Int("daemon-rss-kib", 0, "daemon VmRSS at the end of the window, KiB")
	note := flag.String("daemon-note", "", "why the daemon process was not measured")
	flag.Parse()

	r := io.Reader(os.Stdin)
	if *in != "" {
		f, err := os.Open(*in)
		if err != nil {
			fatal(err)
		}
		defer f.Close()
		r = f
	}
	res, err := parse(r)
	if err != nil {
		fatal(err)
	}
	d := daemon{cpuNs: *daemonCPU, polls: *daemonPolls, hwmKiB: *hwm, rssKiB: *rss, note: *note}
	if err := summarize(os.Stdout, res, d); err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "benchsum:", err)
	os.Exit(1)
}

// benchLine matches "BenchmarkName-2   <iterations>   <value> <unit> ...".
var benchLine = regexp.MustCompile(`^Benchmark(\S+?)(?:-\d+)?\s+(\d+)\s+(.*)$`)

// parse returns the results of each benchmark in the order they ran.
func parse(r io.Reader) (map[string][]result, error) {
	out := map[string][]result{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		m := benchLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		f := strings.Fields(m[3])
		if len(f)%2 != 0 {
			return nil, fmt.Errorf("odd metric list: %q", sc.Text())
		}
		res := result{}
		for i := 0; i < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("%q: %w", sc.Text(), err)
			}
			res[f[i+1]] = v
		}
		out[m[1]] = append(out[m[1]], res)
	}
	return out, sc.Err()
}

type daemon struct {
	cpuNs          float64
	polls          int
	hwmKiB, rssKiB int
	note           string
}

// stat is a median with its range.
type stat struct{ med, lo, hi float64 }

func stats(v []float64) stat {
	if len(v) == 0 {
		return stat{}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return stat{med, s[0], s[len(s)-1]}
}

// metric returns one unit of every round of a benchmark.
func metric(rs []result, unit string) []float64 {
	var v []float64
	for _, r := range rs {
		if x, ok := r[unit]; ok {
			v = append(v, x)
		}
	}
	return v
}

// ratios divides round by round.
func ratios(num, den []float64) []float64 {
	var v []float64
	for i := range min(len(num), len(den)) {
		if den[i] > 0 {
			v = append(v, num[i]/den[i])
		}
	}
	return v
}

func ms(ns float64) string { return fmt.Sprintf("%.1f ms", ns/1e6) }

func verdict(ok bool) string {
	if ok {
		return "ok"
	}
	return "MISSED"
}

func summarize(w io.Writer, res map[string][]result, d daemon) error {
	base := metric(res[benchMinimal], "cpu-ns/op")
	if len(base) == 0 {
		return fmt.Errorf("no %s results: did the benchmarks run inside the namespace?", benchMinimal)
	}
	baseSt := stats(base)
	socks := stats(metric(res[benchMinimal], "sockets"))
	fmt.Fprintf(w, "connlogd poll cost at %.0f sockets, %d rounds; CPU is user+sys per poll, median of rounds;\n", socks.med, len(base))
	fmt.Fprintf(w, "ratios are to the minimal dump of the same round (median, min–max).\n\n")

	tw := newTable(w, "", "CPU/poll", "ratio", "range", "target")
	tw.row("minimal dump (tcp_info, baseline)", ms(baseSt.med), "1.000", "", "")
	row := func(label, bench string, target bool) {
		cpu := metric(res[bench], "cpu-ns/op")
		if len(cpu) == 0 {
			tw.row(label+" (not run)", "—", "", "", "")
			return
		}
		r := stats(ratios(cpu, base))
		t := ""
		if target {
			t = fmt.Sprintf("≤ %.2f %s", targetRatio, verdict(r.med <= targetRatio))
		}
		tw.row(label, ms(stats(cpu).med), fmt.Sprintf("%.3f", r.med), fmt.Sprintf("%.3f–%.3f", r.lo, r.hi), t)
	}
	row("minimal dump, no tcp_info", benchNoInfo, false)
	row("minimal dump, TCP one family per request (v2)", benchPerFamily, false)
	row("daemon benchmark (Dump + Diff)", benchPoll, true)
	row("  parse share (no syscalls)", benchParse, false)
	row("  diff share (no syscalls)", benchDiff, false)
	if d.polls > 0 {
		per := d.cpuNs / float64(d.polls)
		// The process polls once a second, with cold caches each time: its
		// baseline is the minimal dump at the same cadence, run just
		// before and after it. The range spans that baseline's runs.
		label, ref := "daemon process (%d polls) ÷ hot baseline", baseSt
		if paced := metric(res[benchPaced], "cpu-ns/op"); len(paced) > 0 {
			ref = stats(paced)
			label = "daemon process (%d polls) ÷ paced"
			tw.row("minimal dump, paced 1/s (÷ hot baseline)", ms(ref.med), fmt.Sprintf("%.3f", ref.med/baseSt.med),
				fmt.Sprintf("%.3f–%.3f", ref.lo/baseSt.med, ref.hi/baseSt.med), "")
		}
		r := per / ref.med
		tw.row(fmt.Sprintf(label, d.polls), ms(per), fmt.Sprintf("%.3f", r),
			fmt.Sprintf("%.3f–%.3f", per/ref.hi, per/ref.lo), fmt.Sprintf("≤ %.2f %s", targetRatio, verdict(r <= targetRatio)))
	} else {
		tw.row("daemon process (not measured)", "—", "", "", "")
	}
	row("ss -tan (no tcp_info; formats text)", benchSS, false)
	tw.flush()

	fmt.Fprintln(w)
	allocs := stats(metric(res[benchPoll], "allocs/op"))
	bytes := stats(metric(res[benchPoll], "B/op"))
	small := stats(metric(res[benchListeners], "allocs/op"))
	smallSocks := stats(metric(res[benchListeners], "sockets"))
	grows := allocs.hi > small.hi
	fmt.Fprintf(w, "allocations per steady poll: %.0f (%.0f B) at %.0f sockets, %.0f at %.0f sockets: %s\n",
		allocs.med, bytes.med, socks.med, small.med, smallSocks.med,
		map[bool]string{true: "GROW with the socket count: MISSED", false: "constant: ok"}[grows])
	if ev := stats(metric(res[benchPoll], "events/op")); ev.hi > 0 {
		fmt.Fprintf(w, "WARNING: %.1f events per poll: the table changed during the run, figures include event work\n", ev.hi)
	}
	if ps := stats(metric(res[benchPoll], "sockets")); ps.lo != socks.lo || ps.hi != socks.hi {
		fmt.Fprintf(w, "WARNING: the socket count varied (%.0f–%.0f in Poll, %.0f–%.0f in MinimalDump)\n", ps.lo, ps.hi, socks.lo, socks.hi)
	}
	heap := stats(metric(res[benchPoll], "heap-MiB"))
	fmt.Fprintf(w, "live heap of the poller's state (benchmark, after GC): %.1f MiB\n", heap.med)
	if d.hwmKiB > 0 {
		hwm, rss := float64(d.hwmKiB)/1024, float64(d.rssKiB)/1024
		fmt.Fprintf(w, "daemon RSS: peak (VmHWM) %.1f MiB %s, at the end (VmRSS) %.1f MiB %s; target < %d MiB\n",
			hwm, verdict(hwm < targetRSSMiB), rss, verdict(rss < targetRSSMiB), targetRSSMiB)
	} else {
		fmt.Fprintf(w, "daemon RSS: not measured\n")
	}
	if d.note != "" {
		fmt.Fprintf(w, "daemon process: %s\n", d.note)
	}
	return nil
}

// table prints aligned columns.
type table struct {
	w    io.Writer
	rows [][]string
}

func newTable(w io.Writer, head ...string) *table { return &table{w: w, rows: [][]string{head}} }

func (t *table) row(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) flush() {
	width := make([]int, len(t.rows[0]))
	for _, r := range t.rows {
		for i, c := range r {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	for _, r := range t.rows {
		var b strings.Builder
		for i, c := range r {
			pad := width[i] - len([]rune(c))
			if i > 0 && i < 3 { // numbers align right
				b.WriteString(strings.Repeat(" ", pad) + c + "  ")
			} else {
				b.WriteString(c + strings.Repeat(" ", pad) + "  ")
			}
		}
		fmt.Fprintln(t.w, strings.TrimRight(b.String(), " "))
	}
}
