package attribution

import (
	"net/netip"
	"runtime"
	"testing"

	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/internal/heaptest"
	"github.com/connlogd/connlogd/snapshot"
)

// BenchmarkMemory reports the bytes attribution keeps per tracked socket
// (its record and owner, their indexes, the dump-order slices, the
// descriptors cached per process) at 100,000 sockets in 6 processes of
// one cgroup, refreshed in chunks of 1,024 as the daemon does after
// sizing the Tracker from the probe's count.
func BenchmarkMemory(b *testing.B) {
	const n, procs, chunk = 100000, 6, 1024
	for b.Loop() {
		f := newFakeFS()
		f.cgroups[7] = "/app.service"
		per := (n + procs - 1) / procs
		chunks := make([]*snapshot.Table, 0, n/chunk+1)
		for i := range n {
			if i%chunk == 0 {
				chunks = append(chunks, &snapshot.Table{})
			}
			s := chunks[len(chunks)-1].Append()
			*s = estab(uint64(i+1), uint32(100000+i), 7)
			s.Src = netip.AddrPortFrom(s.Src.Addr(), uint16(i))
		}
		for p := range procs {
			fp := f.add(int32(100+p), "app", "/app.service")
			for i := p * per; i < min(n, (p+1)*per); i++ {
				fp.fds[int32(3+i-p*per)] = uint32(100000 + i)
			}
		}
		var tr *Tracker
		refresh := func() {
			tr.BeginRefresh()
			for _, c := range chunks {
				tr.RefreshChunk(c)
			}
			tr.EndRefresh(true)
		}
		base := heaptest.After(func() {})
		tracked := heaptest.After(func() {
			tr = newFakeResolver(defaultCfg, f).NewTracker()
			tr.Reserve(n)
			refresh()
			refresh()
		})
		if tr.Len() != n {
			b.Fatalf("%d sockets tracked; want %d", tr.Len(), n)
		}
		last := chunks[len(chunks)-1].Sockets
		if got := pidOf(annotated(tr, event.Appeared, last[len(last)-1])); got != 100+procs-1 {
			b.Fatalf("the last socket's owner %d; want %d", got, 100+procs-1)
		}
		b.ReportMetric(float64(tracked-base)/n, "B/tracked")
		runtime.KeepAlive(tr)
		runtime.KeepAlive(f)
		runtime.KeepAlive(chunks)
	}
}
