package pool_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agent-host/agent-host/protocol"
	wp "github.com/agent-host/agent-host/protocol/worker"
	"github.com/agent-host/agent-host/runner"
	"github.com/agent-host/agent-host/runner/pool"
	"github.com/agent-host/agent-host/runner/runnertest"
)

// patience bounds what should take a fraction of it.
const patience = 10 * time.Second

// newPool starts a pool of the sdk-go agent unless cfg names another, and
// closes it when the test ends.
func newPool(t testing.TB, cfg pool.Config, logs *runnertest.Logs) *pool.Pool {
	t.Helper()
	return runnertest.NewPool(t, cfg, logs, patience)
}

func TestWarmWorkerServesManyRequests(t *testing.T) {
	eachAgent(t, func(t *testing.T, exe string) {
		p := newPool(t, pool.Config{Executable: exe, MaxWorkers: 1}, nil)
		first := runnertest.PIDOf(t, p, patience, "echo", `{"message":"hi"}`)
		for range 20 {
			if pid := runnertest.PIDOf(t, p, patience, "echo", `{"message":"hi"}`); pid != first {
				t.Fatalf("request served by %d, want the warm worker %d", pid, first)
			}
		}
		rep, err := runnertest.Run(t, p, patience, "echo", `{"message":"hello"}`)
		if err != nil || !strings.Contains(string(rep.Data), `"message":"hello"`) {
			t.Fatalf("echo = %+v, %v", rep, err)
		}
		if s := p.Stats(); s.Started != 1 || s.Workers != 1 {
			t.Errorf("stats %+v, want one worker started", s)
		}
		// The sdk-go agent announced 4 at once.
		if c := p.Capacity(); c != 4 {
			t.Errorf("capacity %d, want 4", c)
		}
	})
}

func TestConcurrentRequestsShareAWorker(t *testing.T) {
	eachAgent(t, func(t *testing.T, exe string) {
		p := newPool(t, pool.Config{Executable: exe, MaxWorkers: 1}, nil)
		runnertest.PIDOf(t, p, patience, "echo", `{}`) // started
		start := time.Now()
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() { runnertest.PIDOf(t, p, patience, "sleep", `{"ms":500}`) })
		}
		wg.Wait()
		if took := time.Since(start); took > 1500*time.Millisecond {
			t.Errorf("4 sleeps of 500 ms on a worker of concurrency 4 took %s", took)
		}
	})
}

// TestCrashFailsOnlyItsRequests: a worker that dies fails the request it
// was running, with its last stderr lines, and no other worker's.
func TestCrashFailsOnlyItsRequests(t *testing.T) {
	eachAgent(t, func(t *testing.T, exe string) {
		logs := &runnertest.Logs{}
		p := newPool(t, pool.Config{Executable: exe, MaxWorkers: 2, Concurrency: 1}, logs)
		slow := make(chan error, 1)
		go func() {
			_, err := runnertest.Run(t, p, patience, "sleep", `{"ms":1000}`)
			slow <- err
		}()
		runnertest.WaitFor(t, "the sleep to start", patience, func() bool { return p.Stats().Running == 1 })
		_, err := runnertest.Run(t, p, patience, "crash", `{"message":"segfault in module frobnicate"}`)
		var f *runner.Failure
		if !errors.As(err, &f) {
			t.Fatalf("crash: %v, want a runner.Failure", err)
		}
		for _, want := range []string{"worker running it died", "exit status 3", "segfault in module frobnicate"} {
			if !strings.Contains(f.Message, want) {
				t.Errorf("the caller's message %q does not say %q", f.Message, want)
			}
		}
		if err := <-slow; err != nil {
			t.Errorf("the request on the other worker failed: %v", err)
		}
		runnertest.WaitFor(t, "the crash to be logged", patience, func() bool { return logs.Find("a worker ended unexpectedly") != nil })
		// A new worker takes over.
		runnertest.PIDOf(t, p, patience, "echo", `{}`)
	})
}

