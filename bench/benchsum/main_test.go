package main

import (
	"strings"
	"testing"
)

// Two rounds in rotated order: results pair up by round, not by line.
const sample = `goos: linux
BenchmarkMinimalDump-2   	      20	 100000000 ns/op	 100000000 cpu-ns/op	    100007 sockets	       0 B/op	       0 allocs/op
BenchmarkPoll-2   	      20	 110000000 ns/op	 110000000 cpu-ns/op	         0 events/op	        79.36 heap-MiB	    100007 sockets	      32 B/op	       4 allocs/op
BenchmarkPollListenersOnly-2   	      20	     66538 ns/op	     88200 cpu-ns/op	         0 events/op	         0.1845 heap-MiB	         7.000 sockets	      32 B/op	       4 allocs/op
BenchmarkPoll-2   	      20	 130000000 ns/op	 130000000 cpu-ns/op	         0 events/op	        79.36 heap-MiB	    100007 sockets	      32 B/op	       4 allocs/op
BenchmarkPollListenersOnly-2   	      20	     66538 ns/op	     88200 cpu-ns/op	         0 events/op	         0.1845 heap-MiB	         7.000 sockets	      32 B/op	       4 allocs/op
BenchmarkMinimalDump-2   	      20	 120000000 ns/op	 120000000 cpu-ns/op	    100007 sockets	       0 B/op	       0 allocs/op
PASS
`

func TestParse(t *testing.T) {
	res, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	if got := metric(res[benchPoll], "cpu-ns/op"); len(got) != 2 || got[1] != 130e6 {
		t.Fatalf("Poll cpu-ns/op = %v", got)
	}
	if got := res[benchListeners][0]["sockets"]; got != 7 {
		t.Fatalf("PollListenersOnly sockets = %v", got)
	}
}

func TestRatiosPairByRound(t *testing.T) {
	res, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	r := stats(ratios(metric(res[benchPoll], "cpu-ns/op"), metric(res[benchMinimal], "cpu-ns/op")))
	// Rounds: 110/100 and 130/120.
	if r.lo != 130.0/120 || r.hi != 1.1 {
		t.Fatalf("ratios %+v, want 1.083 and 1.100", r)
	}
}

func TestSummarize(t *testing.T) {
	res, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	d := daemon{cpuNs: 30 * 115e6, polls: 30, hwmKiB: 150 << 10, rssKiB: 100 << 10}
	if err := summarize(&b, res, d); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"daemon benchmark (Dump + Diff)",
		"≤ 1.20 ok",
		"4 (32 B) at 100007 sockets, 4 at 7 sockets: constant: ok",
		"peak (VmHWM) 150.0 MiB MISSED",
		"(VmRSS) 100.0 MiB ok",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
}

func TestStatsMedian(t *testing.T) {
	for _, c := range []struct {
		in  []float64
		med float64
	}{
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
		{nil, 0},
	} {
		if got := stats(c.in).med; got != c.med {
			t.Errorf("median %v = %v, want %v", c.in, got, c.med)
		}
	}
}
