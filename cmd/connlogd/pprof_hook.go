//go:build connlogd_pprof

// A profiling hook for benchmark builds only (go build -tags
// connlogd_pprof): CONNLOGD_PPROF=127.0.0.1:6060 serves net/http/pprof
// there, so that bench/churn can profile the daemon under load. Release
// builds and packages never contain it.
package main

import (
	"net/http"
	_ "net/http/pprof"
	"os"
)

func init() {
	if addr := os.Getenv("CONNLOGD_PPROF"); addr != "" {
		go func() { _ = http.ListenAndServe(addr, nil) }()
	}
}
