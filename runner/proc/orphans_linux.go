package proc

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// subreaper says BecomeSubreaper succeeded, so orphans come to us.
var subreaper atomic.Bool

// BecomeSubreaper makes this process the child subreaper of everything it
// starts (Linux prctl PR_SET_CHILD_SUBREAPER): a descendant whose parent
// dies is re-parented to this process instead of init, even one that left
// its session, so that proc can stop what a supervised process left
// behind. Call it once, early, from the program that owns the processes.
//
// From then on, every process this program starts in a session of its
// own must be started through proc: a child in a session proc does not
// know is taken for an orphan and stopped.
func BecomeSubreaper() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return err
	}
	subreaper.Store(true)
	return nil
}

// sweepOrphans signals this process's children that are orphans of
// supervised processes, reaps those already dead, and returns how many
// of those s waits for are alive. An orphan is a child proc did not start
// whose session is neither this process's own (another part of the
// program started it) nor one led by a process proc started and has not
// reaped. s may be nil: a sweep on behalf of nobody (Sweep).
//
// Orphans in s's session get s's signal, once, and SIGKILL whenever s
// sends it. Those in the session of another leftoverStop are left to it.
// The rest left every session proc knows (setsid): no one can tell whose
// they are. The first sweep to see one sends SIGTERM and waits for it;
// any sweep a grace later, or any in its SIGKILL phase, sends SIGKILL.
func sweepOrphans(s *sweep) (alive int) {
	if !subreaper.Load() {
		return 0
	}
	own, err := unix.Getsid(0)
	if err != nil {
		return 0
	}
	type found struct{ pid, session, pgrp int }
	var orphans []found
	tracker.starting.Lock()
	for _, pid := range children() {
		if tracked(pid) {
			continue
		}
		session, pgrp, zombie, ok := readStat(pid)
		if !ok || session == own || tracked(session) {
			continue
		}
		if zombie {
			var ws unix.WaitStatus
			if reaped, _ := unix.Wait4(pid, &ws, unix.WNOHANG, nil); reaped == pid {
				forget(pid)
			}
			continue
		}
		orphans = append(orphans, found{pid, session, pgrp})
	}
	tracker.starting.Unlock()

	now := time.Now()
	for _, o := range orphans {
		switch {
		case s != nil && o.session == s.session:
			if _, signalled := s.seen[o.pid]; !signalled || s.sig == syscall.SIGKILL {
				_ = syscall.Kill(o.pid, s.sig)
			}
			s.seen[o.pid] = o.pgrp != s.session
			alive++
		case stoppedByOther(o.session, s):
		case killOrphan(o.pid, now, s):
			s.seen[o.pid] = true
			alive++
		}
	}
	return alive
}

// Sweep stops orphans nobody else is stopping (see sweepOrphans), for a
// program that calls it now and then: an orphan that ignores SIGTERM gets
// SIGKILL from the first sweep a grace after it, even if no supervised
// process exits in the meantime.
func Sweep() { sweepOrphans(nil) }

func stoppedByOther(session int, s *sweep) bool {
	tracker.mu.Lock()
	defer tracker.mu.Unlock()
	return tracker.stopping[session] && (s == nil || session != s.session)
}

// killOrphan signals an orphan in a session nobody owns: SIGTERM the
// first time, SIGKILL once its grace has passed or when s is killing. It
// reports whether s claimed it, and so waits for it.
func killOrphan(pid int, now time.Time, s *sweep) (claimed bool) {
	tracker.mu.Lock()
	defer tracker.mu.Unlock()
	if tracker.orphans == nil {
		tracker.orphans = map[int]*orphan{}
	}
	o, known := tracker.orphans[pid]
	switch {
	case !known:
		grace := DefaultKillGrace
		if s != nil {
			grace = s.grace
		}
		o = &orphan{killAt: now.Add(grace), claimer: s}
		tracker.orphans[pid] = o
		sig := syscall.SIGTERM
		if s != nil && s.sig == syscall.SIGKILL {
			sig = syscall.SIGKILL
		}
		_ = syscall.Kill(pid, sig)
	case now.After(o.killAt) || s != nil && s.sig == syscall.SIGKILL:
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	return s != nil && o.claimer == s
}

func forget(pid int) {
	tracker.mu.Lock()
	delete(tracker.orphans, pid)
	tracker.mu.Unlock()
}

// children lists this process's children from /proc/self/task/*/children,
// or, where the kernel does not provide that file, by scanning /proc.
func children() []int {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil
	}
	var pids []int
	for _, task := range tasks {
		b, err := os.ReadFile(filepath.Join("/proc/self/task", task.Name(), "children"))
		if errors.Is(err, os.ErrNotExist) {
			return scanChildren()
		}
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
