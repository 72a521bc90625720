package policy

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// regoDebounce gathers a burst of events (an editor's save) into one scan.
const regoDebounce = 50 * time.Millisecond

// startWatch compiles the policies in Dir and starts watching it. The
// watcher only compiles changed files early and logs their errors at
// once; Authorize sees changes without it (rego_load.go).
func (r *Rego) startWatch() {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		r.log.Warn("cannot watch the Rego policy directory; changed policies are compiled by the next request that uses them",
			"dir", r.o.Dir, "error", err)
		r.scan()
		close(r.watchDone)
		return
	}
	// Watch first, then scan: a file written in between is seen by both.
	watched := r.syncWatch(w, "")
	if watched != r.o.Dir {
		r.log.Warn("the Rego policy directory does not exist: every request is denied until it does", "dir", r.o.Dir)
	}
	r.scan()
	go r.watch(w, watched)
}

// watch follows events on Dir until Close. While Dir is missing it
// watches the nearest existing ancestor, to notice Dir appear.
func (r *Rego) watch(w *fsnotify.Watcher, watched string) {
	defer close(r.watchDone)
	defer w.Close()

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	pending := false
	schedule := func() {
		if !pending {
			pending = true
			timer.Reset(regoDebounce)
		}
	}
	for {
		select {
		case <-r.closed:
			return
		case _, ok := <-w.Events:
			if !ok {
				return
			}
			// Any event: the files, Dir itself, or an ancestor
			// on the way to it. Scanning a small directory is
			// cheaper than telling them apart, and also catches
			// targets of symbolic links swapped underneath.
			schedule()
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			// Usually an overflow: events were lost.
			r.log.Warn("Rego policy watcher error; scanning the policy directory", "dir", r.o.Dir, "error", err)
			schedule()
		case <-timer.C:
			pending = false
			was := watched
			watched = r.syncWatch(w, watched)
			if watched == r.o.Dir && was != r.o.Dir {
				r.log.Info("the Rego policy directory exists now", "dir", r.o.Dir)
			}
			r.scan()
		}
	}
}

// syncWatch watches Dir, or its nearest existing ancestor while Dir is
// missing, in place of watched, and returns what it watches now.
func (r *Rego) syncWatch(w *fsnotify.Watcher, watched string) string {
	for {
		want := nearestDir(r.o.Dir)
		if want == watched {
			return watched
		}
		if err := w.Add(want); err != nil {
			r.log.Warn("cannot watch for the Rego policy directory", "dir", want, "error", err)
			return watched
		}
		if watched != "" {
			_ = w.Remove(watched) // it may be gone already
		}
		// Loop: a directory made before its parent was watched sent
		// no event.
		watched = want
	}
}

// nearestDir is dir, or its nearest ancestor that exists.
func nearestDir(dir string) string {
	for {
		if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return dir
		}
		dir = parent
	}
}

// scan brings every policy in Dir up to date, compiling the changed ones,
// and forgets the files that are gone. Test files (*_test.rego) are left
// to RunRegoTests, unless an agent's request asks for one.
func (r *Rego) scan() {
	entries, err := os.ReadDir(r.o.Dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		r.log.Warn("cannot read the Rego policy directory", "dir", r.o.Dir, "error", err)
	}
	for _, de := range entries {
		name := de.Name()
		if !strings.HasSuffix(name, ".rego") || strings.HasSuffix(name, "_test.rego") {
			continue
		}
		file := filepath.Join(r.o.Dir, name)
		fi, err := os.Stat(file)
		if err != nil || fi.IsDir() {
			continue
		}
		if _, err := r.current(file, fi); err != nil {
			r.log.Warn("cannot read Rego policy", "policy", file, "error", err)
		}
	}
	r.files.Range(func(k, _ any) bool {
		file := k.(string)
		if _, err := os.Stat(file); errors.Is(err, fs.ErrNotExist) {
			r.files.Delete(file)
			r.log.Info("Rego policy removed", "policy", file)
		}
		return true
	})
}