// TestHangIsCancelledThenKilled: a request past its deadline is cancelled;
// a worker that does not answer the cancel is killed with its process
// group, children included.
func TestHangIsCancelledThenKilled(t *testing.T) {
	eachAgent(t, func(t *testing.T, exe string) {
		logs := &runnertest.Logs{}
		p := newPool(t, pool.Config{Executable: exe, MaxWorkers: 1, CancelGrace: 200 * time.Millisecond}, logs)
		rep, err := runnertest.Run(t, p, patience, "spawn", `{}`)
		if err != nil {
			t.Fatal(err)
		}
		var d struct{ PID, Child int }
		_ = json.Unmarshal(rep.Data, &d)

		start := time.Now()
		_, err = runnertest.Run(t, p, 300*time.Millisecond, "hang", `{}`)
		if !errors.Is(err, runner.ErrTimeout) {
			t.Fatalf("hang: %v, want ErrTimeout", err)
		}
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("the hung request took %s to fail", took)
		}
		runnertest.WaitProcessGone(t, d.PID, patience)
		runnertest.WaitProcessGone(t, d.Child, patience)
		runnertest.WaitFor(t, "the kill to be logged", patience, func() bool { return logs.Find("a worker ended unexpectedly") != nil })
		if r := logs.Find("a worker ended unexpectedly"); !strings.Contains(r.Attrs["why"], "did not answer a cancelled request") {
			t.Errorf("the kill was not logged with its reason: %+v", r)
		}
	})
}

// TestCancelledRequestStillAnswers: a cancel reaches the action, whose
// reply ends the request; the worker lives on.
func TestCancelledRequestStillAnswers(t *testing.T) {
	eachAgent(t, func(t *testing.T, exe string) {
		p := newPool(t, pool.Config{Executable: exe, MaxWorkers: 1}, nil)
		pid := runnertest.PIDOf(t, p, patience, "echo", `{}`)
		// The worker knows the deadline too, and may answer first.
		rep, err := runnertest.Run(t, p, 200*time.Millisecond, "sleep", `{"ms":60000}`)
		if !errors.Is(err, runner.ErrTimeout) && (err != nil || rep.Statuscode == protocol.OK) {
			t.Fatalf("sleep: %+v, %v; want ErrTimeout or the action's failure", rep, err)
		}
		if got := runnertest.PIDOf(t, p, patience, "echo", `{}`); got != pid {
			t.Errorf("a worker that answered its cancel was replaced (%d, then %d)", pid, got)
		}
	})
}

// TestStrayOutputIsLogNotProtocol: what agent code prints goes to the
// log; even a line that looks like a reply is not taken for one.
func TestStrayOutputIsLogNotProtocol(t *testing.T) {
	eachAgent(t, func(t *testing.T, exe string) {
		logs := &runnertest.Logs{}
		p := newPool(t, pool.Config{Executable: exe, MaxWorkers: 1}, logs)
		pid := runnertest.PIDOf(t, p, patience, "noisy", `{}`)
		if runnertest.PIDOf(t, p, patience, "echo", `{}`) != pid {
			t.Error("the noisy worker was replaced")
		}
		runnertest.WaitFor(t, "the output to be logged", patience, func() bool {
			return logs.Find("hello from stdout") != nil && logs.Find("hello from stderr") != nil
		})
		if r := logs.Find("hello from stdout"); r.Level.String() != "INFO" {
			t.Errorf("stdout logged at %s, want INFO", r.Level)
		}
		if r := logs.Find("hello from stderr"); r.Level.String() != "ERROR" {
			t.Errorf("stderr logged at %s, want ERROR", r.Level)
		}
	})
}

// TestGarbageOnTheProtocolStream: a worker writing what is not a
// document is logged, and stopped after ten lines; its request fails.
func TestGarbageOnTheProtocolStream(t *testing.T) {
	logs := &runnertest.Logs{}
	p := newPool(t, pool.Config{Executable: rawAgent(t, "garbage"), MaxWorkers: 1}, logs)
	_, err := runnertest.Run(t, p, patience, "echo", `{}`)
	if err == nil || !strings.Contains(err.Error(), "lines that are not protocol documents") {
		t.Fatalf("echo: %v, want the worker stopped for garbage", err)
	}
	if logs.Find("not a protocol document") == nil {
		t.Error("the garbage was not logged")
	}
}

