package sink

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/connlogd/connlogd/event"
	"github.com/connlogd/connlogd/snapshot"
)

var (
	t0   = time.Date(2026, 11, 25, 10, 0, 0, 123456789, time.UTC)
	tcp4 = snapshot.Socket{
		Key: snapshot.Key{
			Proto:  snapshot.ProtoTCP,
			Family: snapshot.FamilyIPv4,
			Cookie: 4097,
			Src:    netip.MustParseAddrPort("10.0.0.5:52814"),
			Dst:    netip.MustParseAddrPort("93.184.216.34:443"),
		},
		State: snapshot.StateEstablished,
		UID:   1000,
		Inode: 123456,
	}
	// A link-local IPv6 socket: ifindex set, zone must not be printed.
	tcp6 = snapshot.Socket{
		Key: snapshot.Key{
			Proto:   snapshot.ProtoTCP,
			Family:  snapshot.FamilyIPv6,
			IfIndex: 2,
			Cookie:  18446744073709551615, // uint64 max: no float rounding
			Src:     netip.AddrPortFrom(netip.MustParseAddr("fe80::1%eth0"), 22),
			Dst:     netip.MustParseAddrPort("[fe80::2]:40110"),
		},
		State:    snapshot.StateFinWait2,
		UID:      0,
		Inode:    99,
		CgroupID: 4321,
		HasInfo:  true,
		Info: snapshot.TCPInfo{
			Len: 280, RTT: 250, TotalRetrans: 3, BytesAcked: 1235,
			BytesReceived: 5678, SegsOut: 20, SegsIn: 18, BytesSent: 1234,
		},
	}
	udp6 = snapshot.Socket{
		Key: snapshot.Key{
			Proto:  snapshot.ProtoUDP,
			Family: snapshot.FamilyIPv6,
			Cookie: 77,
			Src:    netip.MustParseAddrPort("[::ffff:10.0.0.5]:53"),
			Dst:    netip.MustParseAddrPort("[::]:0"),
		},
		State: snapshot.StateClose,
		UID:   101,
		Inode: 555,
	}
)

const tsText = `"ts":"2026-11-25T10:00:00.123456789Z"`

type goldenCase struct {
	name string
	ev   event.Event
	want string
}

