package main

import (
	"crypto/sha256"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/connlogd/connlogd/engine"
)

// reloadDebounce lets an editor or a ConfigMap update finish its burst of
// writes and renames before the file is read.
const reloadDebounce = 200 * time.Millisecond

// watchConfig sends a request on SIGHUP, and when the file's content
// changes. It watches the file's directory, not the file: editors save by
// renaming a new file over the old one, and Kubernetes swaps a symlink,
// and both leave a watch on the old inode blind. A content hash skips
// writes that change nothing. path "" (built-in defaults) watches nothing
// but still turns SIGHUP into a request, which then has nothing to read.
func watchConfig(path string, log *slog.Logger) (<-chan engine.ReloadRequest, func()) {
	out := make(chan engine.ReloadRequest, 1)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	quit := make(chan struct{})
	done := make(chan struct{})

	var events chan fsnotify.Event
	var errs chan error
	var w *fsnotify.Watcher
	if path != "" {
		var err error
		w, err = fsnotify.NewWatcher()
		if err == nil {
			err = w.Add(filepath.Dir(path))
		}
		if err != nil {
			log.Warn("cannot watch the configuration file; reload with SIGHUP", "path", path, "err", err)
			if w != nil {
				w.Close()
				w = nil
			}
		} else {
			events, errs = w.Events, w.Errors
		}
	}
	last := hashFile(path)
	send := func(reason string) {
		select {
		case out <- engine.ReloadRequest{Path: path, Reason: reason}:
		default: // one request already waiting covers this one
		}
	}
	go func() {
		defer close(done)
		var debounce <-chan time.Time
		for {
			select {
			case <-quit:
				return
			case <-hup:
				last = hashFile(path)
				send("SIGHUP")
			case ev, ok := <-events:
				if !ok {
					events = nil
					continue
				}
				_ = ev // any change in the directory may be ours (symlink swaps rename other names)
				debounce = time.After(reloadDebounce)
			case err, ok := <-errs:
				if !ok {
					errs = nil
					continue
				}
				log.Warn("configuration watch error", "err", err)
			case <-debounce:
				debounce = nil
				if h := hashFile(path); h != last {
					last = h
					send("file changed")
				}
			}
		}
	}()
	return out, func() {
		signal.Stop(hup)
		close(quit)
		<-done
		if w != nil {
			w.Close()
		}
	}
}

func hashFile(path string) [32]byte {
	if path == "" {
		return [32]byte{}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return [32]byte{} // unreadable: differs from any real content
	}
	return sha256.Sum256(b)
}
