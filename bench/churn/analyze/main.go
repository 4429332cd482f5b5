// Command analyze matches the client sockets recorded by bench/churn with
// connlogd's events and prints the capture and latency figures of the
// short-connection benchmark (see ../README.md).
//
//	analyze -events events.jsonl -records records.csv -port 65100
//
// Matching. Events are grouped by cookie, which names one socket for the
// boot; the 4-tuple does not, since ports are reused many times in a run.
// A cookie whose destination port is the server's is a client socket.
// Among the records of its tuple it is matched to
//
//   - when a destroy notification reported its close: a record whose
//     close(2) had started by the event's ts, since a socket cannot be
//     destroyed before it is closed, however late the daemon is; a
//     tuple's destroyed cookies are assigned together, in order (see
//     assign);
//   - otherwise (a poll saw it, and maybe confirmed its close): the record
//     whose lifetime, connect to close(2) returning, is nearest to the
//     cookie's first event. A poll's events carry the time its dump
//     ended (older versions: the poll's start, which may precede the
//     sockets its dump then finds), so no ordering is certain there.
//
// A record that gets several cookies is duplicated: the daemon reported
// one socket twice, e.g. as the socket and again as its TIME_WAIT remnant
// (see life.remnant). Server-side sockets
// (source port the server's) are matched the same way with the tuple
// reversed, as a check that the daemon keeps up with both ends.
package main

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

type tuple struct {
	src, dst     netip.Addr
	sport, dport uint16
}

func (t tuple) reverse() tuple { return tuple{t.dst, t.src, t.dport, t.sport} }

func (t tuple) String() string {
	return netip.AddrPortFrom(t.src, t.sport).String() + "->" + netip.AddrPortFrom(t.dst, t.dport).String()
}

// record is one client socket of the generator.
type record struct {
	connect, closeStart, closeEnd int64
	cookies                       []*life // matched client cookies
	server                        []*life // matched server-side cookies
}

// life is what the events say of one cookie.
type life struct {
	tuple                     tuple
	cookie                    uint64
	appeared, closed, changed int
	first, closedAt           int64 // ts of the first event and of the first closed
	firstState, closeReason   string
	shortLived                bool
	// zeroed: reported with local address 0.0.0.0 and peer port 0, as
	// the kernel leaves a socket closed abortively (SO_LINGER 0).
	zeroed bool
}

// remnant says whether l is a TIME_WAIT remnant the daemon took for a
// socket of its own: the kernel gives the remnant a new cookie when the
// socket's was never asked for, and reports it in its substate,
// fin_wait2 until the peer's FIN, then time_wait. Only full sockets are
// destroyed with a notification.
func (l *life) remnant() bool {
	return l.closeReason != "destroyed" && (l.firstState == "time_wait" || l.firstState == "fin_wait2")
}

// rawEvent holds the fields analyze needs; the rest of a line is ignored.
type rawEvent struct {
	TS         string `json:"ts"`
	Event      string `json:"event"`
	Proto      string `json:"proto"`
	State      string `json:"state"`
	SrcIP      string `json:"src_ip"`
	SrcPort    uint16 `json:"src_port"`
	DstIP      string `json:"dst_ip"`
	DstPort    uint16 `json:"dst_port"`
	Cookie     uint64 `json:"cookie"`
	Reason     string `json:"reason"`
	Count      uint64 `json:"count"`
	ShortLived bool   `json:"short_lived"`
}

type gap struct {
	at     int64
	reason string
	count  uint64
}

func main() {
	events := flag.String("events", "", "connlogd's events file (JSON lines)")
	records := flag.String("records", "", "the generator's CSV")
	port := flag.Int("port", 65100, "the generator's server port")
	daemonLog := flag.String("daemon-log", "", "connlogd's stderr, to report its warnings (optional)")
	settle := flag.Duration("settle", 10*time.Second, "gaps up to this long after the last close count against the run")
	slack := flag.Duration("slack", time.Second, "how much earlier than its close(2) a destroyed socket's closed event may be stamped and still match it")
	flag.Parse()
	if *events == "" || *records == "" {
		fmt.Fprintln(os.Stderr, "usage: analyze -events FILE -records FILE [-port N] [-daemon-log FILE]")
		os.Exit(2)
	}
	if err := run(*events, *records, uint16(*port), *daemonLog, *settle, *slack); err != nil {
		fmt.Fprintln(os.Stderr, "analyze:", err)
		os.Exit(1)
	}
}