// TestHandshakeFailures: workers that do not complete the handshake are
// refused with a clear log line; the pool retries those that may come
// right and gives up on those that cannot.
func TestHandshakeFailures(t *testing.T) {
	for _, tc := range []struct {
		mode, log string
		giveUp    bool // at once: no retry can help
	}{
		{"silent", "did not complete the handshake within 200ms; its stderr ended with: thinking about the handshake", false},
		{"exit", "exited before the handshake (exit status 7); its stderr ended with: boom at start", false},
		{"refuse", "the worker speaks protocol versions [2], the host [1]: raw speaks version 2 only", true},
		{"wrongversion", "picked protocol version 9, which the host did not offer", true},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			logs := &runnertest.Logs{}
			p := newPool(t, pool.Config{Executable: rawAgent(t, tc.mode), HandshakeTimeout: 200 * time.Millisecond, RestartIntensity: 3}, logs)
			_, err := runnertest.Run(t, p, patience, "echo", `{}`)
			if !errors.Is(err, pool.ErrFailed) {
				t.Fatalf("Run: %v, want ErrFailed", err)
			}
			if !strings.Contains(err.Error(), tc.log) {
				t.Errorf("error %q does not say %q", err, tc.log)
			}
			if logs.Find("giving up on the agent's workers") == nil {
				t.Error("giving up was not logged")
			}
			if s := p.Stats(); tc.giveUp != (s.Failures == 0) {
				t.Errorf("%d failures recorded; want retries %v", s.Failures, !tc.giveUp)
			}
		})
	}
}

// TestInactiveWorker: an agent that declines activation in its handshake
// is not served.
func TestInactiveWorker(t *testing.T) {
	p := newPool(t, pool.Config{Executable: rawAgent(t, "inactive")}, nil)
	_, err := runnertest.Run(t, p, patience, "echo", `{}`)
	if !errors.Is(err, pool.ErrInactive) || !strings.Contains(err.Error(), "not on this node") {
		t.Fatalf("Run: %v, want ErrInactive with the agent's reason", err)
	}
}

// TestDocumentTooLarge: a reply document over the agreed limit stops the
// worker; a reply over MaxReplyBytes fails only its request.
func TestDocumentTooLarge(t *testing.T) {
	eachAgent(t, func(t *testing.T, exe string) {
		p := newPool(t, pool.Config{Executable: exe, MaxWorkers: 1, MaxDocumentBytes: 128 << 10, MaxReplyBytes: 64 << 10}, nil)
		pid := runnertest.PIDOf(t, p, patience, "echo", `{}`)

		_, err := runnertest.Run(t, p, patience, "big", `{"bytes":100000}`)
		var tooLarge *runner.ReplyTooLargeError
		if !errors.As(err, &tooLarge) || tooLarge.Limit != 64<<10 {
			t.Fatalf("a reply over MaxReplyBytes: %v", err)
		}
		if got := runnertest.PIDOf(t, p, patience, "echo", `{}`); got != pid {
			t.Errorf("the worker was replaced after a reply that fitted its document (%d, then %d)", pid, got)
		}

		// A reply that would make a document over the limit: the worker
		// may refuse to send it, failing only that request (sdk-go does),
		// or send it and be stopped (see TestOversizedDocumentStopsTheWorker).
		rep, err := runnertest.Run(t, p, patience, "big", `{"bytes":200000}`)
		switch {
		case err != nil:
			if !strings.Contains(err.Error(), "larger than 131072 bytes") {
				t.Fatalf("a document over the limit: %v", err)
			}
			runnertest.WaitProcessGone(t, pid, patience)
		case rep.Statuscode == protocol.OK || !strings.Contains(rep.Statusmsg, "too large"):
			t.Fatalf("a reply over the document limit: %+v", rep)
		default:
			if got := runnertest.PIDOf(t, p, patience, "echo", `{}`); got != pid {
				t.Errorf("the worker was replaced after refusing an oversized reply (%d, then %d)", pid, got)
			}
		}
		runnertest.PIDOf(t, p, patience, "echo", `{}`)
	})
}

