package proc

import (
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// tracker knows the processes this package started and has not yet
// reaped, and the sessions whose leftovers are being stopped. Each process
// leads a session of its own, so tracker also knows which sessions are
// still led by a running process; the sweeper leaves those alone. The
// kernel's subreaper setting is per process, and so is this.
var tracker registry

type registry struct {
	mu   sync.Mutex
	cond *sync.Cond // signalled when a sweep completes

	started map[int]*exec.Cmd
	// startsBegun numbers the starts; inflight holds the numbers of those
	// between the fork and their being recorded in started. A child in a
	// session of its own that is not recorded may be one of them: unsure
	// holds such children, with the number of the last start begun when
	// each was first seen. Once every start up to that number is
	// recorded, the child is not one of them.
	startsBegun uint64
	inflight    map[uint64]bool
	unsure      map[int]uint64
	stopping    map[int]*stopState // by session
	// orphans are the processes found in sessions nobody owns (they
	// called setsid) and not yet reaped.
	orphans map[int]*orphan
	// lastKill is when the sweeper last had to SIGKILL such an orphan:
	// orphans that turn up soon after are its descendants, and get no
	// grace of their own.
	lastKill time.Time

	sweepsBegun, sweepsDone uint64
	wake                    chan struct{}
}

// stopState is what the sweeper does, and found, for a session being
// stopped.
type stopState struct {
	sig   syscall.Signal
	since time.Time
	// signalled maps each orphan of the session to the signal it got.
	signalled map[int]syscall.Signal
	// escaped are orphans of the session that had left its group.
	escaped map[int]bool
	// alive counts, after each sweep, the session's orphans alive and
	// the unowned orphans first seen since the stop began.
	alive int
	// unowned are those unowned orphans.
	unowned map[int]bool
}

type orphan struct {
	seen   time.Time
	killAt time.Time
	killed bool // it has had SIGKILL
}

func init() { tracker.cond = sync.NewCond(&tracker.mu) }

func startTracked(cmd *exec.Cmd) error {
	tracker.mu.Lock()
	tracker.startsBegun++
	n := tracker.startsBegun
	if tracker.inflight == nil {
		tracker.inflight = map[uint64]bool{}
	}
	tracker.inflight[n] = true
	tracker.mu.Unlock()
	err := cmd.Start()
	tracker.mu.Lock()
	defer tracker.mu.Unlock()
	delete(tracker.inflight, n)
	if err != nil {
		return err
	}
	if tracker.started == nil {
		tracker.started = map[int]*exec.Cmd{}
	}
	tracker.started[cmd.Process.Pid] = cmd
	return nil
}

// maybeStarting says whether a child not recorded in started, alone in a
// session of its own, may be a start not yet recorded. Call it with
// r.mu held.
func (r *registry) maybeStarting(pid, session int) bool {
	if pid != session {
		delete(r.unsure, pid)
		return false
	}
	seen, ok := r.unsure[pid]
	if !ok {
		if len(r.inflight) == 0 {
			return false
		}
		seen = r.startsBegun
		if r.unsure == nil {
			r.unsure = map[int]uint64{}
		}
		r.unsure[pid] = seen
	}
	for n := range r.inflight {
		if n <= seen {
			return true
		}
	}
	delete(r.unsure, pid)
	return false
}

// untrack forgets cmd once it is reaped (its pid may already be
// another's) and, unless leave, starts stopping what its session left:
// in one step, so that no sweep in between takes the session's orphans
// for nobody's.
func untrack(cmd *exec.Cmd, immediate, leave bool) *stopState {
	pid := cmd.Process.Pid
	tracker.mu.Lock()
	defer tracker.mu.Unlock()
	if tracker.started[pid] == cmd {
		delete(tracker.started, pid)
	}
	if leave {
		return nil
	}
	s := &stopState{sig: syscall.SIGTERM, since: time.Now(), signalled: map[int]syscall.Signal{}, escaped: map[int]bool{}, unowned: map[int]bool{}}
	if immediate {
		s.sig = syscall.SIGKILL
	}
	if tracker.stopping == nil {
		tracker.stopping = map[int]*stopState{}
	}
	tracker.stopping[pid] = s
	return s
}

// stopLeftovers stops what the leader of session left running: the
// members of its process group and, as the sweeper finds them, its other
// descendants (Linux, after BecomeSubreaper). They get SIGTERM (SIGKILL
// when the stop was immediate), and, still there after grace, SIGKILL.
// It returns once they are gone, or a grace after SIGKILL.
func stopLeftovers(session int, s *stopState, grace time.Duration) Leftovers {
	l := Leftovers{Group: syscall.Kill(-session, s.sig) == nil}
	termUntil := s.since.Add(grace)
	killUntil := termUntil.Add(grace)
	// Once the group is seen empty its id is free, and may be a new
	// group's: it is not looked at again.
	groupLeft := l.Group
	// The kernel's list of children may miss one that is changing
	// parent as it is read, so a stop ends after two sweeps that found
	// nothing.
	quiet := 0
	for pause := time.Millisecond; ; pause = min(2*pause, 50*time.Millisecond) {
		alive := awaitSweep(s)
		groupLeft = groupLeft && groupAlive(session)
		if alive == 0 && !groupLeft {
			if quiet++; quiet == 2 {
				break
			}
			continue
		}
		quiet = 0
		if time.Now().After(killUntil) {
			l.Unstoppable = true
			break
		}
		time.Sleep(pause)
		if time.Now().After(termUntil) && setKill(s) && groupLeft {
			_ = syscall.Kill(-session, syscall.SIGKILL)
		}
	}
	tracker.mu.Lock()
	// A new process may have the leader's pid, and a stop of its own.
	if tracker.stopping[session] == s {
		delete(tracker.stopping, session)
	}
	l.Escaped, l.Orphans = len(s.escaped), len(s.unowned)
	tracker.mu.Unlock()
	return l
}

// setKill moves a stop to SIGKILL; it reports whether it was not yet.
func setKill(s *stopState) bool {
	tracker.mu.Lock()
	defer tracker.mu.Unlock()
	if s.sig == syscall.SIGKILL {
		return false
	}
	s.sig = syscall.SIGKILL
	return true
}

// awaitSweep asks the sweeper for a sweep, waits for one that began
// after the request, and returns how many orphans s waits for are alive.
// Without the sweeper (no subreaper) there are none it can see.
func awaitSweep(s *stopState) int {
	if !subreaper.Load() {
		return 0
	}
	tracker.mu.Lock()
	defer tracker.mu.Unlock()
	target := tracker.sweepsBegun + 1
	select {
	case tracker.wake <- struct{}{}:
	default:
	}
	for tracker.sweepsDone < target {
		tracker.cond.Wait()
	}
	return s.alive
}

// Sweep waits for a sweep of this process's children for orphans (see
// BecomeSubreaper); for tests, and for a program that wants one now.
func Sweep() {
	awaitSweep(&stopState{})
}

// groupAlive reports whether process group pgid has members. The group
// may outlive its leader.
func groupAlive(pgid int) bool {
	return syscall.Kill(-pgid, 0) == nil
}
