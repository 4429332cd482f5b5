package statefile

import (
	"encoding/json"
	"testing"
	"time"
)

// FuzzDecode: whatever the file holds, Decode does not panic, and every
// record it keeps is one the kernel could have reported, once; what it
// keeps survives a save and a restore unchanged.
func FuzzDecode(f *testing.F) {
	good, err := json.Marshal(sample())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"version":1,"boot_id":"b","saved_at":"2026-12-06T12:00:00Z","namespaces":[{"dev":1,"ino":2,"sockets":[{"Socket":{"Proto":99,"Family":77,"State":255,"Cookie":1}}]}]}`))
	f.Add([]byte(`{"version":1,"boot_id":"b","saved_at":"2026-12-06T12:00:00Z","namespaces":[{"sockets":[{"Socket":{"Proto":"x"}},{"Socket":{"Proto":6,"Family":2,"State":1,"Cookie":5,"Src":"1.2.3.4:1","Dst":"1.2.3.4:2"}}]}]}`))
	f.Add([]byte(`{"version":1,"namespaces":[{"sockets":[1,[],{}]}]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		now := saved.Add(time.Hour)
		st, rep, err := Decode(data, now)
		if err != nil {
			return
		}
		if rep.Skipped < 0 || rep.Duplicates < 0 || (rep.Skipped > 0) != (rep.Example != "") {
			t.Fatalf("report %+v", rep)
		}
		seen := map[uint64]bool{}
		for _, ns := range st.Namespaces {
			for _, tr := range ns.Sockets {
				if why := CheckRecord(&tr.Socket); why != "" {
					t.Fatalf("kept a bad record: %s", why)
				}
				if seen[tr.Socket.Cookie] {
					t.Fatalf("cookie %d kept twice", tr.Socket.Cookie)
				}
				seen[tr.Socket.Cookie] = true
				if tr.FirstSeen.After(st.SavedAt) {
					t.Fatalf("cookie %d first seen after the save", tr.Socket.Cookie)
				}
			}
		}
		again, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		st2, rep2, err := Decode(again, now)
		if err != nil {
			t.Fatalf("re-decoding a decoded state: %v", err)
		}
		if rep2 != (Report{}) || st2.Sockets() != st.Sockets() {
			t.Fatalf("re-decoding a decoded state: %d sockets, %+v; want %d, nothing skipped", st2.Sockets(), rep2, st.Sockets())
		}
	})
}
