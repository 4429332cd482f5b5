package sink

import (
	"fmt"
	"testing"
)

func TestBatchDropFront(t *testing.T) {
	for _, tt := range []struct {
		n    int
		want string
	}{
		{0, "[a bb ccc]"},
		{1, "[bb ccc]"},
		{2, "[ccc]"},
		{3, "[]"},
		{5, "[]"},
	} {
		t.Run(fmt.Sprint(tt.n), func(t *testing.T) {
			var b batch
			for _, m := range []string{"a", "bb", "ccc"} {
				b.add([]byte(m))
			}
			b.dropFront(tt.n)
			var got []string
			for i := range b.len() {
				got = append(got, string(b.msg(i)))
			}
			if fmt.Sprint(got) != tt.want {
				t.Errorf("after dropFront(%d): %v, want %s", tt.n, got, tt.want)
			}
			b.add([]byte("d")) // still usable
			if m := string(b.msg(b.len() - 1)); m != "d" {
				t.Errorf("added %q, read %q", "d", m)
			}
		})
	}
}
