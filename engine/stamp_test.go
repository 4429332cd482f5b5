package engine

import (
	"net/netip"
	"testing"
	"time"

	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/netns"
	"github.com/connlogd/connlogd/snapshot"
)

// The timestamp rule: every event's ts is when connlogd learnt of the
// change, never earlier than the change. These tests move the fake clock
// while the loop dumps, looks up and reads notifications, and check each
// event against the moment its change happened.

// stampHarness is a harness on the host namespace with a destroy
// subscription whose reads take readCost each.
func stampHarness(t *testing.T, yaml string, readCost time.Duration) (*harness, *fakeDumper, *fakeSub) {
	t.Helper()
	ns := hostNS()
	h := newHarness(t, testConfig(t, yaml))
	h.nss = []netns.NS{ns}
	k := &fakeDumper{clock: h.clock}
	sub := newFakeSub()
	sub.clock, sub.readCost = h.clock, readCost
	h.kernel[ns.ID], h.subs[ns.ID] = k, sub
	return h, k, sub
}

// conn returns an established TCP connection from port.
func conn(cookie uint64, port uint16) snapshot.Socket {
	var s snapshot.Socket
	s.Proto, s.Family, s.Cookie, s.State = snapshot.ProtoTCP, snapshot.FamilyIPv4, cookie, snapshot.StateEstablished
	s.Src = netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), port)
	s.Dst = netip.AddrPortFrom(netip.MustParseAddr("10.0.0.2"), 443)
	return s
}

// TestPollEventsNotStampedBeforeDumpEnded: a dump that takes 300 ms may
// find a socket that appeared at any moment of it, so its events are
// stamped when it ended, not when its round or the dump started.
func TestPollEventsNotStampedBeforeDumpEnded(t *testing.T) {
	h, k, _ := stampHarness(t, "", 0)
	k.cost = 300 * time.Millisecond
	h.start()
	h.out.take()
	h.clock.Advance(time.Second)
	k.set(conn(1, 40000), listener(2, 22))
	roundStart := h.clock.Now()
	h.round()
	dumpEnd := roundStart.Add(k.cost)
	evs := h.out.take()
	if len(evs) != 2 {
		t.Fatalf("wrote %v; want two appeared", kinds(evs))
	}
	for _, ev := range evs {
		if ev.Time.Before(dumpEnd) {
			t.Errorf("%s of port %d stamped %v, before the dump ended at %v", ev.Kind, ev.Socket.Src.Port(), ev.Time, dumpEnd)
		}
	}
}

// TestNotificationDrainedAfterPollKeepsReadTime: closes queued while a
// dump runs are read when its result comes back; each is stamped when it
// was read, after it was queued, never with the poll's time.
func TestNotificationDrainedAfterPollKeepsReadTime(t *testing.T) {
	h, k, sub := stampHarness(t, "", time.Millisecond)
	k.cost = 300 * time.Millisecond
	a, b := conn(1, 40000), conn(2, 40001)
	k.set(a, b)
	h.start()
	h.out.take()
	h.clock.Advance(time.Second)
	roundStart := h.clock.Now()
	// Both close during the dump: at +100 ms and +250 ms.
	k.set()
	sub.close(a, roundStart.Add(100*time.Millisecond))
	sub.close(b, roundStart.Add(250*time.Millisecond))
	h.round()
	evs := h.out.take()
	got := kinds(evs)
	if got["closed/"+event.ReasonDestroyed] != 2 || len(got) != 1 {
		t.Fatalf("wrote %v; want two closed/destroyed", got)
	}
	closedAt := map[uint64]time.Time{1: roundStart.Add(100 * time.Millisecond), 2: roundStart.Add(250 * time.Millisecond)}
	for _, ev := range evs {
		if ev.Time.Before(closedAt[ev.Socket.Cookie]) {
			t.Errorf("close of cookie %d stamped %v, before its notification was queued at %v", ev.Socket.Cookie, ev.Time, closedAt[ev.Socket.Cookie])
		}
		if ev.Time.Before(roundStart.Add(k.cost)) {
			t.Errorf("close of cookie %d stamped %v, before the drain that read it (after the dump, %v)", ev.Socket.Cookie, ev.Time, roundStart.Add(k.cost))
		}
	}
}