func run(eventsPath, recordsPath string, port uint16, daemonLog string, settle, slack time.Duration) error {
	byTuple, nrec, err := readRecords(recordsPath)
	if err != nil {
		return err
	}
	if nrec == 0 {
		return errors.New("no records")
	}
	var lo, hi int64 = math.MaxInt64, math.MinInt64
	for _, rs := range byTuple {
		lo = min(lo, rs[0].connect)
		hi = max(hi, rs[len(rs)-1].closeEnd)
	}
	el, err := readEvents(eventsPath, port)
	if err != nil {
		return err
	}
	lives, gaps, kinds := el.lives, el.gaps, el.kinds

	// Group the cookies by the record tuple they may belong to, and by
	// end: the server's sockets are the reverse of the clients'.
	type group struct {
		key    tuple
		server bool
	}
	groups := map[group][]*life{}
	for _, l := range lives {
		g := group{l.tuple, l.tuple.sport == port}
		if g.server {
			g.key = g.key.reverse()
		}
		groups[g] = append(groups[g], l)
	}
	// The records by the tuple an abortive close leaves (see readEvents).
	byZeroed := map[tuple][]*record{}
	for t, rs := range byTuple {
		z := tuple{src: netip.IPv4Unspecified(), sport: t.sport, dst: t.dst}
		byZeroed[z] = append(byZeroed[z], rs...)
	}
	for _, rs := range byZeroed {
		slices.SortFunc(rs, func(a, b *record) int { return cmp.Compare(a.connect, b.connect) })
	}
	var unmatchedClient, unmatchedServer, early int
	for g, ls := range groups {
		rs := byTuple[g.key]
		if len(rs) == 0 && !g.server {
			rs = byZeroed[g.key]
		}
		if len(rs) == 0 {
			if g.server {
				unmatchedServer += len(ls)
			} else {
				unmatchedClient += len(ls)
			}
			continue
		}
		early += assign(rs, ls, g.server, int64(slack))
	}

	var (
		captured, missing, dup, partial      int
		srvCaptured, srvMissing, srvDup      int
		lat, latStart, latDestroyed, latGone []int64
		closesReported, stamped, stamped1ms  int
		stampedMax                           int64
		phases                               [11][]int64 // latency by time since the last poll tick, 100 ms buckets
		shortLived, polled, remnant, zeroed  int
		examplesMissing, examplesDup, exPart []string
	)
	for t, rs := range byTuple {
		for _, r := range rs {
			switch len(r.server) {
			case 0:
				srvMissing++
			case 1:
				if r.server[0].appeared == 1 && r.server[0].closed == 1 {
					srvCaptured++
				}
			default:
				srvDup++
			}
			// Latency is that of the socket's own closed event: from its
			// one cookie that is not a remnant, whatever duplicates the
			// daemon added.
			var own *life
			nOwn := 0
			for _, l := range r.cookies {
				if !l.remnant() {
					own, nOwn = l, nOwn+1
				}
			}
			if nOwn == 1 && own.closed > 0 {
				closesReported++
				if own.closedAt < r.closeStart {
					stamped++
					stampedMax = max(stampedMax, r.closeStart-own.closedAt)
					if r.closeStart-own.closedAt > int64(time.Millisecond) {
						stamped1ms++
					}
				}
				d := own.closedAt - r.closeEnd
				lat = append(lat, d)
				latStart = append(latStart, own.closedAt-r.closeStart)
				if i := sort.Search(len(el.ticks), func(i int) bool { return el.ticks[i] > r.closeEnd }); i > 0 {
					b := min(int((r.closeEnd-el.ticks[i-1])/int64(100*time.Millisecond)), len(phases)-1)
					phases[b] = append(phases[b], d)
				}
				if own.closeReason == "destroyed" {
					latDestroyed = append(latDestroyed, d)
				} else {
					latGone = append(latGone, d)
				}
			}
			switch len(r.cookies) {
			case 0:
				missing++
				examplesMissing = example(examplesMissing, fmt.Sprintf("%s closed %s", t, stamp(r.closeEnd)))
				continue
			case 1:
			default:
				dup++
				examplesDup = example(examplesDup, fmt.Sprintf("%s closed %s: %s", t, stamp(r.closeEnd), describe(r.cookies)))
				continue
			}
			l := r.cookies[0]
			if l.appeared != 1 || l.closed != 1 {
				partial++
				exPart = example(exPart, fmt.Sprintf("%s closed %s: %s", t, stamp(r.closeEnd), describe(r.cookies)))
				continue
			}
			captured++
			if l.zeroed {
				zeroed++
			}
			switch {
			case l.shortLived:
				shortLived++
			case l.remnant():
				remnant++
			default:
				polled++
			}
		}
	}

	secs := float64(hi-lo) / 1e9
	fmt.Printf("window              %s .. %s (%.1f s)\n", stamp(lo), stamp(hi), secs)
	fmt.Printf("connections made    %d (%.0f conn/s)\n", nrec, float64(nrec)/secs)
	fmt.Printf("captured            %d (%.4f%%): exactly 1 appeared + 1 closed under one cookie\n", captured, 100*float64(captured)/float64(nrec))
	fmt.Printf("  short_lived       %d (both events from the destroy notification)\n", shortLived)
	fmt.Printf("  seen by a poll    %d (alive, then closed by a notification or a poll)\n", polled)
	fmt.Printf("  remnant only      %d (own notification lost; a poll found the TIME_WAIT remnant)\n", remnant)
	if zeroed > 0 {
		fmt.Printf("  tuple zeroed      %d (abortive close: reported with src 0.0.0.0 and dst_port 0)\n", zeroed)
	}
	fmt.Printf("own close reported  %d (%.4f%%): by the socket's own cookie, not a remnant's\n", closesReported, 100*float64(closesReported)/float64(nrec))
	fmt.Printf("missing             %d (no event at all)\n", missing)
	fmt.Printf("incomplete          %d (one cookie, not exactly 1 appeared + 1 closed)\n", partial)
	fmt.Printf("duplicated          %d (more than one cookie)\n", dup)
	fmt.Printf("unmatched cookies   %d client, %d server-side (tuple never recorded)\n", unmatchedClient, unmatchedServer)
	if early > 0 {
		fmt.Printf("unplaceable closes  %d (destroyed long before any close(2) of the tuple: clocks or records are wrong)\n", early)
	}
	fmt.Printf("server side         %d of %d captured, %d missing, %d duplicated\n", srvCaptured, nrec, srvMissing, srvDup)
	fmt.Printf("stamped early       %d (closed ts before close(2) was called, by up to %.3f ms); %d by more than 1 ms (beyond clock-read noise)\n", stamped, ms(stampedMax), stamped1ms)
	printLatency("latency (own closed ts - close(2) return)", lat)
	printLatency("  from close(2) call instead", latStart)
	if len(latGone) > 0 {
		printLatency("  closes from the destroy notification", latDestroyed)
		printLatency("  closes confirmed by a poll", latGone)
	}
	fmt.Println("latency by when the close fell after the last poll tick:")
	for i, d := range phases {
		if len(d) == 0 {
			continue
		}
		label := fmt.Sprintf("  +%d..%dms", i*100, (i+1)*100)
		if i == len(phases)-1 {
			label = fmt.Sprintf("  +%dms..", i*100)
		}
		printLatency(label, d)
	}
	printStalls(el, lo, hi)
	printGaps(gaps, lo-int64(2*time.Second), hi+int64(settle))
	fmt.Printf("events in file      %s\n", kindsString(kinds))
	for _, e := range examplesMissing {
		fmt.Println("  missing:", e)
	}
	for _, e := range examplesDup {
		fmt.Println("  duplicated:", e)
	}
	for _, e := range exPart {
		fmt.Println("  incomplete:", e)
	}
	if daemonLog != "" {
		if err := printDaemonLog(daemonLog); err != nil {
			return err
		}
	}
	// One line for scripts.
	fmt.Printf("RESULT made=%d conn_per_s=%.0f captured=%d capture_pct=%.4f own_closes=%d missing=%d incomplete=%d duplicated=%d gaps=%d stamped_early=%d stamped_early_over_1ms=%d p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f p999_ms=%.3f max_ms=%.3f\n",
		nrec, float64(nrec)/secs, captured, 100*float64(captured)/float64(nrec), closesReported, missing, partial, dup,
		countGaps(gaps, lo-int64(2*time.Second), hi+int64(settle)), stamped, stamped1ms,
		ms(pct(lat, 50)), ms(pct(lat, 90)), ms(pct(lat, 99)), ms(pct(lat, 99.9)), ms(pct(lat, 100)))
	return nil
}

