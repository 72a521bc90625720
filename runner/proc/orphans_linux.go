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
// are still alive. An orphan is a child proc did not start whose session
// is neither this process's own (another part of the program started it)
// nor one led by a process proc started and has not reaped.
//
// Orphans in s's session get s's signal, once, and SIGKILL whenever s
// sends it. Those in the session of another leftoverStop are left to it.
// The rest left every session proc knows (setsid): no one can tell whose
// they are, so every sweep counts them as alive, the first to see one
// sends SIGTERM, and one a grace later SIGKILL.
func sweepOrphans(s *sweep) (alive int) {
	if !subreaper.Load() {
		return 0
	}
	tracker.starting.Lock()
	defer tracker.starting.Unlock()
	own, err := unix.Getsid(0)
	if err != nil {
		return 0
	}
	now := time.Now()
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
		if session == s.session {
			if _, signalled := s.seen[pid]; !signalled || s.sig == syscall.SIGKILL {
				_ = syscall.Kill(pid, s.sig)
			}
			s.seen[pid] = pgrp != s.session
			alive++
			continue
		}
		if stoppedByOther(session) {
			continue
		}
		s.seen[pid] = true
		alive++
		killOrphan(pid, now, s.grace)
	}
	return alive
}

func stoppedByOther(session int) bool {
	tracker.mu.Lock()
	defer tracker.mu.Unlock()
	return tracker.stopping[session]
}

// killOrphan sends an orphan nobody owns SIGTERM the first time and
// SIGKILL once a grace has passed since.
func killOrphan(pid int, now time.Time, grace time.Duration) {
	tracker.mu.Lock()
	defer tracker.mu.Unlock()
	if tracker.killAt == nil {
		tracker.killAt = map[int]time.Time{}
	}
	at, known := tracker.killAt[pid]
	switch {
	case !known:
		tracker.killAt[pid] = now.Add(grace)
		_ = syscall.Kill(pid, syscall.SIGTERM)
	case now.After(at):
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

func forget(pid int) {
	tracker.mu.Lock()
	delete(tracker.killAt, pid)
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
