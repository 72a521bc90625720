package host

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/agent-host/agent-host/host/config"
	"github.com/agent-host/agent-host/protocol"
	"github.com/agent-host/agent-host/protocol/ddl"
	"github.com/agent-host/agent-host/runner"
)

// BenchmarkRequestMetrics is what metrics add to one request that runs an
// agent: its queue wait and duration observed, its reply counted, and
// when it was validated stored. Choria's counters cost nothing more:
// they are the host's atomic counters, read at scrape time.
func BenchmarkRequestMetrics(b *testing.B) {
	cfg := config.Default()
	cfg.Identity = "bench.example.net"
	h := &Host{cfg: cfg, now: time.Now}
	h.metrics = newMetrics(h)
	d := &ddl.DDL{Actions: []*ddl.Action{{Name: "status"}, {Name: "restart"}, {Name: "echo"}}}
	r := &request{agent: &agentEntry{name: "service", ddl: d}, rpc: &protocol.RPCRequest{Action: "echo"}}
	record := func() {
		start := time.Now()
		h.counters.lastMessage.Store(h.now().Unix())
		h.metrics.queueWait.WithLabelValues(r.agent.name).Observe(time.Since(start).Seconds())
		h.metrics.duration.WithLabelValues(r.agent.name, actionLabel(r)).Observe(time.Since(start).Seconds())
		h.metrics.answered(r, protocol.OK)
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			record()
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				record()
			}
		})
	})
}

// TestRunFailureCauses: each kind of runner error is counted under its
// own cause, and one the host does not know under "other".
func TestRunFailureCauses(t *testing.T) {
	cfg := config.Default()
	cfg.Identity = "n1.example.net"
	live := &Host{cfg: cfg, reqCtx: context.Background()}
	stopping, stop := context.WithCancel(context.Background())
	stop()
	shutting := &Host{cfg: cfg, reqCtx: stopping}
	for _, tc := range []struct {
		name string
		h    *Host
		err  error
		want string
	}{
		{"timeout", live, fmt.Errorf("running: %w", runner.ErrTimeout), causeTimeout},
		{"exit", live, &runner.ExitError{Name: "x", Code: 3}, causeExit},
		{"signal", live, &runner.ExitError{Name: "x", Code: -1, Signal: "SIGSEGV"}, causeExit},
		{"reply too large", live, &runner.ReplyTooLargeError{Size: 10, Limit: 5}, causeReplyTooLarge},
		{"reply format", live, protocol.ErrReplyDataFormat, causeReplyFormat},
		{"no executable", live, runner.ErrNoExecutable, causeNoExecutable},
		{"shutdown", shutting, context.Canceled, causeShutdown},
		{"cancelled while running", live, context.Canceled, causeOther},
		{"worker died", live, &runner.Failure{Message: "executing x failed: the worker running it died", Err: fmt.Errorf("%w: exit status 3", runner.ErrWorkerDied)}, causeWorkerDied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, _ := tc.h.runFailure("x", "y", time.Second, tc.err); got != tc.want {
				t.Errorf("cause %q, want %q", got, tc.want)
			}
		})
	}
}

// TestStatsRequestsAreBounded: statistics requests beyond the bound are
// answered 503 at once rather than queued on the host's locks.
func TestStatsRequestsAreBounded(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, maxStatsInFlight)
	h := limitInFlight(maxStatsInFlight, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		entered <- struct{}{}
		<-release
	}))
	var wg sync.WaitGroup
	for range maxStatsInFlight {
		wg.Go(func() { h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/choria/", nil)) })
		<-entered
	}
	for _, path := range []string{"/choria/", "/choria/prometheus"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != http.StatusServiceUnavailable {
			t.Errorf("%s beyond the bound: status %d, want 503", path, rec.Code)
		}
	}
	close(release)
	wg.Wait()
	rec := httptest.NewRecorder()
	go func() { <-entered }()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/choria/", nil))
	if rec.Code != http.StatusOK {
		t.Errorf("after the others: status %d, want 200", rec.Code)
	}
}
