package proc

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// subreaper says BecomeSubreaper succeeded, so orphans come to us and the
// sweeper runs.
var (
	subreaper atomic.Bool
	startOnce sync.Once
)

// Sweep intervals: while there are orphans to watch or stops waiting,
// and otherwise.
const (
	busySweep = 50 * time.Millisecond
	idleSweep = 2 * time.Second
)

// BecomeSubreaper makes this process the child subreaper of everything it
// starts (Linux prctl PR_SET_CHILD_SUBREAPER): a descendant whose parent
// dies is re-parented to this process instead of init, even one that left
// its session, so that proc can stop what a supervised process left
// behind. It starts the sweeper, one goroutine for the life of the
// program that lists this process's children after every supervised
// process's exit, and now and then: it reaps the dead, and stops orphans
// (see sweep). Call it once, early, from the program that owns the
// processes.
//
// From then on, every process this program starts in a session of its
// own must be started through proc: a child in a session proc does not
// know is taken for an orphan and stopped. Children in this program's
// own session are never touched, not even reaped.
func BecomeSubreaper() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return err
	}
	startOnce.Do(func() {
		tracker.mu.Lock()
		tracker.wake = make(chan struct{}, 1)
		tracker.mu.Unlock()
		subreaper.Store(true)
		go sweeper()
	})
	return nil
}

func sweeper() {
	own, err := unix.Getsid(0)
	if err != nil {
		own = -1
	}
	t := time.NewTimer(idleSweep)
	for {
		everyThread := false
		select {
		case <-tracker.wake:
		case <-t.C:
			everyThread = true
		}
		tracker.mu.Lock()
		tracker.sweepsBegun++
		tracker.mu.Unlock()
		busy := sweep(own, everyThread)
		tracker.mu.Lock()
		tracker.sweepsDone++
		tracker.cond.Broadcast()
		tracker.mu.Unlock()
		t.Stop()
		if busy {
			t.Reset(busySweep)
		} else {
			t.Reset(idleSweep)
		}
	}
}

// found is a child of this process that proc did not start; a zombie is
// one that is dead but could not be reaped yet.
type found struct {
	pid, session, pgrp int
	zombie             bool
}

// sweep lists this process's children, reaps the dead ones and signals
// the live orphans among them. A child proc did not start is an orphan
// of a supervised process unless it is in this process's own session
// (another part of the program started it), or in a session led by a
// process proc started and has not reaped (it belongs to a running
// process). An orphan in a session being stopped gets that stop's signal.
// An orphan in a session nobody owns, one that called setsid, gets
// SIGTERM when first seen and SIGKILL a grace later; one seen soon after
// another had to be killed gets SIGKILL at once, being most likely its
// descendant. The sweeper alone reaps and signals orphans, so a pid it
// signals cannot have been reused. It reports whether there is anything
// to watch.
func sweep(own int, everyThread bool) (busy bool) {
	// A child that died may have had children come to this process after
	// the list was read, and one just killed will have: list again until
	// nothing died and nothing was killed, so that a chain of orphans
	// goes in one sweep.
	for pass := 0; ; pass++ {
		listed, reaped := list(own, everyThread)
		busy, killed := tracker.classify(listed, time.Now())
		if !reaped && !killed || pass == maxPasses {
			return busy
		}
		if killed {
			time.Sleep(time.Millisecond)
		}
	}
}

// maxPasses bounds the passes of one sweep.
const maxPasses = 64

// list reads this process's children, reaps the dead ones it may and
// returns the others outside its own session.
func list(own int, everyThread bool) (listed []found, reaped bool) {
	for _, pid := range untracked(children(everyThread)) {
		session, pgrp, zombie, ok := readStat(pid)
		switch {
		case !ok || session == own:
		case zombie:
			if reapable(pid, session) {
				var ws unix.WaitStatus
				if got, _ := unix.Wait4(pid, &ws, unix.WNOHANG, nil); got == pid {
					reaped = true
					continue
				}
			}
			listed = append(listed, found{pid, session, pgrp, true})
		default:
			listed = append(listed, found{pid, session, pgrp, false})
		}
	}
	return listed, reaped
}