func goldenCases() []goldenCase {
	oldInfo := tcp6
	oldInfo.Info = snapshot.TCPInfo{Len: 104, RTT: 900, TotalRetrans: 1, BytesAcked: 5, SegsOut: 9}
	short := tcp4
	short.HasInfo = true
	short.Info = snapshot.TCPInfo{Len: 200, RTT: 40, BytesAcked: 10, BytesReceived: 20, SegsOut: 3, SegsIn: 4, BytesSent: 99}
	changed := tcp4
	changed.State = snapshot.StateCloseWait
	changed.CgroupID = 7
	listener := snapshot.Socket{
		Key: snapshot.Key{
			Proto: snapshot.ProtoTCP, Family: snapshot.FamilyIPv4, Cookie: 4100,
			Src: netip.MustParseAddrPort("0.0.0.0:80"), Dst: netip.MustParseAddrPort("0.0.0.0:0"),
		},
		State: snapshot.StateListen, Inode: 123460, CgroupID: 5342,
	}
	nginx := event.Process{PID: 812, UID: 0, User: "root", Comm: "nginx", Exe: "/usr/sbin/nginx"}
	nginxCgroup := event.Cgroup{Path: "/system.slice/nginx.service", SystemdUnit: "nginx.service"}
	// A connection closed from inside a container: the TIME_WAIT remnant
	// has no inode, the owner was learned before; exe unreadable.
	inContainer := snapshot.Socket{
		Key: snapshot.Key{
			Proto: snapshot.ProtoTCP, Family: snapshot.FamilyIPv4, Cookie: 4101,
			Src: netip.MustParseAddrPort("172.17.0.2:40312"), Dst: netip.MustParseAddrPort("93.184.216.34:443"),
		},
		State: snapshot.StateTimeWait, UID: 1000, CgroupID: 6001,
	}
	const ctr = "4c01db0b339c0ab9e2fa2fe2e5b3a0d4f1e2c3b4a5968778695a4b3c2d1e0f9a"
	curl := event.Process{PID: 4242, UID: 1000, User: "1000", Comm: "curl", Cmdline: "curl -s https://example.com/"}
	containerCgroup := event.Cgroup{Path: "/system.slice/docker-" + ctr + ".scope", SystemdUnit: "docker-" + ctr + ".scope", ContainerID: ctr}

	// A connect refused by a reset, as the destroy notification shows it.
	refused := snapshot.Socket{
		Key: snapshot.Key{
			Proto: snapshot.ProtoTCP, Family: snapshot.FamilyIPv4, Cookie: 4102,
			Src: netip.MustParseAddrPort("10.0.0.5:48916"), Dst: netip.MustParseAddrPort("10.0.0.9:7001"),
		},
		State: snapshot.StateClose, HasInfo: true,
		Info: snapshot.TCPInfo{Len: 280, RTTVar: 250000, SegsOut: 1, SegsIn: 1},
	}
	// A request socket whose client never completed the handshake.
	halfOpen := snapshot.Socket{
		Key: snapshot.Key{
			Proto: snapshot.ProtoTCP, Family: snapshot.FamilyIPv4, Cookie: 4103,
			Src: netip.MustParseAddrPort("10.0.0.5:80"), Dst: netip.MustParseAddrPort("198.51.100.7:61000"),
		},
		State: snapshot.StateSynRecv,
	}

	return []goldenCase{{
		name: "appeared initial",
		ev:   event.Event{Kind: event.Appeared, Time: t0, Socket: tcp4, FirstSeen: t0, Initial: true},
		want: `{` + tsText + `,"event":"appeared","host":"web-1","proto":"tcp","family":"ipv4","state":"established","src_ip":"10.0.0.5","src_port":52814,"dst_ip":"93.184.216.34","dst_port":443,"community_id":"1:S2MMV1wX1gP0ToX9Dr8qwK/IEhs=","cookie":4097,"uid":1000,"inode":123456,"initial":true,"event_id":"c10dca2df194606a0000000000000001"}`,
	}, {
		name: "appeared not initial",
		ev:   event.Event{Kind: event.Appeared, Time: t0, Socket: tcp4, FirstSeen: t0},
		want: `{` + tsText + `,"event":"appeared","host":"web-1","proto":"tcp","family":"ipv4","state":"established","src_ip":"10.0.0.5","src_port":52814,"dst_ip":"93.184.216.34","dst_port":443,"community_id":"1:S2MMV1wX1gP0ToX9Dr8qwK/IEhs=","cookie":4097,"uid":1000,"inode":123456,"event_id":"c10dca2df194606a0000000000000002"}`,
	}, {
		name: "state_changed",
		ev:   event.Event{Kind: event.StateChanged, Time: t0, Socket: changed, PrevState: snapshot.StateEstablished, FirstSeen: t0.Add(-time.Minute), Initial: true},
		want: `{` + tsText + `,"event":"state_changed","host":"web-1","proto":"tcp","family":"ipv4","state":"close_wait","prev_state":"established","src_ip":"10.0.0.5","src_port":52814,"dst_ip":"93.184.216.34","dst_port":443,"community_id":"1:S2MMV1wX1gP0ToX9Dr8qwK/IEhs=","cookie":4097,"uid":1000,"inode":123456,"cgroup_id":7,"event_id":"c10dca2df194606a0000000000000003"}`,
	}, {
		name: "closed tcp6 full info",
		ev:   event.Event{Kind: event.Closed, Time: t0, Socket: tcp6, FirstSeen: t0.Add(-12500 * time.Millisecond), Reason: event.ReasonGone},
		want: `{` + tsText + `,"event":"closed","host":"web-1","proto":"tcp","family":"ipv6","state":"fin_wait2","src_ip":"fe80::1","src_port":22,"dst_ip":"fe80::2","dst_port":40110,"community_id":"1:oMd5epLWQZr2ctkTbBew7u6fYvM=","ifindex":2,"cookie":18446744073709551615,"uid":0,"inode":99,"cgroup_id":4321,"reason":"gone","duration":12.5,"bytes_sent":1234,"bytes_received":5678,"bytes_acked":1235,"retransmits":3,"rtt_us":250,"segs_out":20,"segs_in":18,"event_id":"c10dca2df194606a0000000000000004"}`,
	}, {
		name: "closed old kernel tcp_info",
		ev:   event.Event{Kind: event.Closed, Time: t0, Socket: oldInfo, FirstSeen: t0.Add(-1500 * time.Microsecond), Reason: event.ReasonGone},
		want: `{` + tsText + `,"event":"closed","host":"web-1","proto":"tcp","family":"ipv6","state":"fin_wait2","src_ip":"fe80::1","src_port":22,"dst_ip":"fe80::2","dst_port":40110,"community_id":"1:oMd5epLWQZr2ctkTbBew7u6fYvM=","ifindex":2,"cookie":18446744073709551615,"uid":0,"inode":99,"cgroup_id":4321,"reason":"gone","duration":0.0015,"retransmits":1,"rtt_us":900,"event_id":"c10dca2df194606a0000000000000005"}`,
	}, {
		name: "closed short-lived, tcp_info without bytes_sent",
		ev:   event.Event{Kind: event.Closed, Time: t0, Socket: short, FirstSeen: t0, ShortLived: true, Reason: event.ReasonDestroyed},
		want: `{` + tsText + `,"event":"closed","host":"web-1","proto":"tcp","family":"ipv4","state":"established","src_ip":"10.0.0.5","src_port":52814,"dst_ip":"93.184.216.34","dst_port":443,"community_id":"1:S2MMV1wX1gP0ToX9Dr8qwK/IEhs=","cookie":4097,"uid":1000,"inode":123456,"short_lived":true,"reason":"destroyed","duration":0,"bytes_received":20,"bytes_acked":10,"retransmits":0,"rtt_us":40,"segs_out":3,"segs_in":4,"event_id":"c10dca2df194606a0000000000000006"}`,
	}, {
		name: "closed udp: no counters",
		ev:   event.Event{Kind: event.Closed, Time: t0, Socket: udp6, FirstSeen: t0.Add(-2 * time.Second), Reason: event.ReasonGone},
		want: `{` + tsText + `,"event":"closed","host":"web-1","proto":"udp","family":"ipv6","state":"close","src_ip":"::ffff:10.0.0.5","src_port":53,"dst_ip":"::","dst_port":0,"cookie":77,"uid":101,"inode":555,"reason":"gone","duration":2,"event_id":"c10dca2df194606a0000000000000007"}`,
	}, {
		name: "gap",
		ev:   event.Event{Kind: event.Gap, Time: t0, Reason: "malformed_netlink", Count: 3, Socket: tcp4},
		want: `{` + tsText + `,"event":"gap","host":"web-1","reason":"malformed_netlink","count":3,"event_id":"c10dca2df194606a0000000000000008"}`,
	}, {
		name: "gap without count",
		ev:   event.Event{Kind: event.Gap, Time: t0, Reason: "dump_failed"},
		want: `{` + tsText + `,"event":"gap","host":"web-1","reason":"dump_failed","event_id":"c10dca2df194606a0000000000000009"}`,
	}, {
		name: "appeared with owner",
		ev:   event.Event{Kind: event.Appeared, Time: t0, Socket: listener, FirstSeen: t0, Direction: event.DirectionListen, Process: &nginx, Cgroup: &nginxCgroup},
		want: `{` + tsText + `,"event":"appeared","host":"web-1","proto":"tcp","family":"ipv4","state":"listen","src_ip":"0.0.0.0","src_port":80,"dst_ip":"0.0.0.0","dst_port":0,"cookie":4100,"uid":0,"inode":123460,"cgroup_id":5342,"direction":"listen","pid":812,"comm":"nginx","exe":"/usr/sbin/nginx","user":"root","cgroup":"/system.slice/nginx.service","systemd_unit":"nginx.service","event_id":"c10dca2df194606a000000000000000a"}`,
	}, {
		name: "closed with owner: container, cmdline, inode gone",
		ev:   event.Event{Kind: event.Closed, Time: t0, Socket: inContainer, FirstSeen: t0.Add(-3 * time.Second), Reason: event.ReasonDestroyed, Direction: event.DirectionOutbound, Process: &curl, Cgroup: &containerCgroup},
		want: `{` + tsText + `,"event":"closed","host":"web-1","proto":"tcp","family":"ipv4","state":"time_wait","src_ip":"172.17.0.2","src_port":40312,"dst_ip":"93.184.216.34","dst_port":443,"community_id":"1:Xg5qlcGs3wAbk9joGSdhxIBXqUs=","cookie":4101,"uid":1000,"inode":0,"cgroup_id":6001,"direction":"outbound","pid":4242,"comm":"curl","user":"1000","cmdline":"curl -s https://example.com/","cgroup":"/system.slice/docker-4c01db0b339c0ab9e2fa2fe2e5b3a0d4f1e2c3b4a5968778695a4b3c2d1e0f9a.scope","systemd_unit":"docker-4c01db0b339c0ab9e2fa2fe2e5b3a0d4f1e2c3b4a5968778695a4b3c2d1e0f9a.scope","container_id":"4c01db0b339c0ab9e2fa2fe2e5b3a0d4f1e2c3b4a5968778695a4b3c2d1e0f9a","reason":"destroyed","duration":3,"event_id":"c10dca2df194606a000000000000000b"}`,
	}, {
		name: "updated",
		ev:   event.Event{Kind: event.Updated, Time: t0, Socket: tcp6, FirstSeen: t0.Add(-time.Hour)},
		want: `{` + tsText + `,"event":"updated","host":"web-1","proto":"tcp","family":"ipv6","state":"fin_wait2","src_ip":"fe80::1","src_port":22,"dst_ip":"fe80::2","dst_port":40110,"community_id":"1:oMd5epLWQZr2ctkTbBew7u6fYvM=","ifindex":2,"cookie":18446744073709551615,"uid":0,"inode":99,"cgroup_id":4321,"duration":3600,"bytes_sent":1234,"bytes_received":5678,"bytes_acked":1235,"retransmits":3,"rtt_us":250,"segs_out":20,"segs_in":18,"event_id":"c10dca2df194606a000000000000000c"}`,
	}, {
		name: "closed: connect refused",
		ev:   event.Event{Kind: event.Closed, Time: t0, Socket: refused, FirstSeen: t0, ShortLived: true, Reason: event.ReasonDestroyed, Direction: event.DirectionOutbound, Failure: event.FailedRefused},
		want: `{` + tsText + `,"event":"closed","host":"web-1","proto":"tcp","family":"ipv4","state":"close","src_ip":"10.0.0.5","src_port":48916,"dst_ip":"10.0.0.9","dst_port":7001,"community_id":"1:cGJ/zx1U/Iuri85QeHGlUkhK9xs=","cookie":4102,"uid":0,"inode":0,"direction":"outbound","short_lived":true,"reason":"destroyed","outcome":"failed","failure":"refused","duration":0,"bytes_sent":0,"bytes_received":0,"bytes_acked":0,"retransmits":0,"rtt_us":0,"segs_out":1,"segs_in":1,"event_id":"c10dca2df194606a000000000000000d"}`,
	}, {
		name: "closed: inbound handshake never completed",
		ev:   event.Event{Kind: event.Closed, Time: t0, Socket: halfOpen, FirstSeen: t0.Add(-3 * time.Second), Reason: event.ReasonGone, Direction: event.DirectionInbound, Failure: event.FailedUnknown},
		want: `{` + tsText + `,"event":"closed","host":"web-1","proto":"tcp","family":"ipv4","state":"syn_recv","src_ip":"10.0.0.5","src_port":80,"dst_ip":"198.51.100.7","dst_port":61000,"community_id":"1:dSpCSG+tuxVaAqlTwrNPzgT8vxg=","cookie":4103,"uid":0,"inode":0,"direction":"inbound","reason":"gone","outcome":"failed","duration":3,"event_id":"c10dca2df194606a000000000000000e"}`,
	}, {
		name: "socket (-once)",
		ev:   event.Event{Kind: event.Snapshot, Time: t0, Socket: udp6},
		want: `{` + tsText + `,"event":"socket","host":"web-1","proto":"udp","family":"ipv6","state":"close","src_ip":"::ffff:10.0.0.5","src_port":53,"dst_ip":"::","dst_port":0,"cookie":77,"uid":101,"inode":555,"event_id":"c10dca2df194606a000000000000000f"}`,
	}}
}

