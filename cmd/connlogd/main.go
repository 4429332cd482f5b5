// Command connlogd logs every change in the kernel's socket table (TCP
// and UDP, IPv4 and IPv6) as one JSON event per line, read through
// netlink sock_diag.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/connlogd/connlogd/config"
	"github.com/connlogd/connlogd/engine"
	"github.com/connlogd/connlogd/internal/version"
	"github.com/connlogd/connlogd/netns"
)

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

func realMain(args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("connlogd", flag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.Usage = func() { usage(fl) }
	cfgPath := fl.String("config", "", "configuration file (default "+config.DefaultPath+" when it exists, else built-in defaults)")
	check := fl.Bool("check-config", false, "validate the configuration and exit (0: valid, 1: invalid)")
	once := fl.Bool("once", false, "print the current socket table as JSON lines and exit")
	showVersion := fl.Bool("version", false, "print the version and exit")
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fl.NArg() > 0 {
		fmt.Fprintf(stderr, "connlogd: unexpected argument %q\n", fl.Arg(0))
		return 2
	}
	if *showVersion {
		printVersion(stdout)
		return 0
	}
	cfg, source, err := loadConfig(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "connlogd:", err)
		return 1
	}
	// Start, reload and -check-config apply the same checks.
	if err := cfg.Check(); err != nil {
		fmt.Fprintf(stderr, "connlogd: %s: %v\n", source, err)
		return 1
	}
	if *check {
		for _, w := range namespaceWarnings(cfg) {
			fmt.Fprintf(stderr, "connlogd: %s: warning: %s\n", source, w)
		}
		fmt.Fprintf(stdout, "%s: configuration is valid\n", source)
		return 0
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	for _, w := range namespaceWarnings(cfg) {
		log.Warn(w, "config", source)
	}
	if *once {
		if err := engine.Snapshot(cfg, stdout, log); err != nil {
			fmt.Fprintln(stderr, "connlogd:", err)
			return 1
		}
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log.Info("starting", "version", version.Version(), "config", source, "interval", cfg.Interval)
	// Exit status (README): 0 when every event was delivered or counted
	// as dropped while running; 1 when start failed or the final flush
	// did (events lost at the stop, which the unit then shows as failed).
	if err := run(ctx, cfg, cfgFile(*cfgPath, source), log); err != nil {
		log.Error("exiting", "err", err)
		return 1
	}
	return 0
}

// namespaceWarnings names the listed namespaces that do not exist now.
// They are not errors: a namespace may be created after connlogd starts
// (a container), and it is watched from the rescan that finds it.
func namespaceWarnings(cfg *config.Config) []string {
	var out []string
	for _, e := range cfg.Namespaces.List {
		if e == config.NamespacesHost {
			continue
		}
		if _, err := netns.Resolve(e); err != nil {
			out = append(out, fmt.Sprintf("namespaces: %q does not exist yet (%v); it is watched once it appears", e, errors.Unwrap(err)))
		}
	}
	return out
}

// loadConfig reads the named file, or the default path when it exists, or
// falls back to the built-in defaults. It says which it used.
func loadConfig(path string) (*config.Config, string, error) {
	if path != "" {
		cfg, err := config.Load(path)
		return cfg, path, err
	}
	cfg, err := config.Load(config.DefaultPath)
	if errors.Is(err, fs.ErrNotExist) {
		return config.Default(), "built-in defaults", nil
	}
	return cfg, config.DefaultPath, err
}

// cfgFile returns the file a running daemon reloads: the one it read, or
// none when it runs on built-in defaults.
func cfgFile(flagPath, source string) string {
	if flagPath != "" {
		return flagPath
	}
	if source == config.DefaultPath {
		return source
	}
	return ""
}

// run wires the engine to the signals, the configuration file, systemd and
// the metrics endpoint, and runs it until ctx is done.
func run(ctx context.Context, cfg *config.Config, cfgPath string, log *slog.Logger) error {
	met, err := startMetrics(cfg.Metrics.Listen, log)
	if err != nil {
		return err
	}
	defer met.close()
	reopen := make(chan os.Signal, 1)
	signal.Notify(reopen, syscall.SIGUSR1)
	defer signal.Stop(reopen)
	reloads, stopReload := watchConfig(cfgPath, log)
	defer stopReload()
	n := newNotifier(log)
	opts := engine.Options{
		Log:            log,
		Version:        version.Version(),
		Notify:         n,
		WatchdogPeriod: n.watchdogPeriod(),
		Reload:         reloads,
		Reopen:         reopen,
	}
	if met != nil {
		opts.Metrics = met // a nil *metrics in the interface would not be nil
	}
	return engine.Run(ctx, cfg, opts)
}