// assign attaches each cookie of one tuple (ls) to one of the tuple's
// records (rs, sorted by time), as client or server-side sockets. It
// returns how many destroyed cookies no record could have produced.
//
// Cookies closed by a destroy notification are matched all together: the
// kernel destroys a tuple's sockets one after the other and the daemon
// handles their notifications in order, so the k-th such cookie belongs
// to a record no earlier than the (k-1)-th's, whose close(2) started
// before the event (or at most slack after it: a daemon may stamp an
// event with an earlier time, such as its poll's). Among those
// assignments the one with the least total |delay| wins; records left
// over are sockets whose notification was lost. Matching each cookie
// alone to the last close before it would go wrong when the daemon lags
// more than the time between two uses of the tuple. Other cookies (seen
// by polls only) go to the record whose lifetime is nearest to their
// first event.
func assign(rs []*record, ls []*life, server bool, slack int64) (early int) {
	add := func(r *record, l *life) {
		if server {
			r.server = append(r.server, l)
		} else {
			r.cookies = append(r.cookies, l)
		}
	}
	var ds []*life
	for _, l := range ls {
		if l.closeReason == "destroyed" {
			ds = append(ds, l)
		} else {
			add(nearest(rs, l.first), l)
		}
	}
	if len(ds) == 0 {
		return 0
	}
	slices.SortFunc(ds, func(a, b *life) int { return cmp.Compare(a.closedAt, b.closedAt) })
	// cost[i][j]: least total delay of ds[:i+1] with ds[i] on rs[j].
	const inf = math.MaxInt64
	n, m := len(ds), len(rs)
	cost := make([][]int64, n)
	from := make([][]int, n)
	for i := range n {
		cost[i], from[i] = make([]int64, m), make([]int, m)
		best, bestJ := int64(0), -1 // min of cost[i-1][:j]
		if i > 0 {
			best = inf
		}
		for j := range m {
			cost[i][j] = inf
			if i > 0 && j > 0 && cost[i-1][j-1] < best {
				best, bestJ = cost[i-1][j-1], j-1
			}
			d := ds[i].closedAt - rs[j].closeStart
			if best == inf || d < -slack {
				continue
			}
			cost[i][j], from[i][j] = best+max(d, -d), bestJ
		}
	}
	end := -1
	for j := range m {
		if cost[n-1][j] < inf && (end < 0 || cost[n-1][j] < cost[n-1][end]) {
			end = j
		}
	}
	if end < 0 {
		// No ordered assignment: some cookie came before any close it
		// could report. Fall back to each cookie's last close before it.
		for _, l := range ds {
			i := sort.Search(m, func(i int) bool { return rs[i].closeStart > l.closedAt+slack })
			if i == 0 {
				early++
				i = 1
			}
			add(rs[i-1], l)
		}
		return early
	}
	for i, j := n-1, end; i >= 0; i-- {
		add(rs[j], ds[i])
		j = from[i][j]
	}
	return 0
}