// TestEncodeGolden writes the golden events through NewWriter, the
// daemon's stdout sink, and finds each golden line.
func TestEncodeGolden(t *testing.T) {
	cases := goldenCases()
	var b bytes.Buffer
	tee, err := NewWriter(&b, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	for i := range cases {
		if err := tee.Write(&cases[i].ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := tee.Close(); err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(got) != len(cases) {
		t.Fatalf("%d lines for %d events:\n%s", len(got), len(cases), b.String())
	}
	for i, tt := range cases {
		if got[i] != tt.want {
			t.Errorf("%s: got\n%s\nwant\n%s", tt.name, got[i], tt.want)
		}
		if !json.Valid([]byte(got[i])) {
			t.Errorf("%s: invalid JSON: %s", tt.name, got[i])
		}
	}
}

func TestEncodeTimestamp(t *testing.T) {
	// Fixed width in UTC, whatever the event's zone and fraction.
	loc := time.FixedZone("UTC+2", 2*3600)
	lines := encodeSchema(t, schemaNative,
		event.Event{Kind: event.Gap, Time: time.Date(2026, 11, 25, 12, 0, 0, 0, loc)},
		event.Event{Kind: event.Gap, Time: time.Date(2026, 11, 25, 12, 0, 0, 100, loc)},
	)
	for i, want := range []string{"2026-11-25T10:00:00.000000000Z", "2026-11-25T10:00:00.000000100Z"} {
		if !strings.HasPrefix(lines[i], `{"ts":"`+want+`","event":"gap"`) {
			t.Errorf("line %d = %s, want ts %s", i, lines[i], want)
		}
	}
	// An event without a time still gets one: ts is on every line.
	lines = encodeSchema(t, schemaNative, event.Event{Kind: event.Gap})
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatal(err)
	}
	if _, err := time.Parse(time.RFC3339Nano, m["ts"].(string)); err != nil {
		t.Errorf("ts: %v", err)
	}
}

// TestEncodeTimeMatchesLayout holds the hand-written timestamp to the
// layout it replaces, byte for byte, over times of every field's range,
// and years the layout alone can write.
func TestEncodeTimeMatchesLayout(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	times := []time.Time{
		time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC), // (the zero time is stamped now)
		time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 2, 28, 23, 59, 60, 5, time.FixedZone("x", -3600)),
	}
	for range 20000 {
		times = append(times, time.Unix(rng.Int64N(1<<36)-1<<34, rng.Int64N(1e9)).In(time.FixedZone("z", int(rng.Int64N(50000))-25000)))
	}
	for _, tm := range times {
		got := encodeSchema(t, schemaNative, event.Event{Kind: event.Gap, Time: tm})[0]
		want := `{"ts":"` + tm.UTC().Format(tsLayout) + `","event":"gap"`
		if !strings.HasPrefix(got, want) {
			t.Fatalf("time %v: got %s, want prefix %s", tm, got, want)
		}
	}
}

