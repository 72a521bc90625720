package proc

import (
	"syscall"
	"testing"
	"time"
)

// noSuchPid is above any pid_max, so signalling it does nothing.
const noSuchPid = 1 << 30

// The sweeper's decisions, made on a registry of their own with pids no
// process has, so that the real sweeper and real processes stay out of
// them.

// TestOrphanIsNotTakenForAStartForever: an orphan alone in a session of
// its own looks like a start not yet recorded only while the starts begun
// before it was seen are in flight; on a busy host there is always some
// start in flight, and the orphan must still be stopped.
func TestOrphanIsNotTakenForAStartForever(t *testing.T) {
	r := &registry{startsBegun: 1, inflight: map[uint64]bool{1: true}}
	orphan := []found{{pid: noSuchPid, session: noSuchPid, pgrp: noSuchPid}}
	now := time.Now()

	r.classify(orphan, now)
	if _, ok := r.orphans[noSuchPid]; ok {
		t.Fatal("a child seen while a start was in flight was taken for an orphan at once")
	}

	// That start is recorded, another begins.
	r.startsBegun, r.inflight = 2, map[uint64]bool{2: true}
	r.classify(orphan, now.Add(busySweep))
	if _, ok := r.orphans[noSuchPid]; !ok {
		t.Fatal("the orphan is still taken for a start after the starts it could be were recorded")
	}

	// Known, it stays an orphan however many starts are in flight, and
	// is killed after its grace.
	r.startsBegun, r.inflight = 3, map[uint64]bool{1: true, 3: true}
	r.classify(orphan, now.Add(busySweep+DefaultKillGrace))
	if o := r.orphans[noSuchPid]; o == nil || !o.killed {
		t.Fatalf("a known orphan was spared while starts were in flight: %+v", o)
	}
}

// TestUnsureSweepIsNotQuiet: a stop does not end on a sweep that saw a
// child it could not yet place.
func TestUnsureSweepIsNotQuiet(t *testing.T) {
	s := &stopState{sig: syscall.SIGTERM, since: time.Now(), signalled: map[int]syscall.Signal{}, escaped: map[int]bool{}, unowned: map[int]bool{}}
	r := &registry{startsBegun: 1, inflight: map[uint64]bool{1: true}, stopping: map[int]*stopState{7: s}}
	r.classify([]found{{pid: noSuchPid, session: noSuchPid, pgrp: noSuchPid}}, time.Now())
	if s.alive == 0 {
		t.Error("the stop was told nothing is alive while a child was unplaced")
	}
}

// TestNewProcessWithAStoppedLeadersPid: a process alone in a session
// numbered like one being stopped cannot be in that session, whose
// leader is gone; it is an orphan of nobody's, with a grace of its own.
func TestNewProcessWithAStoppedLeadersPid(t *testing.T) {
	s := &stopState{sig: syscall.SIGKILL, since: time.Now(), signalled: map[int]syscall.Signal{}, escaped: map[int]bool{}, unowned: map[int]bool{}}
	r := &registry{stopping: map[int]*stopState{noSuchPid: s}}
	r.classify([]found{{pid: noSuchPid, session: noSuchPid, pgrp: noSuchPid}}, s.since.Add(-time.Second))
	if _, ok := s.signalled[noSuchPid]; ok {
		t.Error("it was signalled as a member of the stopped session")
	}
	if _, ok := r.orphans[noSuchPid]; !ok {
		t.Error("it was not taken for an orphan")
	}
}

// TestUnkillableOrphanKeepsOthersGrace: an orphan that survives SIGKILL
// (stuck in the kernel) is killed again at every sweep, but only its
// first kill makes orphans that turn up soon after lose their grace.
func TestUnkillableOrphanKeepsOthersGrace(t *testing.T) {
	r := &registry{}
	stuck := found{pid: noSuchPid, session: noSuchPid + 1, pgrp: noSuchPid + 1}
	start := time.Now()
	r.classify([]found{stuck}, start)
	r.classify([]found{stuck}, start.Add(DefaultKillGrace)) // killed
	later := start.Add(10 * DefaultKillGrace)
	r.classify([]found{stuck}, later) // killed again
	if !r.orphans[noSuchPid].killed {
		t.Fatal("the orphan was not killed after its grace")
	}

	fresh := found{pid: noSuchPid + 2, session: noSuchPid + 3, pgrp: noSuchPid + 3}
	r.classify([]found{stuck, fresh}, later.Add(busySweep))
	if o := r.orphans[fresh.pid]; o == nil || !o.killAt.After(later.Add(busySweep)) {
		t.Errorf("an orphan seen long after the first kill lost its grace: %+v", o)
	}
}

// TestDeadChildIsReapedOnABusyHost: a child that died at once, alone in
// a session of its own, may be a start not yet recorded, so it is not
// reaped while the starts begun before it was first seen are in flight.
// On a busy host some start is always in flight; once those are
// recorded it must become reapable, however many began since.
func TestDeadChildIsReapedOnABusyHost(t *testing.T) {
	r := &registry{startsBegun: 1, inflight: map[uint64]bool{1: true}}
	dead := found{pid: noSuchPid, session: noSuchPid, pgrp: noSuchPid, zombie: true}
	if !r.maybeStarting(dead.pid, dead.session) {
		t.Fatal("a dead child seen while a start was in flight was taken for reapable")
	}
	r.classify([]found{dead}, time.Now())

	r.startsBegun, r.inflight = 2, map[uint64]bool{2: true}
	if r.maybeStarting(dead.pid, dead.session) {
		t.Error("the dead child is still taken for a start after the start it could be was recorded")
	}
}