// TestBatchStampedPerRead: notifications that arrive while a drain is
// reading come back in the same batch; none is stamped with a time read
// before it arrived.
func TestBatchStampedPerRead(t *testing.T) {
	h, k, sub := stampHarness(t, "", time.Millisecond)
	a, b, c := conn(1, 40000), conn(2, 40001), conn(3, 40002)
	k.set(a, b, c)
	h.start()
	h.out.take()
	h.clock.Advance(time.Second)
	t0 := h.clock.Now()
	k.set()
	// Each arrives as the previous one is being read.
	at := map[uint64]time.Time{1: t0, 2: t0.Add(time.Millisecond), 3: t0.Add(2 * time.Millisecond)}
	sub.close(a, at[1])
	sub.close(b, at[2])
	sub.close(c, at[3])
	h.d.destroyReady(h.d.watches[hostNS().ID])
	evs := h.out.take()
	if got := kinds(evs)["closed/"+event.ReasonDestroyed]; got != 3 {
		t.Fatalf("wrote %v; want three closed/destroyed from one drain", kinds(evs))
	}
	for _, ev := range evs {
		if ev.Time.Before(at[ev.Socket.Cookie]) {
			t.Errorf("close of cookie %d stamped %v, before its notification arrived at %v", ev.Socket.Cookie, ev.Time, at[ev.Socket.Cookie])
		}
	}
}

// TestShortLivedStampedAfterArrival: a connection that opened and closed
// between polls gets its appeared and closed from the notification, both
// stamped when it was read.
func TestShortLivedStampedAfterArrival(t *testing.T) {
	h, _, sub := stampHarness(t, "", time.Millisecond)
	h.start()
	h.out.take()
	h.clock.Advance(time.Second)
	at := h.clock.Now().Add(5 * time.Millisecond)
	sub.close(conn(9, 40009), at)
	h.clock.Advance(10 * time.Millisecond)
	h.d.destroyReady(h.d.watches[hostNS().ID])
	evs := h.out.take()
	if len(evs) != 2 {
		t.Fatalf("wrote %v; want a short-lived appeared and closed", kinds(evs))
	}
	for _, ev := range evs {
		if !ev.ShortLived || ev.Time.Before(at) {
			t.Errorf("%s short_lived=%v stamped %v; want short-lived, not before %v", ev.Kind, ev.ShortLived, ev.Time, at)
		}
	}
}

// TestLookupConfirmedCloseStampedAfterLookup: a dump that skipped a live
// socket makes it a suspect; it closes while the lookup runs, and the
// lookup confirms it gone. Its close is stamped when the lookup answered,
// not with the dump's time, which precedes the close.
func TestLookupConfirmedCloseStampedAfterLookup(t *testing.T) {
	ns := hostNS()
	h := newHarness(t, testConfig(t, "destroy:\n  enabled: false\n"), ns)
	k := h.kernel[ns.ID]
	k.cost = 200 * time.Millisecond
	s := conn(5, 40005)
	k.set(s)
	h.start()
	h.out.take()
	h.clock.Advance(time.Second)
	var closedAt time.Time
	k.mu.Lock()
	k.skip = map[uint64]bool{5: true}
	k.onLookup = func() {
		h.clock.Advance(20 * time.Millisecond)
		closedAt = h.clock.Now()
		k.set()
	}
	k.mu.Unlock()
	roundStart := h.clock.Now()
	h.round()
	evs := h.out.take()
	if got := kinds(evs); got["closed/"+event.ReasonGone] != 1 || len(got) != 1 {
		t.Fatalf("wrote %v; want closed/gone", got)
	}
	if evs[0].Time.Before(closedAt) {
		t.Errorf("close stamped %v (round started %v); the socket closed at %v, during the lookup", evs[0].Time, roundStart, closedAt)
	}
}

