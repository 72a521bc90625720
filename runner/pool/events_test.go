package pool_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	wp "github.com/agent-host/agent-host/protocol/worker"
	"github.com/agent-host/agent-host/runner"
	"github.com/agent-host/agent-host/runner/pool"
	"github.com/agent-host/agent-host/runner/runnertest"
)

// workerEvents records what a pool reports of its workers.
type workerEvents struct {
	mu  sync.Mutex
	all []runner.WorkerEvent
}

func (e *workerEvents) add(ev runner.WorkerEvent) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.all = append(e.all, ev)
}

func (e *workerEvents) list() []runner.WorkerEvent {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.all)
}

// find returns the events of kind about pid (any pid when 0).
func (e *workerEvents) find(kind string, pid int) []runner.WorkerEvent {
	var out []runner.WorkerEvent
	for _, ev := range e.list() {
		if ev.Kind == kind && (pid == 0 || ev.PID == pid) {
			out = append(out, ev)
		}
	}
	return out
}

func eventPool(t *testing.T, cfg pool.Config) (*pool.Pool, *workerEvents) {
	t.Helper()
	events := &workerEvents{}
	return runnertest.NewPool(t, cfg, nil, patience, pool.WithWorkerEvents(events.add)), events
}

// TestWorkerEvents: each worker's start, recycling and exit is reported
// once, with why it ended, in that order.
func TestWorkerEvents(t *testing.T) {
	exe := agents[0].exe // the sdk-go agent

	t.Run("recycled then stopped", func(t *testing.T) {
		p, events := eventPool(t, pool.Config{Executable: exe, MaxWorkers: 1, MaxRequests: 2})
		first := runnertest.PIDOf(t, p, patience, "echo", `{}`)
		runnertest.PIDOf(t, p, patience, "echo", `{}`)
		runnertest.WaitFor(t, "the first worker to exit", patience, func() bool { return len(events.find(runner.WorkerExited, first)) == 1 })
		second := runnertest.PIDOf(t, p, patience, "echo", `{}`)
		ctx, cancel := context.WithTimeout(t.Context(), patience)
		defer cancel()
		if err := p.CloseFor(ctx, wp.ReasonReload); err != nil {
			t.Fatal(err)
		}

		var got []string
		for _, ev := range events.list() {
			got = append(got, ev.Kind+"/"+ev.Reason)
			if ev.Agent != "pooltest" || ev.PID == 0 {
				t.Errorf("event %+v does not name the agent and the process", ev)
			}
		}
		want := []string{"started/", "recycled/max_requests", "exited/recycle", "started/", "exited/reload"}
		if !slices.Equal(got, want) {
			t.Fatalf("events %v, want %v", got, want)
		}
		start := events.find(runner.WorkerStarted, first)[0]
		if start.SDK == "" || start.Protocol != wp.V1 || start.Concurrency != 4 {
			t.Errorf("started event %+v does not carry the handshake's sdk, protocol and concurrency", start)
		}
		if ex := events.find(runner.WorkerExited, first)[0]; ex.Served != 2 || ex.Uptime <= 0 || ex.Detail != "exit status 0" {
			t.Errorf("exit of the first worker %+v, want 2 served, an uptime and exit status 0", ex)
		}
		if ex := events.find(runner.WorkerExited, second)[0]; ex.Served != 1 || ex.Worker != 1 {
			t.Errorf("exit of the second worker %+v, want worker 1 with 1 served", ex)
		}
	})

	t.Run("crashed", func(t *testing.T) {
		p, events := eventPool(t, pool.Config{Executable: exe, MaxWorkers: 1})
		pid := runnertest.PIDOf(t, p, patience, "echo", `{}`)
		_, _ = runnertest.Run(t, p, patience, "crash", `{"message":"bye"}`)
		runnertest.WaitFor(t, "the crash to be reported", patience, func() bool { return len(events.find(runner.WorkerExited, pid)) == 1 })
		if ev := events.find(runner.WorkerExited, pid)[0]; ev.Reason != runner.ExitCrashed || ev.Detail != "exit status 3" {
			t.Errorf("crash reported as %+v", ev)
		}
	})

	t.Run("killed", func(t *testing.T) {
		p, events := eventPool(t, pool.Config{Executable: exe, MaxWorkers: 1, CancelGrace: 100 * time.Millisecond})
		pid := runnertest.PIDOf(t, p, patience, "echo", `{}`)
		_, _ = runnertest.Run(t, p, 200*time.Millisecond, "hang", `{}`)
		runnertest.WaitFor(t, "the kill to be reported", patience, func() bool { return len(events.find(runner.WorkerExited, pid)) == 1 })
		ev := events.find(runner.WorkerExited, pid)[0]
		if ev.Reason != runner.ExitKilled || !strings.Contains(ev.Detail, "did not answer a cancelled request") || !strings.Contains(ev.Detail, "killed by signal") {
			t.Errorf("kill reported as %+v", ev)
		}
	})

	t.Run("start failed", func(t *testing.T) {
		p, events := eventPool(t, pool.Config{Executable: rawAgent(t, "refuse")})
		_, _ = runnertest.Run(t, p, patience, "echo", `{}`)
		failed := events.find(runner.WorkerExited, 0)
		if len(failed) != 1 || failed[0].Reason != runner.ExitStartFailed || !strings.Contains(failed[0].Detail, "speaks protocol versions [2]") {
			t.Fatalf("events %+v, want one start_failed with the refusal", events.list())
		}
		if n := len(events.find(runner.WorkerStarted, 0)); n != 0 {
			t.Errorf("%d started events for a worker that never became ready", n)
		}
	})
}