// nearest returns the record whose lifetime is nearest to at. rs is
// sorted by connect time.
func nearest(rs []*record, at int64) *record {
	if len(rs) == 0 {
		return nil
	}
	i := sort.Search(len(rs), func(i int) bool { return rs[i].connect > at })
	// rs[i-1] started at or before at; rs[i] after it.
	var best *record
	bestD := int64(math.MaxInt64)
	if i > 0 {
		best, bestD = rs[i-1], max(0, at-rs[i-1].closeEnd)
	}
	if i < len(rs) && rs[i].connect-at < bestD {
		best = rs[i]
	}
	return best
}

func readRecords(path string) (map[tuple][]*record, int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	cr := csv.NewReader(bufio.NewReaderSize(f, 1<<20))
	cr.ReuseRecord = true
	byTuple := map[tuple][]*record{}
	n := 0
	for line := 1; ; line++ {
		row, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, 0, err
		}
		if line == 1 && row[0] == "src_ip" {
			continue
		}
		if len(row) != 7 {
			return nil, 0, fmt.Errorf("%s:%d: %d fields, want 7", path, line, len(row))
		}
		var t tuple
		var nums [5]uint64
		if t.src, err = netip.ParseAddr(row[0]); err == nil {
			t.dst, err = netip.ParseAddr(row[2])
		}
		for i, j := range []int{1, 3, 4, 5, 6} {
			if err == nil {
				nums[i], err = strconv.ParseUint(row[j], 10, 64)
			}
		}
		if err != nil {
			return nil, 0, fmt.Errorf("%s:%d: %v", path, line, err)
		}
		t.sport, t.dport = uint16(nums[0]), uint16(nums[1])
		byTuple[t] = append(byTuple[t], &record{connect: int64(nums[2]), closeStart: int64(nums[3]), closeEnd: int64(nums[4])})
		n++
	}
	for _, rs := range byTuple {
		slices.SortFunc(rs, func(a, b *record) int { return cmp.Compare(a.connect, b.connect) })
	}
	return byTuple, n, nil
}

