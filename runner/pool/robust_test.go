package pool_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	wp "github.com/agent-host/agent-host/protocol/worker"
	"github.com/agent-host/agent-host/runner/pool"
	"github.com/agent-host/agent-host/runner/runnertest"
)

// A worker that stopped reading its protocol stream but lives on cannot
// be sent requests: it is stopped, and a request keeps its deadline.
func TestDeafWorkerIsStopped(t *testing.T) {
	p := newPool(t, pool.Config{Executable: rawAgent(t, "closein"), MaxWorkers: 1, RestartIntensity: 100}, nil)
	done := make(chan error, 1)
	go func() {
		_, err := runnertest.Run(t, p, 500*time.Millisecond, "echo", `{}`)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Error("a request to a worker that cannot read it succeeded")
		}
	case <-time.After(patience):
		t.Fatalf("a request with a 500 ms deadline had not returned after %s; stats %+v", patience, p.Stats())
	}
	if s := p.Stats(); s.Failures == 0 {
		t.Errorf("the deaf worker was not stopped as failed: %+v", s)
	}
}

// A worker that closed its end of fd 4 before the handshake but lives on
// fails the handshake within its timeout, and the pool tries again.
func TestMuteWorkerFailsTheHandshake(t *testing.T) {
	p := newPool(t, pool.Config{Executable: rawAgent(t, "closeout"), MaxWorkers: 1, HandshakeTimeout: 200 * time.Millisecond, RestartIntensity: 2}, nil)
	for range 3 {
		_, _ = runnertest.Run(t, p, 700*time.Millisecond, "echo", `{}`)
	}
	if !errors.Is(p.Failed(), pool.ErrFailed) {
		t.Errorf("two handshakes that cannot complete did not give the pool up: %v, %+v", p.Failed(), p.Stats())
	}
}

// Replies to requests never sent count as garbage: the worker is stopped
// after a few, and only those few are logged.
func TestRepliesNobodyAskedFor(t *testing.T) {
	logs := &runnertest.Logs{}
	p := newPool(t, pool.Config{Executable: rawAgent(t, "spamreply"), MaxWorkers: 1, RestartIntensity: 100}, logs)
	if _, err := runnertest.Run(t, p, patience, "echo", `{}`); err == nil || !strings.Contains(err.Error(), "answer nothing asked") {
		t.Errorf("the request of a worker flooding replies: %v, want it stopped", err)
	}
	n := 0
	for _, r := range logs.Records() {
		if strings.Contains(r.Message, "replied to a request it was not asked") {
			n++
		}
	}
	if n == 0 || n > 10 {
		t.Errorf("%d warnings for 5000 unasked replies, want at most 10", n)
	}
}

// A worker that dies right after its handshake is never handed a
// request as if ready (the host once crashed on it).
func TestWorkerDyingAfterReady(t *testing.T) {
	p := newPool(t, pool.Config{Executable: rawAgent(t, "readyexit"), MaxWorkers: 2, RestartIntensity: 1000, RestartBackoff: time.Millisecond}, nil)
	for range 5 {
		if _, err := runnertest.Run(t, p, 2*time.Second, "echo", `{}`); err == nil {
			t.Fatal("a worker that exited after its handshake answered")
		}
	}
}

// The worker's protocol streams, and the variables naming them, are not
// passed on to what its actions start: a child that is itself a worker
// would speak on them.
func TestWorkerStreamsStayWithTheWorker(t *testing.T) {
	p := newPool(t, pool.Config{Executable: agents[0].exe, MaxWorkers: 1}, nil)
	rep, err := runnertest.Run(t, p, patience, "spawn", `{}`)
	if err != nil {
		t.Fatal(err)
	}
	var d struct{ PID, Child int }
	if err := json.Unmarshal(rep.Data, &d); err != nil || d.Child == 0 {
		t.Fatalf("spawn: %s, %v", rep.Data, err)
	}
	for _, fd := range []int{wp.HostFD, wp.WorkerFD} {
		// The child may be loading a library on that number meanwhile.
		if target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", d.Child, fd)); err == nil && strings.HasPrefix(target, "pipe:") {
			t.Errorf("the action's child holds fd %d (%s)", fd, target)
		}
	}
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", d.Child))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(env), "AGENT_HOST_WORKER") {
		t.Errorf("the action's child has the worker's variables: %q", strings.ReplaceAll(string(env), "\x00", " "))
	}
}

// A request larger than the worker accepts fails alone: it is not sent,
// the worker and what it runs are unharmed, and the pool does not count
// it against the worker.
func TestRequestTooLargeFailsAlone(t *testing.T) {
	eachAgent(t, func(t *testing.T, exe string) {
		p := newPool(t, pool.Config{Executable: exe, MaxWorkers: 1, MaxDocumentBytes: 64 << 10, RestartIntensity: 2}, nil)
		pid := runnertest.PIDOf(t, p, patience, "echo", `{}`)
		var wg sync.WaitGroup
		var sleepErr error
		wg.Go(func() { _, sleepErr = runnertest.Run(t, p, patience, "sleep", `{"ms":500}`) })
		runnertest.WaitFor(t, "the sleep to run", patience, func() bool { return p.Stats().Running == 1 })
		big := `{"message":"` + strings.Repeat("x", 70<<10) + `"}`
		for range 3 {
			if _, err := runnertest.Run(t, p, patience, "echo", big); err == nil || !strings.Contains(err.Error(), "larger than the 65536 bytes its worker accepts") {
				t.Errorf("an oversized request: %v", err)
			}
		}
		wg.Wait()
		if sleepErr != nil {
			t.Errorf("a request running beside the oversized ones failed: %v", sleepErr)
		}
		if got := runnertest.PIDOf(t, p, patience, "echo", `{}`); got != pid || p.Failed() != nil {
			t.Errorf("the worker was replaced (%d, then %d) or the pool gave up (%v)", pid, got, p.Failed())
		}
	})
}

// The restart backoff starts afresh once the failures before are a
// restart period ago: crashes far apart do not each wait longer.
func TestBackoffResetsAfterAQuietPeriod(t *testing.T) {
	p := newPool(t, pool.Config{Executable: agents[0].exe, MaxWorkers: 1, RestartBackoff: 20 * time.Millisecond, RestartBackoffMax: 5 * time.Second,
		RestartPeriod: 100 * time.Millisecond, RestartIntensity: 3}, nil)
	for range 8 {
		runnertest.PIDOf(t, p, patience, "echo", `{}`)
		_, _ = runnertest.Run(t, p, patience, "crash", `{"message":"x"}`)
		time.Sleep(150 * time.Millisecond) // beyond the restart period
	}
	start := time.Now()
	runnertest.PIDOf(t, p, patience, "echo", `{}`)
	// Doubling eight times from 20 ms would be 5 s.
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("after crashes a period apart the next request waited %s", took)
	}
}

// A document over the agreed limit stops the worker, whose stream cannot
// be read past it, and fails its requests with a reply naming the limit.
func TestOversizedDocumentStopsTheWorker(t *testing.T) {
	p := newPool(t, pool.Config{Executable: rawAgent(t, "bigreply"), MaxWorkers: 1, MaxDocumentBytes: 128 << 10, RestartIntensity: 100}, nil)
	_, err := runnertest.Run(t, p, patience, "echo", `{}`)
	if err == nil || !strings.Contains(err.Error(), "larger than 131072 bytes, the limit agreed") {
		t.Fatalf("a document over the limit: %v", err)
	}
	runnertest.WaitFor(t, "the worker to go", patience, func() bool { return p.Stats().Workers == 0 })
}
