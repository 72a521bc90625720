package runner

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/fsnotify/fsnotify"
)

// debounce gathers a burst of file-system events into one reload.
const debounce = 100 * time.Millisecond

// Watch keeps the catalog current until ctx ends, then returns nil. It
// watches the agent directories and each agent's own directory, reloads
// shortly after they change, and re-reads everything every Rescan in case
// an event was lost (or a missing directory appeared). A changed DDL is
// loaded once it has been unchanged for Settle.
//
// An agent is added when a new DDL appears, updated when its DDL's bytes,
// its DDL's path, or its executable's path or existence change, and
// removed when its DDL goes away or stops being acceptable. A DDL that no
// longer parses keeps the previous version loaded. onChange, when not nil,
// receives each non-empty change after it is published, before any other
// change (Rescan's) can be; it runs on Watch's goroutine, one at a time,
// and may call Agents and Agent but not Rescan.
//
// Choria reloads only when metadata.version or the DDL's path changes,
// which misses edits made without a version bump; comparing the bytes
// catches them.
func (c *Catalog) Watch(ctx context.Context, onChange func(Change)) error {
	if !c.watching.CompareAndSwap(false, true) {
		return ErrCatalogWatching
	}
	defer c.watching.Store(false)

	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("runner: watching agent directories: %w", err)
	}
	defer w.Close()

	timer := time.NewTimer(0) // reload at once: things may have changed since Load
	defer timer.Stop()
	var due time.Time
	schedule := func(at time.Time) {
		if due.IsZero() || at.Before(due) {
			due = at
			timer.Reset(time.Until(at))
		}
	}
	due = time.Now()

	rescan := time.NewTicker(c.cfg.Rescan)
	defer rescan.Stop()

	for {
		select {
		case <-ctx.Done():
			return nil

		case ev, ok := <-w.Events:
			if !ok {
				return fmt.Errorf("runner: watching agent directories: %w", fsnotify.ErrClosed)
			}
			if ev.Op == fsnotify.Chmod {
				continue
			}
			schedule(time.Now().Add(debounce))

		case err, ok := <-w.Errors:
			if !ok {
				return fmt.Errorf("runner: watching agent directories: %w", fsnotify.ErrClosed)
			}
			// Usually an event-queue overflow: events were lost.
			c.log.Warn("file-system watcher error; re-reading agent directories", "error", err)
			schedule(time.Now().Add(debounce))

		case <-rescan.C:
			schedule(time.Now())

		case <-timer.C:
			due = time.Time{}
			res, err := c.reload(ctx, false, onChange)
			if err != nil {
				continue // ctx ended; the next loop returns
			}
			if c.syncWatches(w, res.watch) {
				// Files created in a directory before it was watched
				// sent no event: look once more.
				schedule(time.Now().Add(debounce))
			}
			if !res.recheck.IsZero() {
				schedule(res.recheck)
			}
		}
	}
}

// syncWatches makes the watcher follow exactly the given directories and
// reports whether it started watching any new one.
func (c *Catalog) syncWatches(w *fsnotify.Watcher, want []string) bool {
	have := w.WatchList()
	added := false
	for _, dir := range want {
		if slices.Contains(have, dir) {
			continue
		}
		if err := w.Add(dir); err != nil {
			c.log.Debug("could not watch directory; relying on the periodic rescan", "dir", dir, "error", err)
			continue
		}
		added = true
	}
	for _, dir := range have {
		if !slices.Contains(want, dir) {
			_ = w.Remove(dir) // it may be gone already
		}
	}
	return added
}
