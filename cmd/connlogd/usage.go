package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/internal/version"
)

// usage is what -h prints. packaging/mangen builds the OPTIONS, FILES,
// SIGNALS and SEE ALSO sections of connlogd(8) from this text, so its
// layout is kept regular: a heading line ending in ":", then entries
// indented by two spaces, each continued on lines indented further.
func usage(fl *flag.FlagSet) {
	w := fl.Output()
	fmt.Fprintf(w, `Usage: connlogd [-config FILE] [-check-config] [-once] [-version]

connlogd logs every change in the kernel's TCP and UDP socket table (a
socket appeared, changed state, or closed) as one JSON event per line, to
stdout, files or syslog, read through netlink sock_diag.

Options:
`)
	fl.PrintDefaults()
	fmt.Fprintf(w, `
Files:
  %s
    	the configuration (connlogd.yaml(5)), read when it exists and -config
    	is not given; without it connlogd runs on built-in defaults
  /var/lib/connlogd/state.json
    	the socket table kept across restarts, under systemd's StateDirectory
  /var/log/connlogd/
    	the shipped unit's LogsDirectory, for file sinks

Signals:
  SIGTERM, SIGINT
    	finish the current poll, flush the sinks and exit 0; exit 1 when
    	the final flush fails (events lost at the stop)
  SIGHUP
    	reload the configuration (a bad file is refused, the running one
    	stays) and reopen the file sinks; connlogd also reloads when the
    	file changes
  SIGUSR1
    	reopen the file sinks, for logrotate

Documentation:
  connlogd(8), connlogd.yaml(5)
  /usr/share/doc/connlogd/ (events.md: the event schema)
  https://github.com/connlogd/connlogd
`, config.DefaultPath)
}

// printVersion is what -version prints: the version, the commit and the
// Go toolchain, each on its own line.
func printVersion(w io.Writer) {
	fmt.Fprintf(w, "connlogd %s\ncommit %s\n%s\n", version.Version(), version.Commit(), version.Go())
}