// timeWaitAsked reports whether the last dump's TCP requests asked for
// TIME_WAIT sockets.
func timeWaitAsked(t *testing.T, k *fakeDumper) bool {
	t.Helper()
	k.mu.Lock()
	defer k.mu.Unlock()
	asked, tcp := false, false
	for _, r := range k.lastReq {
		if r.Proto == snapshot.ProtoTCP {
			tcp = true
			asked = asked || r.States&(1<<snapshot.StateTimeWait) != 0
		}
	}
	if !tcp {
		t.Fatal("the last dump made no TCP request")
	}
	return asked
}

// remnant returns a TIME_WAIT socket of the connection from port.
func remnant(cookie uint64, port uint16) snapshot.Socket {
	s := conn(cookie, port)
	s.State = snapshot.StateTimeWait
	return s
}

// TestTimeWaitLeftOutWhileNotificationsWork: with destroy notifications,
// polls do not ask for TIME_WAIT sockets, and the remnant of a
// connection reported closed is neither reported again nor looked up; a
// connection already in TIME_WAIT at start-up is not reported at all.
func TestTimeWaitLeftOutWhileNotificationsWork(t *testing.T) {
	h, k, sub := stampHarness(t, "", 0)
	a := conn(1, 40000)
	k.set(a, remnant(2, 40001), listener(3, 22))
	h.start()
	if timeWaitAsked(t, k) {
		t.Error("the first poll asked for TIME_WAIT sockets although notifications work")
	}
	if got := kinds(h.out.take()); got["appeared"] != 2 || len(got) != 1 {
		t.Errorf("start-up wrote %v; want 2 appeared (not the TIME_WAIT socket)", got)
	}
	// a closes: its notification, then its remnant (same cookie) stays.
	h.clock.Advance(time.Second)
	k.set(remnant(1, 40000), remnant(2, 40001), listener(3, 22))
	sub.close(a, h.clock.Now())
	h.d.destroyReady(h.d.watches[hostNS().ID])
	for range 3 {
		h.clock.Advance(time.Second)
		h.round()
		if timeWaitAsked(t, k) {
			t.Error("a poll asked for TIME_WAIT sockets although notifications work")
		}
	}
	if got := kinds(h.out.take()); got["closed/"+event.ReasonDestroyed] != 1 || len(got) != 1 {
		t.Errorf("wrote %v; want one closed/destroyed and nothing of the remnant", got)
	}
	k.mu.Lock()
	lookups := k.lookups
	k.mu.Unlock()
	if lookups != 0 {
		t.Errorf("%d lookups; a socket whose close was reported needs none", lookups)
	}
	if n := h.d.watches[hostNS().ID].differ.Len(); n != 1 {
		t.Errorf("%d sockets tracked; want 1 (the listener): the reported close is forgotten", n)
	}
}

// TestTimeWaitAskedWhereDumpsWitnessCloses: without notifications, and
// when the configured states name time_wait, polls ask for TIME_WAIT
// sockets as before; after notifications were lost they do not.
func TestTimeWaitAskedWhereDumpsWitnessCloses(t *testing.T) {
	t.Run("no notifications", func(t *testing.T) {
		ns := hostNS()
		h := newHarness(t, testConfig(t, ""), ns)
		h.kernel[ns.ID].set(listener(1, 22))
		h.start()
		if !timeWaitAsked(t, h.kernel[ns.ID]) {
			t.Error("TIME_WAIT left out without notifications")
		}
	})
	t.Run("states name time_wait", func(t *testing.T) {
		h, k, _ := stampHarness(t, "states: [established, time_wait]\n", 0)
		k.set(listener(1, 22))
		h.start()
		if !timeWaitAsked(t, k) {
			t.Error("TIME_WAIT left out although the configured states name it")
		}
	})
	t.Run("overrun", func(t *testing.T) {
		// TIME_WAIT stays out after notifications were lost; a tracked
		// connection whose close was lost is found by lookup, as a
		// remnant, and reported closed at the second poll that finds
		// only its remnant (a late notification had one poll to come).
		h, k, sub := stampHarness(t, "", 0)
		a := conn(1, 40000)
		k.set(a, listener(3, 22))
		h.start()
		h.out.take()
		k.set(remnant(1, 40000), listener(3, 22))
		h.clock.Advance(time.Second)
		sub.mu.Lock()
		sub.overrun = true
		sub.mu.Unlock()
		h.d.destroyReady(h.d.watches[hostNS().ID])
		h.d.finishRounds()
		if timeWaitAsked(t, k) {
			t.Error("the resync after an overrun asked for TIME_WAIT")
		}
		if got := kinds(h.out.take()); got["gap/"+event.GapOverrun] != 1 || len(got) != 1 {
			t.Errorf("overrun and resync wrote %v; want the gap only", got)
		}
		h.clock.Advance(time.Second)
		h.round()
		evs := h.out.take()
		if got := kinds(evs); got["closed/"+event.ReasonGone] != 1 || len(got) != 1 {
			t.Fatalf("next poll wrote %v; want a's closed/gone", got)
		}
		if evs[0].Socket.Cookie != 1 {
			t.Errorf("closed cookie %d; want a's", evs[0].Socket.Cookie)
		}
		h.clock.Advance(time.Second)
		h.round()
		if got := kinds(h.out.take()); len(got) != 0 {
			t.Errorf("later poll wrote %v; want nothing", got)
		}
	})
}