// readEvents decodes the lines that concern the generator's sockets (its
// server port at either end) and the gaps, and counts every line by kind.
func readEvents(path string, port uint16) (*eventLog, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// Decoding every line of a multi-gigabyte file is slow; a substring
	// test picks the few kinds of line that matter first.
	dstPat := []byte(fmt.Sprintf(`"dst_port":%d,`, port))
	srcPat := []byte(fmt.Sprintf(`"src_port":%d,`, port))
	zeroPat, zeroPortPat := []byte(`"src_ip":"0.0.0.0"`), []byte(`"dst_port":0,`)
	gapPat := []byte(`"event":"gap"`)
	kindPat := []byte(`"event":"`)
	pollPats := [][]byte{[]byte(`"event":"state_changed"`), []byte(`"reason":"gone"`)}
	appearedPat, shortPat := []byte(`"event":"appeared"`), []byte(`"short_lived":true`)
	destroyedPat := []byte(`"reason":"destroyed"`)
	el := &eventLog{lives: map[uint64]*life{}, kinds: map[string]int{}}
	lastTick := int64(-1)
	rd := bufio.NewReaderSize(f, 1<<20)
	for line := 1; ; line++ {
		b, err := rd.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			return nil, fmt.Errorf("%s:%d: line longer than 1 MiB", path, line)
		}
		if len(b) == 0 && err == io.EOF {
			break
		}
		if err != nil && err != io.EOF {
			return nil, err
		}
		if i := bytes.Index(b, kindPat); i >= 0 {
			rest := b[i+len(kindPat):]
			if j := bytes.IndexByte(rest, '"'); j >= 0 {
				el.kinds[string(rest[:j])]++
			}
		}
		// Every event of a poll carries one time (its dump's end; older
		// versions its start), and the
		// destroy notifications their handling time: together they show
		// how the polls delay the notifications. The fixed-width ts opens
		// every line.
		switch {
		case bytes.Contains(b, destroyedPat):
			if at, ok := lineTS(b); ok {
				el.destroyed = append(el.destroyed, at)
			}
		case bytes.Contains(b, pollPats[0]) || bytes.Contains(b, pollPats[1]) ||
			(bytes.Contains(b, appearedPat) && !bytes.Contains(b, shortPat)):
			if at, ok := lineTS(b); ok && at != lastTick {
				el.ticks = append(el.ticks, at)
				lastTick = at
			}
		}
		isGap := bytes.Contains(b, gapPat)
		maybeZeroed := bytes.Contains(b, zeroPat) && bytes.Contains(b, zeroPortPat)
		if !isGap && !maybeZeroed && !bytes.Contains(b, dstPat) && !bytes.Contains(b, srcPat) {
			continue
		}
		var e rawEvent
		if err := json.Unmarshal(b, &e); err != nil {
			return nil, fmt.Errorf("%s:%d: %v", path, line, err)
		}
		ts, err := time.Parse(time.RFC3339Nano, e.TS)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %v", path, line, err)
		}
		at := ts.UnixNano()
		if isGap {
			el.gaps = append(el.gaps, gap{at, e.Reason, e.Count})
			continue
		}
		// tcp_disconnect(), which an abortive close runs before the socket
		// is destroyed, clears the local address and the peer port: such
		// a client socket is known by its local port and peer address.
		zeroed := e.SrcIP == "0.0.0.0" && e.DstPort == 0 && e.SrcPort != 0 && e.SrcPort != port
		if e.Proto != "tcp" || (e.DstPort != port && e.SrcPort != port && !zeroed) || (e.SrcPort == port && e.DstPort == 0) {
			continue // another protocol, another server, or the listener
		}
		var t tuple
		t.sport, t.dport = e.SrcPort, e.DstPort
		if t.src, err = netip.ParseAddr(e.SrcIP); err == nil {
			t.dst, err = netip.ParseAddr(e.DstIP)
		}
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %v", path, line, err)
		}
		l := el.lives[e.Cookie]
		if l == nil {
			l = &life{tuple: t, cookie: e.Cookie, first: at, firstState: e.State}
			el.lives[e.Cookie] = l
		}
		l.shortLived = l.shortLived || e.ShortLived
		l.zeroed = l.zeroed || zeroed
		switch e.Event {
		case "appeared":
			l.appeared++
		case "closed":
			if l.closed == 0 {
				l.closedAt, l.closeReason = at, e.Reason
			}
			l.closed++
		case "state_changed":
			l.changed++
		}
	}
	slices.Sort(el.ticks)
	el.ticks = slices.Compact(el.ticks)
	slices.Sort(el.destroyed)
	return el, nil
}

