package config

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// FuzzParse checks that Parse never panics, that every error is one
// *Error line naming the file and a line of the input, and that what it
// accepts Validate accepts too.
func FuzzParse(f *testing.F) {
	if data, err := os.ReadFile("../config.example.yaml"); err == nil {
		f.Add(data)
	}
	for _, s := range []string{
		"",
		"interval: 1s\n",
		"interval: 200ms\nprotocols: [tcp]\nfamilies: [ipv6]\nstates: [listen, established]\n",
		"sinks:\n  - type: file\n    path: /x\n    mode: 0600\n  - type: syslog\n    network: udp\n    address: h:514\n    facility: daemon\n",
		"sinks:\n  - &s {type: stdout}\n  - *s\n",
		"interval: 1s\n---\ninterval: 2s\n",
		"a: b: c\n",
		"x: &a [*a]\n",
		"interval: 1s\r\nfoo: [\r\n",
	} {
		f.Add([]byte(s))
	}
	const name = "fuzz.yaml"
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, name)
		if err != nil {
			msg := err.Error()
			if strings.ContainsAny(msg, "\r\n") {
				t.Fatalf("error is not one line: %q", msg)
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %q is a %T, not an *Error", msg, err)
			}
			if maxLine := lineAt(data, len(data)) + 1; ce.File != name || ce.Line < 1 || ce.Line > maxLine {
				t.Fatalf("error %q: file %q line %d; want %q, line 1-%d", msg, ce.File, ce.Line, name, maxLine)
			}
			if c != nil {
				t.Fatalf("config returned with error %q", msg)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted %q but Validate says %v", data, err)
		}
	})
}