// TestShutdownLogsQueuedCloses: notifications the kernel queued before
// the stop are logged, not dropped with the subscription.
func TestShutdownLogsQueuedCloses(t *testing.T) {
	h, k, sub := stampHarness(t, "", 0)
	a, b := conn(1, 40000), conn(2, 40001)
	k.set(a, b)
	h.start()
	h.out.take()
	h.clock.Advance(time.Second)
	k.set()
	sub.close(a, h.clock.Now())
	sub.close(b, h.clock.Now())
	if err := h.d.shutdown(); err != nil {
		t.Fatal(err)
	}
	got := kinds(h.out.take())
	if got["closed/"+event.ReasonDestroyed] != 2 {
		t.Errorf("shutdown logged %d of 2 queued closes", got["closed/"+event.ReasonDestroyed])
	}
	if got["gap/"+event.GapStopUnread] != 0 {
		t.Errorf("shutdown that read every queued close reported %v", got)
	}
}

// TestShutdownAwaitsLateCloses: a close the kernel sends after the
// shutdown's drains found the queue empty (its work queue runs late on a
// loaded machine) is still logged: the shutdown listens until the
// notifications have been quiet for stopQuiet.
func TestShutdownAwaitsLateCloses(t *testing.T) {
	h, k, sub := stampHarness(t, "", 0)
	a := conn(1, 40000)
	k.set(a)
	h.start()
	h.out.take()
	h.clock.Advance(time.Second)
	k.set()
	before := sub.drainedEmpty()
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Once the shutdown has found the queue empty, as a late
		// notification finds it.
		for sub.drainedEmpty() == before {
			time.Sleep(time.Millisecond)
		}
		sub.push(a)
	}()
	if err := h.d.shutdown(); err != nil {
		t.Fatal(err)
	}
	<-done
	got := kinds(h.out.take())
	if got["closed/"+event.ReasonDestroyed] != 1 {
		t.Errorf("a close sent after the shutdown's drains emptied the queue: logged %v", got)
	}
}

// TestShutdownFloodReportsUnread: when closes keep coming past the
// bounded drain at shutdown, the stop says that closes went unread,
// once, rather than dropping them silently.
func TestShutdownFloodReportsUnread(t *testing.T) {
	h, k, sub := stampHarness(t, "", 0)
	k.set(conn(1, 40000))
	h.start()
	h.out.take()
	sub.flood, sub.floodCost = true, 100*time.Millisecond
	start := h.clock.Now()
	if err := h.d.shutdown(); err != nil {
		t.Fatal(err)
	}
	if got := kinds(h.out.take())["gap/"+event.GapStopUnread]; got != 1 {
		t.Errorf("shutdown under a flood wrote %d stop_unread gaps; want 1", got)
	}
	// Bounded by shutdownDrainTime, plus the drain under way when it ran
	// out (maxDrainBatches reads).
	if took := h.clock.Now().Sub(start); took > shutdownDrainTime+maxDrainBatches*sub.floodCost {
		t.Errorf("shutdown drained for %v of the clock; bound %v", took, shutdownDrainTime)
	}
}
