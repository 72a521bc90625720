package lifecycle

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"

	"github.com/agent-host/agent-host/host/hosttest"
	"github.com/agent-host/agent-host/protocol/ddl"
	"github.com/agent-host/agent-host/runner"
)

const node = "node1.example.net"

// received is one message a subscriber got.
type received struct {
	subject string
	data    []byte
}

// subscribe listens to both subject trees on a real broker and returns
// the publisher to hand to New and a function that waits for the next n
// messages.
func subscribe(t *testing.T) (Publisher, func(n int) []received) {
	t.Helper()
	srv := hosttest.NATS(t)
	pubConn, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pubConn.Close)
	sub, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.Close)
	ch := make(chan received, 100)
	// One subscription to both trees, so that messages keep their order.
	if _, err := sub.Subscribe("choria.lifecycle.>", func(m *nats.Msg) { ch <- received{m.Subject, m.Data} }); err != nil {
		t.Fatal(err)
	}
	if err := sub.Flush(); err != nil {
		t.Fatal(err)
	}
	next := func(n int) []received {
		t.Helper()
		var got []received
		for len(got) < n {
			select {
			case r := <-ch:
				got = append(got, r)
			case <-time.After(5 * time.Second):
				t.Fatalf("got %d events, want %d: %v", len(got), n, got)
			}
		}
		return got
	}
	return PublisherFunc(func(s string, d []byte) error { return pubConn.Publish(s, d) }), next
}

// cloudEvent parses a message as a CloudEvent with the SDK and checks
// the envelope against its data.
func cloudEvent(t *testing.T, r received, wantSubject, wantType, wantSource string) (event.Event, map[string]any) {
	t.Helper()
	if r.subject != wantSubject {
		t.Errorf("subject %q, want %q", r.subject, wantSubject)
	}
	var e event.Event
	if err := json.Unmarshal(r.data, &e); err != nil {
		t.Fatalf("not a CloudEvent: %v\n%s", err, r.data)
	}
	if err := e.Validate(); err != nil {
		t.Fatalf("invalid CloudEvent: %v\n%s", err, r.data)
	}
	var data map[string]any
	if err := json.Unmarshal(e.Data(), &data); err != nil {
		t.Fatalf("data: %v", err)
	}
	if e.SpecVersion() != "1.0" || e.Type() != wantType || e.Source() != wantSource || e.Subject() != node || e.DataContentType() != "application/json" {
		t.Errorf("envelope specversion %q type %q source %q subject %q content type %q, want 1.0 %q %q %q application/json",
			e.SpecVersion(), e.Type(), e.Source(), e.Subject(), e.DataContentType(), wantType, wantSource, node)
	}
	if data["id"] != e.ID() || data["protocol"] != wantType || data["identity"] != node || data["component"] != "server" {
		t.Errorf("data %v does not match the envelope %s", data, r.data)
	}
	if ts, _ := data["timestamp"].(float64); !e.Time().Equal(time.Unix(int64(ts), 0)) || time.Since(e.Time()) > time.Minute {
		t.Errorf("time %v, timestamp %v: want the same recent second", e.Time(), data["timestamp"])
	}
	return e, data
}

func keys(m map[string]any) []string { return slices.Sorted(maps.Keys(m)) }

