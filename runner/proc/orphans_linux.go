package proc

import (
	"bytes"
	"os"
	"path/filepath"
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
		select {
		case <-tracker.wake:
		case <-t.C:
		}
		tracker.mu.Lock()
		tracker.sweepsBegun++
		tracker.mu.Unlock()
		busy := sweep(own)
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

// found is a child of this process that proc did not start.
type found struct{ pid, session, pgrp int }

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
func sweep(own int) (busy bool) {
	// A child that died may have had children come to this process after
	// the list was read, and one just killed will have: list again until
	// nothing died and nothing was killed, so that a chain of orphans
	// goes in one sweep.
	for pass := 0; ; pass++ {
		listed, reaped := list(own)
		busy, killed := classify(listed)
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
// returns the live ones outside its own session.
func list(own int) (listed []found, reaped bool) {
	for _, pid := range children() {
		session, pgrp, zombie, ok := readStat(pid)
		switch {
		case !ok || session == own:
		case zombie:
			if reapable(pid, session) {
				var ws unix.WaitStatus
				if got, _ := unix.Wait4(pid, &ws, unix.WNOHANG, nil); got == pid {
					reaped = true
				}
			}
		default:
			listed = append(listed, found{pid, session, pgrp})
		}
	}
	return listed, reaped
}

// classify signals the orphans among listed and counts them for the
// stops waiting; killed says it sent an orphan SIGKILL.
func classify(listed []found) (busy, killed bool) {
	now := time.Now()
	tracker.mu.Lock()
	defer tracker.mu.Unlock()
	for _, s := range tracker.stopping {
		s.alive = 0
	}
	live := map[int]bool{}
	for _, f := range listed {
		_, startedHere := tracker.started[f.pid]
		_, leaderRunning := tracker.started[f.session]
		// A child alone in a session of its own may be a start not yet
		// recorded.
		maybeStarting := tracker.starting > 0 && f.session == f.pid
		if startedHere || leaderRunning || maybeStarting {
			continue
		}
		live[f.pid] = true
		if s, ok := tracker.stopping[f.session]; ok {
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
		o, known := tracker.orphans[f.pid]
		if !known {
			o = &orphan{seen: now, killAt: now.Add(DefaultKillGrace)}
			if now.Sub(tracker.lastKill) < DefaultKillGrace {
				o.killAt = now
			}
			if tracker.orphans == nil {
				tracker.orphans = map[int]*orphan{}
			}
			tracker.orphans[f.pid] = o
		}
		// The stops begun before it turned up wait for it, and one that
		// is killing kills it.
		for _, s := range tracker.stopping {
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
				o.killed, killed = true, true
			}
			_ = syscall.Kill(f.pid, syscall.SIGKILL)
			tracker.lastKill = now
		case !known:
			_ = syscall.Kill(f.pid, syscall.SIGTERM)
		}
	}
	for pid := range tracker.orphans {
		if !live[pid] {
			delete(tracker.orphans, pid)
		}
	}
	return len(tracker.orphans) > 0 || len(tracker.stopping) > 0, killed
}

// reapable says a dead child is not one of proc's own, which os/exec
// reaps, nor maybe a start not yet recorded: one that died at once.
func reapable(pid, session int) bool {
	tracker.mu.Lock()
	defer tracker.mu.Unlock()
	_, startedHere := tracker.started[pid]
	return !startedHere && !(tracker.starting > 0 && session == pid)
}

// childrenFiles says whether the kernel lists a thread's children in
// /proc/self/task/*/children; without it /proc is scanned.
var childrenFiles = sync.OnceValue(func() bool {
	_, err := os.Stat(filepath.Join("/proc/self/task", strconv.Itoa(os.Getpid()), "children"))
	return err == nil
})

// children lists this process's children.
func children() []int {
	if !childrenFiles() {
		return scanChildren()
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil
	}
	var pids []int
	for _, task := range tasks {
		// A thread that just ended has no file any more; it has no
		// children either.
		b, _ := os.ReadFile(filepath.Join("/proc/self/task", task.Name(), "children"))
		for _, f := range bytes.Fields(b) {
			if pid, err := strconv.Atoi(string(f)); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	return pids
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