// TestRecycling: workers are replaced after a number of requests, a
// lifetime and a resident size, between requests.
func TestRecycling(t *testing.T) {
	eachAgent(t, func(t *testing.T, exe string) {
		t.Run("requests", func(t *testing.T) {
			p := newPool(t, pool.Config{Executable: exe, MaxWorkers: 1, MaxRequests: 3}, nil)
			var pids []int
			for range 7 {
				pids = append(pids, runnertest.PIDOf(t, p, patience, "echo", `{}`))
			}
			for i, pid := range pids {
				if want := pids[i/3*3]; pid != want {
					t.Fatalf("pids %v: want a new worker every 3 requests", pids)
				}
			}
			if pids[0] == pids[3] || pids[3] == pids[6] {
				t.Fatalf("pids %v: want a new worker every 3 requests", pids)
			}
			// The two retired workers count once they are gone.
			runnertest.WaitFor(t, "the recycled workers to exit", patience, func() bool { return p.Stats().Retired[wp.ReasonRecycle] == 2 })
			if s := p.Stats(); s.Started != 3 || s.Failures != 0 || len(s.Retired) != 1 {
				t.Errorf("stats %+v, want 3 started, no failure and 2 recycled", s)
			}
		})
		t.Run("lifetime", func(t *testing.T) {
			p := newPool(t, pool.Config{Executable: exe, MaxWorkers: 1, MinWorkers: 1, MaxLifetime: 300 * time.Millisecond}, nil)
			first := runnertest.PIDOf(t, p, patience, "echo", `{}`)
			runnertest.WaitProcessGone(t, first, patience)
			if runnertest.PIDOf(t, p, patience, "echo", `{}`) == first {
				t.Fatal("the same worker after its lifetime")
			}
		})
		t.Run("rss", func(t *testing.T) {
			p := newPool(t, pool.Config{Executable: exe, MaxWorkers: 1, MaxRSS: 64 << 20, PingInterval: 100 * time.Millisecond}, nil)
			first := runnertest.PIDOf(t, p, patience, "grow", `{"mb":100}`)
			runnertest.WaitProcessGone(t, first, patience)
			if runnertest.PIDOf(t, p, patience, "echo", `{}`) == first {
				t.Fatal("the same worker after it grew beyond MaxRSS")
			}
		})
	})
}

// TestIdleShrink: idle workers beyond MinWorkers are stopped. The
// requests last long against a worker's start (a Python worker's takes a
// few hundred milliseconds on a busy machine), so that none is served by
// a worker another finished with, and the idle timeout is longer than the
// spread of their ends.
func TestIdleShrink(t *testing.T) {
	eachAgent(t, func(t *testing.T, exe string) {
		p := newPool(t, pool.Config{Executable: exe, MaxWorkers: 3, MinWorkers: 1, Concurrency: 1, IdleTimeout: time.Second}, nil)
		var wg sync.WaitGroup
		for range 3 {
			wg.Go(func() { runnertest.PIDOf(t, p, patience, "sleep", `{"ms":1500}`) })
		}
		wg.Wait()
		if s := p.Stats(); s.Workers != 3 {
			t.Fatalf("%d workers for 3 concurrent requests of concurrency 1, want 3", s.Workers)
		}
		runnertest.WaitFor(t, "the pool to shrink to MinWorkers", patience, func() bool { return p.Stats().Workers == 1 })
		time.Sleep(1500 * time.Millisecond)
		if s := p.Stats(); s.Workers != 1 || s.Retired[wp.ReasonIdle] != 2 {
			t.Errorf("%d workers after idling, %d stopped idle; want MinWorkers 1 and 2", s.Workers, s.Retired[wp.ReasonIdle])
		}
	})
}

// TestRestartBackoffAndIntensity: workers that keep dying are restarted
// ever more slowly, then given up on.
func TestRestartBackoffAndIntensity(t *testing.T) {
	eachAgent(t, func(t *testing.T, exe string) {
		logs := &runnertest.Logs{}
		p := newPool(t, pool.Config{Executable: exe, MaxWorkers: 1, RestartBackoff: 100 * time.Millisecond, RestartIntensity: 4, RestartPeriod: time.Minute}, logs)
		var crashes []time.Time
		for range 4 {
			_, err := runnertest.Run(t, p, patience, "crash", `{"message":"again"}`)
			if errors.Is(err, pool.ErrFailed) {
				break
			}
			crashes = append(crashes, time.Now())
		}
		if len(crashes) != 4 {
			t.Fatalf("%d crashes before the pool gave up, want 4", len(crashes))
		}
		// The waits between restarts double: 100, 200, 400 ms. Each gap
		// also holds the new worker's start-up, handshake and crash, which
		// for an interpreter can be as long as the first wait and varies
		// with the machine's load: each gap is held to its wait as a lower
		// bound, and the last to being longer than the first, rather than
		// the gaps to a ratio.
		var gaps []time.Duration
		for i := 1; i < len(crashes); i++ {
			gap, wait := crashes[i].Sub(crashes[i-1]), 100*time.Millisecond<<(i-1)
			if gap < wait*9/10 {
				t.Errorf("restart %d came %s after the last, before its backoff of %s", i, gap, wait)
			}
			gaps = append(gaps, gap)
		}
		if gaps[len(gaps)-1] <= gaps[0] {
			t.Errorf("the gaps between restarts %v do not grow: no backoff", gaps)
		}
		_, err := runnertest.Run(t, p, patience, "echo", `{}`)
		if !errors.Is(err, pool.ErrFailed) || !strings.Contains(err.Error(), "4 failures within 1m0s") {
			t.Fatalf("after 4 failures: %v, want ErrFailed", err)
		}
		if p.Failed() == nil || logs.Find("giving up on the agent's workers") == nil {
			t.Error("the pool did not say it gave up")
		}
	})
}