func TestCloudEvents(t *testing.T) {
	pub, next := subscribe(t)
	ev := New(pub, Config{Version: "1.2.3", AliveInterval: 50 * time.Millisecond})

	ev.Startup(t.Context(), node, []string{"echo"})
	got := next(3) // startup and two alive events
	_, data := cloudEvent(t, got[0], "choria.lifecycle.event.startup.server", "io.choria.lifecycle.v1.startup", "io.choria.lifecycle")
	if want := []string{"component", "id", "identity", "protocol", "timestamp", "version"}; !slices.Equal(keys(data), want) || data["version"] != "1.2.3" {
		t.Errorf("startup data %v, want keys %v and version 1.2.3", data, want)
	}
	ids := map[string]bool{data["id"].(string): true}
	for _, r := range got[1:] {
		e, data := cloudEvent(t, r, "choria.lifecycle.event.alive.server", "io.choria.lifecycle.v1.alive", "io.choria.lifecycle")
		if want := []string{"component", "id", "identity", "protocol", "timestamp", "version"}; !slices.Equal(keys(data), want) || data["version"] != "1.2.3" {
			t.Errorf("alive data %v, want keys %v and version 1.2.3", data, want)
		}
		if ids[e.ID()] {
			t.Errorf("alive event repeats id %s", e.ID())
		}
		ids[e.ID()] = true
	}

	echo := &runner.Agent{Name: "echo", Active: true, DDL: &ddl.DDL{Metadata: ddl.Metadata{Name: "echo", Version: "2.0.0"}}}
	off := &runner.Agent{Name: "off", Active: false, DDL: &ddl.DDL{Metadata: ddl.Metadata{Name: "off", Version: "0.1.0"}}}
	gone := &runner.Agent{Name: "gone"}
	ev.AgentsChanged(t.Context(), node, runner.Change{Added: []*runner.Agent{echo}, Updated: []*runner.Agent{off}, Removed: []*runner.Agent{gone}})
	want := []map[string]any{
		{"agent": "echo", "change": "added", "agent_version": "2.0.0", "active": true},
		{"agent": "off", "change": "updated", "agent_version": "0.1.0", "active": false},
		{"agent": "gone", "change": "removed", "active": false},
	}
	var changes []map[string]any
	for len(changes) < len(want) {
		for _, r := range next(1) {
			if r.subject == "choria.lifecycle.event.alive.server" {
				continue
			}
			e, data := cloudEvent(t, r, "choria.lifecycle.agent_host.agent_changed."+node, "io.agent-host.lifecycle.v1.agent_changed", "io.agent-host.lifecycle")
			if ids[e.ID()] {
				t.Errorf("agent_changed event repeats id %s", e.ID())
			}
			ids[e.ID()] = true
			for _, k := range []string{"protocol", "id", "identity", "component", "timestamp"} {
				delete(data, k)
			}
			changes = append(changes, data)
		}
	}
	for i := range want {
		if !maps.Equal(changes[i], want[i]) {
			t.Errorf("agent_changed %d: data %v, want %v", i, changes[i], want[i])
		}
	}

	ev.Shutdown(context.Background(), node)
	// Alive events may still be on the wire; the shutdown event is the last.
	for {
		r := next(1)[0]
		if r.subject == "choria.lifecycle.event.alive.server" {
			continue
		}
		_, data := cloudEvent(t, r, "choria.lifecycle.event.shutdown.server", "io.choria.lifecycle.v1.shutdown", "io.choria.lifecycle")
		if want := []string{"component", "id", "identity", "protocol", "timestamp"}; !slices.Equal(keys(data), want) {
			t.Errorf("shutdown data %v, want keys %v", data, want)
		}
		break
	}
	if s := ev.Stats(); s.Dropped != 0 || s.Failed != 0 {
		t.Errorf("stats %+v, want nothing dropped or failed", s)
	}
	before := ev.Stats().Published
	time.Sleep(150 * time.Millisecond)
	ev.AgentsChanged(t.Context(), node, runner.Change{Added: []*runner.Agent{echo}})
	if s := ev.Stats(); s.Published != before || s.Dropped != 1 {
		t.Errorf("after shutdown: stats %+v, want no more published (%d) and the agent change dropped", s, before)
	}
}

func TestLegacyFormat(t *testing.T) {
	pub, next := subscribe(t)
	ev := New(pub, Config{Version: "1.2.3", Legacy: true, AliveInterval: -1})
	ev.Startup(t.Context(), node, nil)
	ev.AgentsChanged(t.Context(), node, runner.Change{Removed: []*runner.Agent{{Name: "gone"}}})
	ev.Shutdown(t.Context(), node)
	got := next(3)
	want := []struct {
		subject, protocol string
		keys              []string
	}{
		{"choria.lifecycle.event.startup.server", "io.choria.lifecycle.v1.startup", []string{"component", "id", "identity", "protocol", "timestamp", "version"}},
		{"choria.lifecycle.agent_host.agent_changed." + node, "io.agent-host.lifecycle.v1.agent_changed", []string{"active", "agent", "change", "component", "id", "identity", "protocol", "timestamp"}},
		{"choria.lifecycle.event.shutdown.server", "io.choria.lifecycle.v1.shutdown", []string{"component", "id", "identity", "protocol", "timestamp"}},
	}
	for i, w := range want {
		var data map[string]any
		if err := json.Unmarshal(got[i].data, &data); err != nil {
			t.Fatal(err)
		}
		if got[i].subject != w.subject || data["protocol"] != w.protocol || !slices.Equal(keys(data), w.keys) || data["identity"] != node {
			t.Errorf("event %d on %s: %s; want %s on %s with keys %v", i, got[i].subject, got[i].data, w.protocol, w.subject, w.keys)
		}
	}
}

