package agent

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/agent-host/agent-host/protocol"
	gp "github.com/agent-host/agent-host/protocol/grpcplugin"
)

// waitingServer is a plugin server of one slot whose action "wait" runs
// until it is cancelled.
func waitingServer() *pluginServer {
	a := New("x")
	a.Action("wait", func(ctx context.Context, _ *Request) (any, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	return &pluginServer{agent: a, sem: make(chan struct{}, 1), running: map[string]context.CancelFunc{}}
}

// runAsync runs request id of action wait, its reply sent on the channel.
func runAsync(t *testing.T, s *pluginServer, id string) <-chan *gp.RunReply {
	t.Helper()
	req, err := json.Marshal(protocol.AgentRequest{Schema: protocol.AgentRequestSchema, Protocol: protocol.AgentRequestProtocol, Agent: "x", Action: "wait", Data: json.RawMessage("{}")})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan *gp.RunReply, 1)
	go func() {
		rep, err := s.Run(context.Background(), &gp.RunRequest{Id: id, DeadlineMs: time.Now().Add(time.Minute).UnixMilli(), Request: req})
		if err != nil {
			t.Errorf("Run %s: %v", id, err)
		}
		done <- rep
	}()
	return done
}

func wantAborted(t *testing.T, what string, done <-chan *gp.RunReply) {
	t.Helper()
	select {
	case rep := <-done:
		var r protocol.AgentReply
		if rep == nil || json.Unmarshal(rep.Reply, &r) != nil || r.Statuscode != protocol.Aborted {
			t.Fatalf("%s: reply %v, want aborted", what, rep)
		}
	case <-time.After(2 * time.Second):
		t.Fatalf("%s: still running after 2s, cancelled", what)
	}
}

func TestPluginCancelBeforeRunIsHonoured(t *testing.T) {
	s := waitingServer()
	// The host's Cancel overtook its Run: nothing orders the two calls.
	if _, err := s.Cancel(context.Background(), &gp.CancelRequest{Id: "1", Reason: "stop"}); err != nil {
		t.Fatal(err)
	}
	wantAborted(t, "the request cancelled before its Run", runAsync(t, s, "1"))
	// Honoured once: a later request of another id runs.
	other := runAsync(t, s, "2")
	select {
	case rep := <-other:
		t.Fatalf("request 2 ended without a cancel: %v", rep)
	case <-time.After(100 * time.Millisecond):
	}
	if _, err := s.Cancel(context.Background(), &gp.CancelRequest{Id: "2"}); err != nil {
		t.Fatal(err)
	}
	wantAborted(t, "request 2", other)
}

func TestPluginCancelWhileWaitingForASlot(t *testing.T) {
	s := waitingServer()
	first := runAsync(t, s, "1")
	waiting := runAsync(t, s, "2")
	deadline := time.Now().Add(2 * time.Second)
	for {
		s.mu.Lock()
		n := len(s.running)
		s.mu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the requests were not registered")
		}
		time.Sleep(time.Millisecond)
	}
	_, _ = s.Cancel(context.Background(), &gp.CancelRequest{Id: "2"})
	wantAborted(t, "the request waiting for the slot", waiting)
	_, _ = s.Cancel(context.Background(), &gp.CancelRequest{Id: "1"})
	wantAborted(t, "the request holding the slot", first)
}

func TestPluginEarlyCancelsAreBounded(t *testing.T) {
	s := waitingServer()
	for i := range 3 * maxEarlyCancels {
		_, _ = s.Cancel(context.Background(), &gp.CancelRequest{Id: strconv.Itoa(i)})
	}
	if n := len(s.cancelled); n > maxEarlyCancels {
		t.Fatalf("%d cancellations remembered, over the bound of %d", n, maxEarlyCancels)
	}
	// The newest are kept, and expire.
	s.mu.Lock()
	_, kept := s.cancelled[strconv.Itoa(3*maxEarlyCancels-1)]
	s.rememberCancel("late", time.Now().Add(2*earlyCancelTTL))
	n := len(s.cancelled)
	s.mu.Unlock()
	if !kept || n != 1 {
		t.Fatalf("newest kept %v, %d left after the others expired, want 1", kept, n)
	}
}
