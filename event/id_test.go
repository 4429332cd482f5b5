package event

import (
	"strconv"
	"testing"
	"time"
)

func TestIDs(t *testing.T) {
	boot, err := ParseBootID("5f1c0e2a-8d0b-4c7e-9a51-3f2d1b6e7c90")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1765058400, 123456789)
	seen := map[ID]string{}
	add := func(what string, id ID) {
		t.Helper()
		if id.IsZero() || len(id.String()) != 32 {
			t.Fatalf("%s: id %s", what, id)
		}
		if prev, dup := seen[id]; dup {
			t.Errorf("%s: same id as %s", what, prev)
		}
		seen[id] = what
	}
	// Every event of a run, and of runs that differ only in the boot, the
	// process or the start, gets its own id.
	for _, run := range []struct {
		name  string
		boot  BootID
		pid   int
		start time.Time
	}{
		{"run", boot, 100, t0},
		{"other boot", BootID{1}, 100, t0},
		{"other process", boot, 101, t0},
		{"restart", boot, 100, t0.Add(time.Nanosecond)},
	} {
		g := NewIDs(run.boot, run.pid, run.start)
		for i := range 1000 {
			add(run.name+" event "+strconv.Itoa(i), g.Next())
		}
	}
	// The same run gives the same sequence: ids are derived, not random.
	a, b := NewIDs(boot, 100, t0), NewIDs(boot, 100, t0)
	if a.Next() != b.Next() {
		t.Error("the same run's first ids differ")
	}
	id := a.Next()
	if b, _ := id.AppendText([]byte("x")); string(b) != "x"+id.String() {
		t.Errorf("AppendText %q", b)
	}
}

func TestParseBootID(t *testing.T) {
	for _, bad := range []string{"", "5f1c0e2a", "5f1c0e2a-8d0b-4c7e-9a51-3f2d1b6e7c9g", "5f1c0e2a-8d0b-4c7e-9a51-3f2d1b6e7c90aa"} {
		if _, err := ParseBootID(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	if _, err := ReadBootID(); err != nil {
		t.Errorf("this kernel's boot id: %v", err)
	}
}

func TestFailure(t *testing.T) {
	for f, want := range map[Failure]string{NotFailed: "", FailedUnknown: "", FailedRefused: "refused", FailedTimeout: "timeout"} {
		if f.String() != want || f.Failed() != (f != NotFailed) {
			t.Errorf("%d: %q %v", f, f.String(), f.Failed())
		}
	}
	if Updated.String() != "updated" {
		t.Errorf("Updated is %q", Updated)
	}
}

func BenchmarkIDsNext(b *testing.B) {
	g := NewIDs(BootID{1}, 100, time.Unix(1765058400, 0))
	b.ReportAllocs()
	var id ID
	for b.Loop() {
		id = g.Next()
	}
	_ = id
}