// eventLog is what analyze keeps of the events file.
type eventLog struct {
	lives     map[uint64]*life // sockets of the generator, by cookie
	gaps      []gap
	kinds     map[string]int // lines by event kind
	ticks     []int64        // poll start times, sorted
	destroyed []int64        // ts of every closed event from a destroy notification, sorted
}

// lineTS reads the ts that opens a line: {"ts":"2026-11-25T10:00:00.123456789Z",…
func lineTS(b []byte) (int64, bool) {
	const head, width = len(`{"ts":"`), len("2026-11-25T10:00:00.123456789Z")
	if len(b) < head+width {
		return 0, false
	}
	t, err := time.Parse(time.RFC3339Nano, string(b[head:head+width]))
	if err != nil {
		return 0, false
	}
	return t.UnixNano(), true
}

func describe(ls []*life) string {
	var parts []string
	for _, l := range ls {
		s := fmt.Sprintf("cookie %d first %s in %s: %d appeared, %d state_changed, %d closed", l.cookie, stamp(l.first), l.firstState, l.appeared, l.changed, l.closed)
		if l.closed > 0 {
			s += fmt.Sprintf(" (%s, %s)", l.closeReason, stamp(l.closedAt))
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

func example(list []string, s string) []string {
	if len(list) < 5 {
		list = append(list, s)
	}
	return list
}

func printLatency(title string, d []int64) {
	if len(d) == 0 {
		fmt.Printf("%-36s none\n", title)
		return
	}
	neg := 0
	for _, v := range d {
		if v < 0 {
			neg++
		}
	}
	fmt.Printf("%-36s n=%d p50=%.3fms p90=%.3fms p99=%.3fms p99.9=%.3fms max=%.3fms min=%.3fms (%d negative)\n",
		title, len(d), ms(pct(d, 50)), ms(pct(d, 90)), ms(pct(d, 99)), ms(pct(d, 99.9)), ms(pct(d, 100)), ms(pct(d, 0)), neg)
}

// pct returns the p-th percentile by nearest rank; it sorts d.
func pct(d []int64, p float64) int64 {
	if len(d) == 0 {
		return 0
	}
	if !slices.IsSorted(d) {
		slices.Sort(d)
	}
	if p <= 0 {
		return d[0]
	}
	i := int(math.Ceil(p/100*float64(len(d)))) - 1
	return d[max(0, min(i, len(d)-1))]
}

func ms(ns int64) float64 { return float64(ns) / 1e6 }

// printStalls reports, for each poll in the window, how long after the
// poll's start the next destroy notification was handled. The loop handles
// notifications between polls, so under steady churn this is about how long
// a poll holds them back.
func printStalls(el *eventLog, lo, hi int64) {
	var stalls []int64
	for _, t := range el.ticks {
		if t < lo || t > hi {
			continue
		}
		i := sort.Search(len(el.destroyed), func(i int) bool { return el.destroyed[i] >= t })
		if i < len(el.destroyed) {
			stalls = append(stalls, el.destroyed[i]-t)
		}
	}
	printLatency("poll tick to next destroy handled", stalls)
}

func printGaps(gaps []gap, lo, hi int64) {
	type agg struct {
		n     int
		count uint64
	}
	by := map[string]*agg{}
	for _, g := range gaps {
		if !counts(g, lo, hi) {
			continue
		}
		a := by[g.reason]
		if a == nil {
			a = &agg{}
			by[g.reason] = a
		}
		a.n++
		a.count += g.count
	}
	if len(by) == 0 {
		fmt.Println("gap events          0")
		return
	}
	keys := make([]string, 0, len(by))
	for k := range by {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Printf("gap events          %d %s (sum of count: %d; 0 means unknown)\n", by[k].n, k, by[k].count)
	}
}

// counts says whether g may have cost the pass events: it falls in
// [lo, hi], and it is not the start of the daemon's run before the
// pass's first connection (lo+2 s), which every run writes (not_running).
func counts(g gap, lo, hi int64) bool {
	if g.reason == "not_running" && g.at < lo+int64(2*time.Second) {
		return false
	}
	return g.at >= lo && g.at <= hi
}

func countGaps(gaps []gap, lo, hi int64) int {
	n := 0
	for _, g := range gaps {
		if counts(g, lo, hi) {
			n++
		}
	}
	return n
}

func kindsString(kinds map[string]int) string {
	keys := make([]string, 0, len(kinds))
	for k := range kinds {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %d", k, kinds[k])
	}
	return b.String()
}

// slogMsg picks the level and message of a slog text line.
var slogMsg = regexp.MustCompile(`level=(WARN|ERROR) msg=("(?:[^"\\]|\\.)*"|\S+)`)

// printDaemonLog counts the daemon's warnings and errors by message; sink
// drops and notification overruns show up here.
func printDaemonLog(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	counts := map[string]int{}
	for _, line := range strings.Split(string(b), "\n") {
		if m := slogMsg.FindStringSubmatch(line); m != nil {
			counts[m[1]+" "+m[2]]++
		}
	}
	if len(counts) == 0 {
		fmt.Println("daemon log          no warnings or errors")
		return nil
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Printf("daemon log          %dx %s\n", counts[k], k)
	}
	return nil
}

func stamp(ns int64) string { return time.Unix(0, ns).UTC().Format("15:04:05.000000") }
