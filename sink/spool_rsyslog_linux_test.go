//go:build linux

package sink

import (
	"fmt"
	"testing"
	"time"

	"github.com/connlogd/connlogd/config"
)

// TestRsyslogSpool: a syslog sink with a spool keeps what rsyslogd, down,
// cannot take, across a stop and a new start on the same spool; once
// rsyslogd is up every event arrives, and the spool empties as rsyslogd
// acknowledges (RELP: its answers; TCP: its kernel).
func TestRsyslogSpool(t *testing.T) {
	pki := newTestPKI(t)
	for _, mode := range []string{"relp", "tcp", "tls", "relp-tls"} {
		t.Run(mode, func(t *testing.T) {
			r := newRsyslog(t, mode, pki)
			dir := t.TempDir() + "/spool"
			spec := config.Sink{Type: config.SinkSyslog, Network: mode, Address: r.addr(),
				DrainTimeout: 300 * time.Millisecond, Spool: config.Spool{Dir: dir}}
			switch mode {
			case "tls":
				spec.TLS = config.TLS{CAFile: pki.caFile}
			case "relp-tls":
				spec.TLS = config.TLS{CAFile: pki.caFile, CertFile: pki.clientCert, KeyFile: pki.clientKey}
			}
			spoolWhileDown(t, spec, "rsyslogd")

			r.start()
			tee := otlpTee(t, spec)
			for i := 300; i < 500; i++ {
				tee.Write(gapAt(fmt.Sprintf("%04d", i)))
			}
			got := r.waitLines(500)
			waitFor(t, func() bool { return tee.Stats()[0].Spool.Events == 0 })
			if err := tee.Close(); err != nil {
				t.Fatal(err)
			}
			for i, line := range got {
				_, body := parseReceived(t, line)
				if body["reason"] != fmt.Sprintf("%04d", i) {
					t.Fatalf("message %d is %v", i, body["reason"])
				}
			}
			if st := tee.Stats()[0]; st.Written != 500 || st.Queued != 0 || st.Dropped != 0 || st.Spool.Recovered != 300 {
				t.Fatalf("stats %+v %v", st, st.Spool)
			}
		})
	}
}