// classify signals the orphans among listed and counts them for the
// stops waiting; killed says it sent an orphan SIGKILL.
func (r *registry) classify(listed []found, now time.Time) (busy, killed bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.stopping {
		s.alive = 0
	}
	live := map[int]bool{}
	// A dead child not yet known not to be a start keeps its place in
	// unsure, or it would be taken for a new one at every sweep and, on a
	// busy host, never reaped.
	present := map[int]bool{}
	unsure, dead := false, false
	for _, f := range listed {
		present[f.pid] = true
		if f.zombie {
			dead = true
			continue
		}
		_, startedHere := r.started[f.pid]
		_, leaderRunning := r.started[f.session]
		if startedHere || leaderRunning {
			continue
		}
		live[f.pid] = true
		if _, known := r.orphans[f.pid]; !known && r.maybeStarting(f.pid, f.session) {
			unsure = true
			continue
		}
		// One alone in a session numbered like a stopped one is not its
		// leader, who is gone: it is nobody's.
		if s, ok := r.stopping[f.session]; ok && f.pid != f.session {
			if s.signalled[f.pid] != s.sig {
				_ = syscall.Kill(f.pid, s.sig)
				s.signalled[f.pid] = s.sig
				killed = killed || s.sig == syscall.SIGKILL
			}
			if f.pgrp != f.session {
				s.escaped[f.pid] = true
			}
			s.alive++
			continue
		}
		o, known := r.orphans[f.pid]
		if !known {
			o = &orphan{seen: now, killAt: now.Add(DefaultKillGrace)}
			if now.Sub(r.lastKill) < DefaultKillGrace {
				o.killAt = now
			}
			if r.orphans == nil {
				r.orphans = map[int]*orphan{}
			}
			r.orphans[f.pid] = o
		}
		// The stops begun before it turned up wait for it, and one that
		// is killing kills it.
		for _, s := range r.stopping {
			if !o.seen.Before(s.since) {
				s.unowned[f.pid] = true
			}
			if s.unowned[f.pid] {
				s.alive++
				if s.sig == syscall.SIGKILL && o.killAt.After(now) {
					o.killAt = now
				}
			}
		}
		switch {
		case !now.Before(o.killAt):
			if !o.killed {
				// One that outlives SIGKILL (stuck in the kernel) does
				// not make every later orphan lose its grace.
				o.killed, killed = true, true
				r.lastKill = now
			}
			_ = syscall.Kill(f.pid, syscall.SIGKILL)
		case !known:
			_ = syscall.Kill(f.pid, syscall.SIGTERM)
		}
	}
	for pid := range r.orphans {
		if !live[pid] {
			delete(r.orphans, pid)
		}
	}
	for pid := range r.unsure {
		if !present[pid] {
			delete(r.unsure, pid)
		}
	}
	// A child not yet known to be a start may be an orphan a stop waits
	// for: the stops do not take this sweep for a quiet one.
	if unsure {
		for _, s := range r.stopping {
			s.alive++
		}
	}
	return len(r.orphans) > 0 || len(r.stopping) > 0 || unsure || dead, killed
}

// untracked drops from pids the processes proc started and has not
// reaped, which the sweeper need not look at.
func untracked(pids []int) []int {
	tracker.mu.Lock()
	defer tracker.mu.Unlock()
	return slices.DeleteFunc(pids, func(pid int) bool {
		_, startedHere := tracker.started[pid]
		return startedHere
	})
}

// reapable says a dead child is not one of proc's own, which os/exec
// reaps, nor maybe a start not yet recorded: one that died at once.
func reapable(pid, session int) bool {
	tracker.mu.Lock()
	defer tracker.mu.Unlock()
	_, startedHere := tracker.started[pid]
	return !startedHere && !tracker.maybeStarting(pid, session)
}

// childrenFiles says whether the kernel lists a thread's children in
// /proc/self/task/*/children; without it /proc is scanned.
var childrenFiles = sync.OnceValue(func() bool {
	_, err := os.Stat(filepath.Join("/proc/self/task", strconv.Itoa(os.Getpid()), "children"))
	return err == nil
})

// children lists this process's children: those of its main thread, or
// with everyThread those of every thread. The kernel gives a process's
// orphans to the first live thread of their subreaper, the main thread,
// which in Go lives as long as the program; only the children a thread
// starts itself are that thread's, and proc tracks those. So the sweeps
// run at every exit read one file, and the timed ones, now and then, read
// every thread's in case a kernel does otherwise.
func children(everyThread bool) []int {
	if !childrenFiles() {
		return scanChildren()
	}
	tasks := []string{strconv.Itoa(os.Getpid())}
	if everyThread {
		entries, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return nil
		}
		tasks = tasks[:0]
		for _, e := range entries {
			tasks = append(tasks, e.Name())
		}
	}
	var pids []int
	for _, task := range tasks {
		// A thread that just ended has no file any more; it has no
		// children either.
		b := readChildren(filepath.Join("/proc/self/task", task, "children"))
		for _, f := range bytes.Fields(b) {
			if pid, err := strconv.Atoi(string(f)); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	slices.Sort(pids)
	return slices.Compact(pids)
}

// childrenBuf is the sweeper's buffer for children files.
var childrenBuf = make([]byte, 0, 16<<10)

// readChildren reads a children file to its end in one open. The kernel
// returns at most a page per read, and each read lists the children from
// the position the last one reached: one that exited in between may make
// the list skip another, which the next sweep finds.
func readChildren(path string) []byte {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	b := childrenBuf[:0]
	for {
		if len(b) == cap(b) {
			b = slices.Grow(b, cap(b))
		}
		n, err := f.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err != nil || n == 0 {
			childrenBuf = b
			return b
		}
	}
}

func scanChildren() []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, ok := readPPid(pid); ok && ppid == self {
			pids = append(pids, pid)
		}
	}
	return pids
}

// statFields returns the fields of /proc/<pid>/stat after the command
// name, which is in parentheses and may hold anything: state, ppid,
// pgrp, session, ...
func statFields(pid int) ([][]byte, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, false
	}
	f := bytes.Fields(b[i+1:])
	return f, len(f) >= 4
}

func readStat(pid int) (session, pgrp int, zombie, ok bool) {
	f, ok := statFields(pid)
	if !ok {
		return 0, 0, false, false
	}
	pgrp, err1 := strconv.Atoi(string(f[2]))
	session, err2 := strconv.Atoi(string(f[3]))
	return session, pgrp, string(f[0]) == "Z", err1 == nil && err2 == nil
}

func readPPid(pid int) (int, bool) {
	f, ok := statFields(pid)
	if !ok {
		return 0, false
	}
	ppid, err := strconv.Atoi(string(f[1]))
	return ppid, err == nil
}