// TestNoFreeWorker: requests beyond what the workers run wait, and fail
// at their deadline with an error that says so.
func TestNoFreeWorker(t *testing.T) {
	eachAgent(t, func(t *testing.T, exe string) {
		p := newPool(t, pool.Config{Executable: exe, MaxWorkers: 1, Concurrency: 1}, nil)
		runnertest.PIDOf(t, p, patience, "echo", `{}`)
		go runnertest.Run(t, p, patience, "sleep", `{"ms":2000}`)
		runnertest.WaitFor(t, "the sleep to start", patience, func() bool { return p.Stats().Running == 1 })
		_, err := runnertest.Run(t, p, 200*time.Millisecond, "echo", `{}`)
		if !errors.Is(err, runner.ErrTimeout) || !strings.Contains(err.Error(), "no worker was free") {
			t.Fatalf("Run: %v, want a timeout saying no worker was free", err)
		}
	})
}

// TestPingTimeout: an idle worker that does not answer pings is replaced.
func TestPingTimeout(t *testing.T) {
	logs := &runnertest.Logs{}
	p := newPool(t, pool.Config{Executable: rawAgent(t, "nopong"), MaxWorkers: 1, PingInterval: 100 * time.Millisecond, PingTimeout: 100 * time.Millisecond}, logs)
	first := runnertest.PIDOf(t, p, patience, "echo", `{}`)
	runnertest.WaitProcessGone(t, first, patience)
	runnertest.WaitFor(t, "the kill to be logged", patience, func() bool { return logs.Find("a worker ended unexpectedly") != nil })
	if r := logs.Find("a worker ended unexpectedly"); !strings.Contains(r.Attrs["why"], "did not answer a ping") {
		t.Errorf("the kill was not logged with its reason: %+v", r)
	}
}

// TestCloseDrains: Close lets running requests finish, then stops every
// worker.
func TestCloseDrains(t *testing.T) {
	eachAgent(t, func(t *testing.T, exe string) {
		p := newPool(t, pool.Config{Executable: exe, MaxWorkers: 1}, nil)
		pid := runnertest.PIDOf(t, p, patience, "echo", `{}`)
		done := make(chan error, 1)
		go func() {
			_, err := runnertest.Run(t, p, patience, "sleep", `{"ms":500}`)
			done <- err
		}()
		runnertest.WaitFor(t, "the sleep to start", patience, func() bool { return p.Stats().Running == 1 })
		ctx, cancel := context.WithTimeout(t.Context(), patience)
		defer cancel()
		if err := p.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Errorf("the running request failed when the pool closed: %v", err)
		}
		runnertest.WaitProcessGone(t, pid, time.Second)
		if _, err := runnertest.Run(t, p, patience, "echo", `{}`); !errors.Is(err, pool.ErrClosed) {
			t.Errorf("Run after Close: %v, want ErrClosed", err)
		}
	})
}

// TestWorkersDieWithTheHost: a host killed with SIGKILL leaves no worker.
func TestWorkersDieWithTheHost(t *testing.T) {
	eachAgent(t, func(t *testing.T, exe string) {
		host := exec.Command(rawAgent(t, "host"))
		host.Env = append(os.Environ(), "POOLTEST_AGENT="+exe)
		runnertest.KillHost(t, host, patience)
	})
}