// TestCommunityIDFollowsFlow checks that the Community ID kept from the
// last event is never written for another flow: events of alternating
// flows, and of a flow with no remote end, each get their own.
func TestCommunityIDFollowsFlow(t *testing.T) {
	a, b := tcp4, tcp4
	b.Dst = netip.MustParseAddrPort("93.184.216.35:443")
	l := tcp4
	l.State, l.Dst = snapshot.StateListen, netip.MustParseAddrPort("0.0.0.0:0")
	// The server's socket of a: the ends swapped, the same flow.
	ra := a
	ra.Src, ra.Dst = a.Dst, a.Src
	// A flow from an unspecified address, and its reverse, which has no
	// remote end.
	u := tcp4
	u.Src = netip.MustParseAddrPort("0.0.0.0:52814")
	ru := u
	ru.Src, ru.Dst = u.Dst, u.Src
	evs := []event.Event{
		{Kind: event.Appeared, Time: t0, Socket: a},
		{Kind: event.Closed, Time: t0, Socket: a},
		{Kind: event.Appeared, Time: t0, Socket: ra},
		{Kind: event.Appeared, Time: t0, Socket: b},
		{Kind: event.Appeared, Time: t0, Socket: l},
		{Kind: event.Appeared, Time: t0, Socket: a},
		{Kind: event.Appeared, Time: t0, Socket: l},
		{Kind: event.Appeared, Time: t0, Socket: u},
		{Kind: event.Appeared, Time: t0, Socket: ru},
		{Kind: event.Appeared, Time: t0, Socket: u},
	}
	lines := encodeSchema(t, schemaNative, evs...)
	for i, ev := range evs {
		id, ok := appendCommunityID(nil, ev.Socket.Proto, ev.Socket.Src, ev.Socket.Dst)
		has := strings.Contains(lines[i], `"community_id":`)
		if has != ok || (ok && !strings.Contains(lines[i], `"community_id":"`+string(id)+`"`)) {
			t.Errorf("event %d: %s; want community_id %q (%v)", i, lines[i], id, ok)
		}
	}
}

func benchEvents() []event.Event {
	return []event.Event{
		{Kind: event.Appeared, Time: t0, Socket: tcp4, FirstSeen: t0},
		{Kind: event.StateChanged, Time: t0, Socket: tcp4, PrevState: snapshot.StateSynSent, FirstSeen: t0},
		{Kind: event.Closed, Time: t0, Socket: tcp6, FirstSeen: t0.Add(-time.Second), Reason: event.ReasonGone},
		{Kind: event.Gap, Time: t0, Reason: "dump_failed"},
	}
}