// TestChoriaBytes pins the encoding to the bytes Choria's servers publish:
// the same keys in the same order, the time in UTC.
func TestChoriaBytes(t *testing.T) {
	b := Basic{Protocol: "io.choria.lifecycle.v1.startup", ID: "5b7c3e0a-93c1-4f5e-8d0e-2f6a1b9c4d7e", Identity: "n1.example.net", Component: "server", Timestamp: 1700000000}
	got, err := encode(ChoriaSource, b, StartupData{Basic: b, Version: "0.1.0"}, false)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"specversion":"1.0","id":"5b7c3e0a-93c1-4f5e-8d0e-2f6a1b9c4d7e","source":"io.choria.lifecycle","type":"io.choria.lifecycle.v1.startup","subject":"n1.example.net","datacontenttype":"application/json","time":"2023-11-14T22:13:20Z","data":{"protocol":"io.choria.lifecycle.v1.startup","id":"5b7c3e0a-93c1-4f5e-8d0e-2f6a1b9c4d7e","identity":"n1.example.net","component":"server","timestamp":1700000000,"version":"0.1.0"}}`
	if string(got) != want {
		t.Errorf("CloudEvent\n got %s\nwant %s", got, want)
	}
	got, err = encode(ChoriaSource, b, ShutdownData{Basic: b}, true)
	if err != nil {
		t.Fatal(err)
	}
	want = `{"protocol":"io.choria.lifecycle.v1.startup","id":"5b7c3e0a-93c1-4f5e-8d0e-2f6a1b9c4d7e","identity":"n1.example.net","component":"server","timestamp":1700000000}`
	if string(got) != want {
		t.Errorf("legacy\n got %s\nwant %s", got, want)
	}
}

// TestFullQueueDoesNotBlock: with the publisher stuck, events are dropped
// and counted rather than holding up the host, and Shutdown gives up after
// its drain timeout.
func TestFullQueueDoesNotBlock(t *testing.T) {
	stuck := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(stuck) }) })
	publishing := make(chan struct{}, 1)
	pub := PublisherFunc(func(string, []byte) error { publishing <- struct{}{}; <-stuck; return nil })
	ev := New(pub, Config{Queue: 2, AliveInterval: -1, DrainTimeout: 100 * time.Millisecond})

	start := time.Now()
	ev.Startup(t.Context(), node, nil)
	<-publishing
	for range 10 {
		ev.AgentsChanged(t.Context(), node, runner.Change{Removed: []*runner.Agent{{Name: "gone"}}})
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("11 events took %v with the publisher stuck", d)
	}
	// The startup event is with the publisher, two wait, eight are dropped.
	if s := ev.Stats(); s.Dropped != 8 {
		t.Errorf("stats %+v, want 8 dropped", s)
	}
	start = time.Now()
	ev.Shutdown(t.Context(), node)
	if d := time.Since(start); d < 100*time.Millisecond || d > time.Second {
		t.Errorf("Shutdown took %v, want about the 100ms drain timeout", d)
	}
	if s := ev.Stats(); s.Dropped != 9 || s.Published != 0 {
		t.Errorf("stats %+v, want the shutdown event dropped too (9) and none published", s)
	}
}

func TestParse(t *testing.T) {
	b := Basic{Protocol: ProtocolPrefix + AgentChanged, ID: "i", Identity: node, Component: "server", Timestamp: 1700000000}
	for _, legacy := range []bool{false, true} {
		j, err := encode(Source, b, AgentChangedData{Basic: b, Agent: "echo", Change: ChangeAdded}, legacy)
		if err != nil {
			t.Fatal(err)
		}
		p, err := Parse(j)
		if err != nil {
			t.Fatalf("legacy %v: %v", legacy, err)
		}
		if p.Type() != AgentChanged || p.Identity != node || (p.CloudEvent == nil) != legacy || !p.Time().Equal(time.Unix(1700000000, 0)) {
			t.Errorf("legacy %v: parsed %+v", legacy, p)
		}
		var d AgentChangedData
		if err := json.Unmarshal(p.Data, &d); err != nil || d.Agent != "echo" {
			t.Errorf("legacy %v: data %s: %v", legacy, p.Data, err)
		}
	}
	for _, bad := range []string{`nope`, `{"specversion":"1.0"}`, `{"id":"x"}`} {
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("Parse(%s) succeeded", bad)
		}
	}
}

// TestWorkerEvents: each kind of worker event arrives as a CloudEvent of
// its own type on agent-host's subject, with the worker's details.
func TestWorkerEvents(t *testing.T) {
	pub, next := subscribe(t)
	ev := New(pub, Config{AliveInterval: -1})
	ev.Startup(t.Context(), node, nil)
	next(1)

	worker := runner.WorkerEvent{Agent: "echo", Worker: 2, PID: 4242, SDK: "agent-host-go/0.1.0", Protocol: 1, Concurrency: 4, Served: 10, Uptime: 1500 * time.Millisecond}
	started, recycled, exited := worker, worker, worker
	started.Kind, started.Served, started.Uptime = runner.WorkerStarted, 0, 0
	recycled.Kind, recycled.Reason = runner.WorkerRecycled, runner.RecycleRequests
	exited.Kind, exited.Reason, exited.Detail = runner.WorkerExited, "recycle", "exit status 0"
	for _, w := range []runner.WorkerEvent{started, recycled, exited} {
		ev.WorkerChanged(t.Context(), node, w)
	}
	ev.WorkerChanged(t.Context(), node, runner.WorkerEvent{Kind: "exploded", Agent: "echo"})

	want := []struct {
		typ  string
		data map[string]any
	}{
		{WorkerStarted, map[string]any{"agent": "echo", "worker": 2.0, "pid": 4242.0, "sdk": "agent-host-go/0.1.0", "worker_protocol": 1.0, "concurrency": 4.0, "served": 0.0, "uptime_ms": 0.0}},
		{WorkerRecycled, map[string]any{"agent": "echo", "worker": 2.0, "pid": 4242.0, "reason": "max_requests", "sdk": "agent-host-go/0.1.0", "worker_protocol": 1.0, "concurrency": 4.0, "served": 10.0, "uptime_ms": 1500.0}},
		{WorkerExited, map[string]any{"agent": "echo", "worker": 2.0, "pid": 4242.0, "reason": "recycle", "detail": "exit status 0", "sdk": "agent-host-go/0.1.0", "worker_protocol": 1.0, "concurrency": 4.0, "served": 10.0, "uptime_ms": 1500.0}},
	}
	for i, r := range next(len(want)) {
		_, data := cloudEvent(t, r, "choria.lifecycle.agent_host."+want[i].typ+"."+node, "io.agent-host.lifecycle.v1."+want[i].typ, "io.agent-host.lifecycle")
		for _, k := range []string{"protocol", "id", "identity", "component", "timestamp"} {
			delete(data, k)
		}
		if !maps.Equal(data, want[i].data) {
			t.Errorf("%s: data %v, want %v", want[i].typ, data, want[i].data)
		}
	}
	ev.Shutdown(t.Context(), node)
	if r := next(1)[0]; r.subject != "choria.lifecycle.event.shutdown.server" {
		t.Errorf("after the worker events came %s: an event of an unknown kind was published", r.data)
	}
}

// TestEventsBeforeStartup: what happens before the host serves, a pool's
// first workers starting while it connects, is published after the
// startup event rather than lost.
func TestEventsBeforeStartup(t *testing.T) {
	pub, next := subscribe(t)
	ev := New(pub, Config{AliveInterval: -1, Queue: 3})
	for i := range 3 {
		ev.WorkerChanged(t.Context(), node, runner.WorkerEvent{Kind: runner.WorkerStarted, Agent: "echo", Worker: i, PID: 100 + i})
	}
	ev.Startup(t.Context(), node, nil)
	got := next(3)
	if got[0].subject != "choria.lifecycle.event.startup.server" {
		t.Fatalf("first event on %s, want the startup event", got[0].subject)
	}
	for i, r := range got[1:] {
		_, data := cloudEvent(t, r, "choria.lifecycle.agent_host.worker_started."+node, "io.agent-host.lifecycle.v1.worker_started", "io.agent-host.lifecycle")
		if data["worker"] != float64(i) {
			t.Errorf("early event %d is of worker %v, want them in order", i, data["worker"])
		}
	}
	// The queue's size bounds what waits, with the startup event: the
	// third was dropped.
	if s := ev.Stats(); s.Dropped != 1 {
		t.Errorf("stats %+v, want the one beyond the queue's size dropped", s)
	}
	ev.Shutdown(t.Context(), node)
}
