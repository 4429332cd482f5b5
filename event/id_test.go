package event

import (
	"testing"
	"time"

	"github.com/connlogd/connlogd/snapshot"
)

func TestNewID(t *testing.T) {
	boot, err := ParseBootID("5f1c0e2a-8d0b-4c7e-9a51-3f2d1b6e7c90")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1765058400, 123456789)
	base := Event{Kind: Closed, Time: t0, Netns: 4026531840, Socket: snapshot.Socket{Key: snapshot.Key{Cookie: 4102}}}
	id := NewID(boot, &base)
	if id.IsZero() || len(id.String()) != 32 {
		t.Fatalf("id %s", id)
	}
	// The same event gives the same id; the fields that are not part of
	// its identity do not change it.
	again := base
	again.Reason, again.Failure = ReasonDestroyed, FailedRefused
	if NewID(boot, &again) != id {
		t.Error("the same event got another id")
	}
	other := func(name string, edit func(e *Event), b BootID) {
		e := base
		edit(&e)
		if NewID(b, &e) == id {
			t.Errorf("%s: same id", name)
		}
	}
	other("kind", func(e *Event) { e.Kind = Appeared }, boot)
	other("time", func(e *Event) { e.Time = e.Time.Add(time.Nanosecond) }, boot)
	other("cookie", func(e *Event) { e.Socket.Cookie++ }, boot)
	other("netns", func(e *Event) { e.Netns++ }, boot)
	other("boot", func(*Event) {}, BootID{1})
	gap := Event{Kind: Gap, Time: t0, Reason: "destroy_overrun"}
	gid := NewID(boot, &gap)
	gap2 := gap
	gap2.Reason = "dump_failed"
	gap3 := gap
	gap3.Count = 7
	if NewID(boot, &gap2) == gid || NewID(boot, &gap3) == gid {
		t.Error("gaps of other reasons or counts share an id")
	}
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
