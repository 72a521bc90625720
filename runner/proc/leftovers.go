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
	// recorded, and for writing by a sweep while it lists this process's
	// children, so that a sweep never mistakes a process just started
	// for an orphan.
	starting sync.RWMutex

	mu      sync.Mutex
	started map[int]*exec.Cmd
	// stopping holds the sessions whose leftovers are being stopped, by
	// the one leftoverStop that owns each.
	stopping map[int]bool
	// orphans are the orphans found in sessions nobody owns (they called
	// setsid): when each gets SIGKILL, and the stop that saw it first
	// and waits for it.
	orphans map[int]*orphan
}

type orphan struct {
	killAt  time.Time
	claimer *sweep
}

func startTracked(cmd *exec.Cmd) error {
	tracker.starting.RLock()
	defer tracker.starting.RUnlock()
	if err := cmd.Start(); err != nil {
		return err
	}
	tracker.mu.Lock()
	if tracker.started == nil {
		tracker.started = map[int]*exec.Cmd{}
	}
	tracker.started[cmd.Process.Pid] = cmd
	tracker.mu.Unlock()
	return nil
}

// untrack forgets cmd once it is reaped; its pid may already be another's.
func untrack(cmd *exec.Cmd) {
	tracker.mu.Lock()
	if tracker.started[cmd.Process.Pid] == cmd {
		delete(tracker.started, cmd.Process.Pid)
	}
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
	group                bool
}

// sweep is one leftoverStop's part in sweeping for orphans.
type sweep struct {
	session int
	sig     syscall.Signal
	grace   time.Duration
	// seen maps each orphan it waits for to whether it had left the
	// process group.
	seen map[int]bool
}

// beginStopLeftovers signals the group of the session's leader, which
// has just been reaped; finish does the rest.
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
	return s
}

// finish returns once every leftover is gone, or a grace after SIGKILL.
// It ends only after a sweep that found nothing following one in which
// the group was already empty: a descendant comes to this process only
// when its parent has died, which may be the last thing the previous
// sweep saw.
func (s *leftoverStop) finish() Leftovers {
	l := Leftovers{Group: s.group}
	quiet := 0
	for pause := time.Millisecond; quiet < 2; pause = min(2*pause, 50*time.Millisecond) {
		groupLeft := s.group && groupAlive(s.sweep.session)
		if s.sweep.sig == syscall.SIGTERM && time.Now().After(s.termUntil) {
			s.sweep.sig = syscall.SIGKILL
			if groupLeft {
				_ = syscall.Kill(-s.sweep.session, s.sweep.sig)
			}
		}
		if alive := sweepOrphans(&s.sweep); alive > 0 || groupLeft {
			quiet = 0
		} else {
			quiet++
			continue
		}
		if time.Now().After(s.killUntil) {
			l.Unstoppable = true
			break
		}
		time.Sleep(pause)
	}
	tracker.mu.Lock()
	delete(tracker.stopping, s.sweep.session)
	for pid, o := range tracker.orphans {
		if o.claimer == &s.sweep {
			o.claimer = nil
			tracker.orphans[pid] = o
		}
	}
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
