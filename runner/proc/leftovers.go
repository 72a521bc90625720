package proc

import (
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// tracker knows the processes this package started and has not yet
// reaped. Each leads a session of its own, so it also knows which sessions
// are still led by a running process; a sweep for orphans leaves those
// alone. The kernel's subreaper setting is per process, and so is this.
var tracker struct {
	// starting is held for reading while a process starts and is
	// recorded, and for writing by a sweep, so that a sweep never mistakes
	// a process just started for an orphan.
	starting sync.RWMutex

	mu      sync.Mutex
	started map[int]struct{}
	// stopping holds the sessions whose leftovers are being stopped, by
	// the one leftoverStop that owns each.
	stopping map[int]bool
	// killAt is when an orphan in a session nobody owns, such as one that
	// called setsid, gets SIGKILL: a grace after its first SIGTERM.
	killAt map[int]time.Time
}

func startTracked(cmd *exec.Cmd) error {
	tracker.starting.RLock()
	defer tracker.starting.RUnlock()
	if err := cmd.Start(); err != nil {
		return err
	}
	tracker.mu.Lock()
	if tracker.started == nil {
		tracker.started = map[int]struct{}{}
	}
	tracker.started[cmd.Process.Pid] = struct{}{}
	tracker.mu.Unlock()
	return nil
}

func untrack(pid int) {
	tracker.mu.Lock()
	delete(tracker.started, pid)
	tracker.mu.Unlock()
}

func tracked(pid int) bool {
	tracker.mu.Lock()
	defer tracker.mu.Unlock()
	_, ok := tracker.started[pid]
	return ok
}

// leftoverStop stops what the leader of a session left running: the
// members of its process group and, where sweepOrphans can find them,
// descendants that left the group or the session. They get SIGTERM
// (SIGKILL when immediate) as soon as the leader has exited and, still
// there after grace, SIGKILL.
type leftoverStop struct {
	sweep                sweep
	termUntil, killUntil time.Time
	alive                int
	group                bool
}

// sweep is one leftoverStop's view of the orphans it has signalled.
type sweep struct {
	session int
	sig     syscall.Signal
	grace   time.Duration
	// seen maps each orphan signalled to whether it had left the group.
	seen map[int]bool
}

// beginStopLeftovers sends the first signals.
func beginStopLeftovers(session int, grace time.Duration, immediate bool) *leftoverStop {
	s := &leftoverStop{sweep: sweep{session: session, sig: syscall.SIGTERM, grace: grace, seen: map[int]bool{}}}
	if immediate {
		s.sweep.sig = syscall.SIGKILL
	}
	tracker.mu.Lock()
	if tracker.stopping == nil {
		tracker.stopping = map[int]bool{}
	}
	tracker.stopping[session] = true
	tracker.mu.Unlock()
	s.termUntil = time.Now().Add(grace)
	s.killUntil = s.termUntil.Add(grace)
	s.group = syscall.Kill(-session, s.sweep.sig) == nil
	s.alive = sweepOrphans(&s.sweep)
	return s
}

// finish returns once every leftover is gone, or a grace after SIGKILL.
func (s *leftoverStop) finish() Leftovers {
	l := Leftovers{Group: s.group}
	for pause := time.Millisecond; s.group && groupAlive(s.sweep.session) || s.alive > 0; pause = min(2*pause, 50*time.Millisecond) {
		if time.Now().After(s.killUntil) {
			l.Unstoppable = true
			break
		}
		time.Sleep(pause)
		if s.sweep.sig == syscall.SIGTERM && time.Now().After(s.termUntil) {
			s.sweep.sig = syscall.SIGKILL
			_ = syscall.Kill(-s.sweep.session, s.sweep.sig)
		}
		s.alive = sweepOrphans(&s.sweep)
	}
	tracker.mu.Lock()
	delete(tracker.stopping, s.sweep.session)
	tracker.mu.Unlock()
	for _, escaped := range s.sweep.seen {
		if escaped {
			l.Escaped++
		}
	}
	return l
}

// groupAlive reports whether process group pgid has members. The group
// may outlive its leader.
func groupAlive(pgid int) bool {
	return syscall.Kill(-pgid, 0) == nil
}
