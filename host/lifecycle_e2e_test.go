package host_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"

	"github.com/agent-host/agent-host/host"
	"github.com/agent-host/agent-host/host/hosttest"
	"github.com/agent-host/agent-host/lifecycle"
)

// TestLifecycleEvents: a subscriber on the broker sees the host's startup
// event, its alive events, an agent_changed event for each agent added or
// removed on disk, and its shutdown event, all CloudEvents on the host's
// connection.
func TestLifecycleEvents(t *testing.T) {
	msgs := make(chan *nats.Msg, 100)
	h := start(t, setup{
		agents: []string{"shagent"},
		beforeStart: func(t testing.TB, srv *hosttest.Server) {
			nc := connect(t, srv.URL(), nil)
			if _, err := nc.ChanSubscribe("choria.lifecycle.>", msgs); err != nil {
				t.Fatal(err)
			}
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
		},
		events: func(publish func(string, []byte) error) host.Events {
			return lifecycle.New(lifecycle.PublisherFunc(publish), lifecycle.Config{Version: host.Version, AliveInterval: 100 * time.Millisecond})
		},
	})
	ids := map[string]bool{}
	// next returns the next event other than alive ones, counting those.
	alive := 0
	next := func(t *testing.T, wantType string) (event.Event, map[string]any) {
		t.Helper()
		for {
			select {
			case m := <-msgs:
				var e event.Event
				if err := json.Unmarshal(m.Data, &e); err != nil {
					t.Fatalf("%s: not a CloudEvent: %v\n%s", m.Subject, err, m.Data)
				}
				if err := e.Validate(); err != nil {
					t.Fatalf("%s: invalid CloudEvent: %v", m.Subject, err)
				}
				if ids[e.ID()] {
					t.Errorf("id %s repeated", e.ID())
				}
				ids[e.ID()] = true
				var data map[string]any
				if err := json.Unmarshal(e.Data(), &data); err != nil {
					t.Fatal(err)
				}
				if e.Subject() != node || data["identity"] != node || data["id"] != e.ID() || data["component"] != "server" || data["protocol"] != e.Type() {
					t.Errorf("%s: envelope and data disagree: %s", m.Subject, m.Data)
				}
				wantSubject := "choria.lifecycle.event." + e.Type()[len("io.choria.lifecycle.v1."):] + ".server"
				if t, ok := strings.CutPrefix(e.Type(), "io.agent-host.lifecycle.v1."); ok {
					wantSubject = "choria.lifecycle.agent_host." + t + "." + node
				}
				if m.Subject != wantSubject {
					t.Errorf("%s published on %s, want %s", e.Type(), m.Subject, wantSubject)
				}
				if e.Type() == "io.choria.lifecycle.v1.alive" && wantType != e.Type() {
					alive++
					continue
				}
				if e.Type() != wantType {
					t.Fatalf("got %s, want %s: %s", e.Type(), wantType, m.Data)
				}
				return e, data
			case <-time.After(15 * time.Second):
				t.Fatalf("no %s event", wantType)
			}
		}
	}

	e, data := next(t, "io.choria.lifecycle.v1.startup")
	if e.Source() != "io.choria.lifecycle" || data["version"] != host.Version {
		t.Errorf("startup: %v %v", e.Source(), data)
	}
	e, data = next(t, "io.choria.lifecycle.v1.alive")
	if e.Source() != "io.choria.lifecycle" || data["version"] != host.Version {
		t.Errorf("alive: %v %v", e.Source(), data)
	}

	copyAgent(t, "pyagent", h.plugins)
	e, data = next(t, "io.agent-host.lifecycle.v1.agent_changed")
	if e.Source() != "io.agent-host.lifecycle" || data["agent"] != "pyagent" || data["change"] != "added" || data["active"] != true || data["agent_version"] != "1.0.0" {
		t.Errorf("agent added: %v %v", e.Source(), data)
	}
	if err := os.RemoveAll(filepath.Join(h.plugins, "shagent")); err != nil {
		t.Fatal(err)
	}
	_, data = next(t, "io.agent-host.lifecycle.v1.agent_changed")
	if data["agent"] != "shagent" || data["change"] != "removed" || data["active"] != false {
		t.Errorf("agent removed: %v", data)
	}

	h.stop()
	_, data = next(t, "io.choria.lifecycle.v1.shutdown")
	if _, ok := data["version"]; ok {
		t.Errorf("shutdown carries a version, Choria's does not: %v", data)
	}
	select {
	case m := <-msgs:
		t.Errorf("event after shutdown on %s: %s", m.Subject, m.Data)
	case <-time.After(300 * time.Millisecond):
	}
}

// TestWorkerLifecycleEvents: a pooled agent's workers are reported as they
// start and exit, with why, on agent-host's own subjects.
func TestWorkerLifecycleEvents(t *testing.T) {
	msgs := make(chan *nats.Msg, 100)
	h := start(t, setup{
		pooltest: poolAgents[0].exe,
		beforeStart: func(t testing.TB, srv *hosttest.Server) {
			nc := connect(t, srv.URL(), nil)
			if _, err := nc.ChanSubscribe("choria.lifecycle.agent_host.>", msgs); err != nil {
				t.Fatal(err)
			}
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
		},
		events: func(publish func(string, []byte) error) host.Events {
			return lifecycle.New(lifecycle.PublisherFunc(publish), lifecycle.Config{AliveInterval: -1})
		},
	})
	next := func(want string) *lifecycle.WorkerData {
		t.Helper()
		for {
			select {
			case m := <-msgs:
				p, err := lifecycle.Parse(m.Data)
				if err != nil {
					t.Fatalf("%s: %v", m.Subject, err)
				}
				if p.Type() == lifecycle.AgentChanged {
					continue
				}
				if p.Type() != want || m.Subject != "choria.lifecycle.agent_host."+want+"."+node {
					t.Fatalf("got %s on %s, want %s: %s", p.Type(), m.Subject, want, p.Data)
				}
				var d lifecycle.WorkerData
				if err := json.Unmarshal(p.Data, &d); err != nil {
					t.Fatal(err)
				}
				return &d
			case <-time.After(15 * time.Second):
				t.Fatalf("no %s event", want)
			}
		}
	}

	first := pid(t, h.call("pooltest", "echo", `{}`))
	if d := next(lifecycle.WorkerStarted); d.Agent != "pooltest" || d.PID != first {
		t.Errorf("started: %+v, want pooltest's worker %d", d, first)
	}
	h.call("pooltest", "crash", `{"message":"bye"}`)
	if d := next(lifecycle.WorkerExited); d.PID != first || d.Reason != "crashed" || d.Detail != "exit status 3" || d.Served != 1 {
		t.Errorf("exited: %+v, want worker %d crashed with exit status 3 after 1 request", d, first)
	}
	second := pid(t, h.call("pooltest", "echo", `{}`))
	if d := next(lifecycle.WorkerStarted); d.PID != second || d.Worker != 1 {
		t.Errorf("started: %+v, want worker 1, pid %d", d, second)
	}
	h.stop()
	if d := next(lifecycle.WorkerExited); d.PID != second || d.Reason != "stop" || d.Detail != "exit status 0" {
		t.Errorf("exited at shutdown: %+v, want worker %d stopped", d, second)
	}
}
