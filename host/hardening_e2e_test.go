package host_test

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/agent-host/agent-host/host"
	"github.com/agent-host/agent-host/host/config"
	"github.com/agent-host/agent-host/host/hosttest"
	"github.com/agent-host/agent-host/protocol"
	"github.com/agent-host/agent-host/protocol/client"
	v1 "github.com/agent-host/agent-host/protocol/v1"
	"github.com/agent-host/agent-host/runner"
)

// TestDeeplyNestedFilterDoesNotCrash is the regression test for one
// message that ended the host with a stack overflow: a 1.6 MB discovery
// request whose compound filter nests 600 000 parentheses. The host must
// refuse the filter, count it, and go on serving.
func TestDeeplyNestedFilterDoesNotCrash(t *testing.T) {
	h := start(t, setup{natsOpts: []hosttest.NATSOption{hosttest.WithMaxPayload(8 << 20)}})
	for _, expression := range []string{
		strings.Repeat("(", 600_000) + "true" + strings.Repeat(")", 600_000),
		strings.Repeat("!", 600_000) + "true",
		strings.Repeat("[", 300_000) + "true" + strings.Repeat("][0]", 300_000),
	} {
		f := protocol.NewFilter()
		f.Compound = [][]map[string]string{{{"expr": expression}}}
		before := h.host.Stats().FilterRefused
		if h.discovers(t, f) {
			t.Fatalf("a filter of %d bytes selected the node", len(expression))
		}
		if got := h.host.Stats().FilterRefused; got != before+1 {
			t.Errorf("FilterRefused = %d, want %d", got, before+1)
		}
	}
	if r := h.call("rpcutil", "ping", "{}"); r.Statuscode != protocol.OK {
		t.Errorf("rpcutil ping after the refusals: %d %s", r.Statuscode, r.Statusmsg)
	}
	if !strings.Contains(h.logs.String(), "refusing a filter beyond the limits") {
		t.Errorf("no log line for the refused filter:\n%.2000s", h.logs.String())
	}
}

// TestDeeplyNestedDocuments: an envelope nested beyond its fixed shape is
// dropped and counted before it is decoded; request data nested beyond
// the data limit is answered as invalid, before the agent runs.
func TestDeeplyNestedDocuments(t *testing.T) {
	h := start(t, setup{agents: []string{"shagent"}, natsOpts: []hosttest.NATSOption{hosttest.WithMaxPayload(8 << 20)}})

	deep := strings.Repeat("[", 500_000) + strings.Repeat("]", 500_000)
	transport := `{"protocol":"choria:transport:1","data":"eA==","headers":{"seen-by":` + deep + `}}`
	before := h.host.Stats()
	if err := h.nc.Publish("mcollective.node."+node, []byte(transport)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the deep transport was not refused", func() bool {
		s := h.host.Stats()
		return s.TooDeep == before.TooDeep+1 && s.Unvalidated == before.Unvalidated+1
	})

	data := strings.Repeat(`{"a":`, 1000) + "1" + strings.Repeat("}", 1000)
	r := h.rawCall(t, "shagent", `{"agent":"shagent","action":"echo","data":`+data+`}`)
	if r.Statuscode != protocol.InvalidData || !strings.Contains(r.Statusmsg, "Could not process request: the request nests JSON more than 128 levels deep") {
		t.Errorf("reply %d %q, want invalid data nested too deeply", r.Statuscode, r.Statusmsg)
	}
	if runs := h.runs("shagent"); runs != "" {
		t.Errorf("the agent ran: %q", runs)
	}
}

// TestAgentsLeaveNothingBehind is the regression test for agents whose
// children outlived them (go-choria#842): a child left running when the
// agent exits is stopped, one ignoring SIGTERM and holding stdout open
// included, and so is one that moved to a session of its own; the reply
// does not wait for that.
func TestAgentsLeaveNothingBehind(t *testing.T) {
	h := start(t, setup{agents: []string{"shagent"}})
	wantStatus(t, h.call("shagent", "detach", `{}`), protocol.OK, "OK")
	detached, escaped := h.pidFile(t, "detached.pid"), h.pidFile(t, "escaped.pid")
	if !alive(detached) {
		t.Error("the child ignoring SIGTERM was gone before the reply: the reply waited for the agent's leftovers")
	}
	eventually(t, 5*time.Second, "the child ignoring SIGTERM outlived the agent", func() bool { return !alive(detached) })
	eventually(t, 5*time.Second, "the child in a session of its own outlived the agent", func() bool { return !alive(escaped) })
	eventually(t, 5*time.Second, "the leftovers were not logged", func() bool {
		return strings.Contains(h.logs.String(), "the process left others running when it exited; they were stopped")
	})
}

func (h *harness) pidFile(t *testing.T, name string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(h.plugins, "shagent", name))
	if err != nil {
		t.Fatalf("the agent did not record %s: %v", name, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// TestShutdownAnswersEveryRequest is the regression test for requests
// abandoned at shutdown: every request gets a reply, those still queued
// one saying the node is shutting down, the running one the agent's
// result, or a kill once the grace is over.
func TestShutdownAnswersEveryRequest(t *testing.T) {
	for _, tc := range []struct {
		name   string
		grace  time.Duration
		open   bool   // let the running request finish
		status string // of the running request
	}{
		{"the running request finishes in the grace", time.Minute, true, "OK"},
		{"the grace runs out", 200 * time.Millisecond, false, "Could not call external agent shagent#gate: " + node + " is shutting down, the agent was killed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := start(t, setup{agents: []string{"shagent"}, longTimeout: true, configure: func(c *config.Config) {
				c.MaxInFlight = 1
				c.ShutdownGrace = tc.grace
			}})
			sreq, id := unsigned(t, "shagent", `{"agent":"shagent","action":"gate","data":{}}`, nil)
			running := h.send(t, sreq, id, "mcollective.node."+node)
			eventually(t, 10*time.Second, "the gated request did not start", func() bool { return strings.Contains(h.runs("shagent"), "gate") })
			var queued []*nats.Subscription
			for range 50 {
				sreq, id := unsigned(t, "shagent", `{"agent":"shagent","action":"echo","data":{"message":"x"}}`, nil)
				queued = append(queued, h.send(t, sreq, id, "mcollective.node."+node))
			}
			eventually(t, 10*time.Second, "the requests were not queued", func() bool { return h.host.Stats().Waiting == 50 })
			stopped := make(chan struct{})
			go func() { h.stop(); close(stopped) }()
			for i, sub := range queued {
				msg, err := sub.NextMsg(10 * time.Second)
				if err != nil {
					t.Fatalf("queued request %d got no reply: %v", i, err)
				}
				wantStatus(t, replyBody(t, msg.Data), protocol.Aborted, node+" is shutting down; the request was not run")
			}
			// The queued requests were answered while the running one
			// still runs; now let it finish.
			if tc.open {
				writeFile(t, filepath.Join(h.plugins, "shagent", "open"), "")
			}
			<-stopped
			msg, err := running.NextMsg(10 * time.Second)
			if err != nil {
				t.Fatalf("the running request got no reply: %v", err)
			}
			if r := replyBody(t, msg.Data); r.Statusmsg != tc.status {
				t.Errorf("the running request: %d %q, want %q", r.Statuscode, r.Statusmsg, tc.status)
			}
			if strings.Contains(h.runs("shagent"), "echo") {
				t.Error("a queued request ran during shutdown")
			}
		})
	}
}

// TestChoriaCheckOrder: the filter is checked before the TTL, as Choria
// does, so an expired request for other nodes counts as filtered, and
// validated counts only requests that passed both.
func TestChoriaCheckOrder(t *testing.T) {
	h := start(t, setup{agents: []string{"shagent"}})
	old := func(e *v1.RequestEnvelope) { e.Time = time.Now().Add(-time.Hour).Unix() }
	other := protocol.NewFilter()
	other.Identity = []string{"someone.else"}

	before := h.host.Stats()
	sreq, id := unsignedWith(t, "discovery", "cGluZw==", other, old)
	h.publish(t, sreq, id, false)
	s := h.host.Stats()
	if s.Filtered != before.Filtered+1 || s.TTLExpired != before.TTLExpired || s.Validated != before.Validated {
		t.Errorf("an expired request for another node: stats %+v, before %+v; want it filtered only", s, before)
	}

	before = s
	sreq, id = unsignedWith(t, "discovery", "cGluZw==", nil, old)
	h.publish(t, sreq, id, false)
	s = h.host.Stats()
	if s.Passed != before.Passed+1 || s.TTLExpired != before.TTLExpired+1 || s.Validated != before.Validated {
		t.Errorf("an expired request for this node: stats %+v, before %+v; want it passed and expired", s, before)
	}

	before = s
	h.call("rpcutil", "ping", `{}`)
	if s = h.host.Stats(); s.Validated != before.Validated+1 || s.Passed != before.Passed+1 {
		t.Errorf("a current request: stats %+v, before %+v; want it passed and validated", s, before)
	}
}

// TestMaxTTL is the regression test for a request dated 1970 with the
// largest TTL, which was executed: the TTL is cut to
// plugin.agent_host.max_ttl first.
func TestMaxTTL(t *testing.T) {
	h := start(t, setup{agents: []string{"shagent"}})
	for _, edit := range []func(*v1.RequestEnvelope){
		func(e *v1.RequestEnvelope) { e.Time, e.TTL = 1, math.MaxInt32 },
		func(e *v1.RequestEnvelope) { e.Time, e.TTL = time.Now().Add(-25*time.Hour).Unix(), 30*24*3600 },
	} {
		before := h.host.Stats().TTLExpired
		sreq, id := unsignedWith(t, "shagent", `{"agent":"shagent","action":"echo","data":{"message":"x"}}`, nil, edit)
		h.publish(t, sreq, id, false)
		if h.host.Stats().TTLExpired != before+1 {
			t.Error("the ancient request was not counted as expired")
		}
	}
	// A current request with a long TTL still runs.
	sreq, id := unsignedWith(t, "shagent", `{"agent":"shagent","action":"echo","data":{"message":"x"}}`, nil, func(e *v1.RequestEnvelope) { e.TTL = 30 * 24 * 3600 })
	wantStatus(t, h.publish(t, sreq, id, true), protocol.OK, "OK")
	if runs := h.runs("shagent"); runs != "echo\n" {
		t.Errorf("runs %q, want only the current request", runs)
	}
}

// TestBuiltinsIgnoreExpiredRequests: built-in agents answer at once, but
// not to requests outside their TTL.
func TestBuiltinsIgnoreExpiredRequests(t *testing.T) {
	h := start(t, setup{})
	for _, agent := range []string{"rpcutil", "discovery"} {
		before := h.host.Stats().TTLExpired
		body := `{"agent":"rpcutil","action":"ping","data":{}}`
		if agent == "discovery" {
			body = "cGluZw=="
		}
		sreq, id := unsignedWith(t, agent, body, nil, func(e *v1.RequestEnvelope) { e.Time = time.Now().Add(-2 * time.Minute).Unix() })
		h.publish(t, sreq, id, false)
		if h.host.Stats().TTLExpired != before+1 {
			t.Errorf("%s: the expired request was not counted", agent)
		}
	}
}

// clock is a host clock a test can move forward.
type clock struct{ offset atomic.Int64 }

func (c *clock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *clock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// TestTTLRecheckedAfterWaiting: a request that expires while it waits for
// a slot is not run, and its caller is told why.
func TestTTLRecheckedAfterWaiting(t *testing.T) {
	var c clock
	h := start(t, setup{agents: []string{"shagent"}, hostOpts: []host.Option{host.WithClock(c.now)}, configure: func(c *config.Config) { c.MaxInFlight = 1 }})
	hang := h.sendHang(t)
	sreq, id := unsigned(t, "shagent", `{"agent":"shagent","action":"echo","data":{"message":"x"}}`, nil)
	echo := h.send(t, sreq, id, "mcollective.node."+node)
	eventually(t, 10*time.Second, "the request was not queued", func() bool { return h.host.Stats().Waiting == 1 })
	before := h.host.Stats().ExpiredWaiting
	c.advance(2 * time.Minute)
	msg, err := echo.NextMsg(20 * time.Second)
	if err != nil {
		t.Fatalf("the request that expired in the queue got no reply: %v", err)
	}
	r := replyBody(t, msg.Data)
	if r.Statuscode != protocol.Aborted || !strings.Contains(r.Statusmsg, node+" is busy: the request expired after waiting") {
		t.Errorf("reply %d %q, want expired while waiting", r.Statuscode, r.Statusmsg)
	}
	if h.host.Stats().ExpiredWaiting != before+1 {
		t.Error("the expiry was not counted")
	}
	if _, err := hang.NextMsg(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(h.runs("shagent"), "echo") {
		t.Error("the expired request ran")
	}
}

// TestDiscoveryAnswersOnlyPing: the discovery agent answers bodies that
// ask for a ping and nothing else, as Choria's does.
func TestDiscoveryAnswersOnlyPing(t *testing.T) {
	h := start(t, setup{})
	before := h.host.Stats().Validated
	sreq, id := unsigned(t, "discovery", "hello", nil)
	sub := h.send(t, sreq, id, "mcollective.node."+node)
	eventually(t, 10*time.Second, "the request was not processed", func() bool { return h.host.Stats().Validated > before })
	if msg, err := sub.NextMsg(300 * time.Millisecond); err == nil {
		t.Fatalf("discovery answered a body without ping: %s", msg.Data)
	}
	sreq, id = unsigned(t, "discovery", `{"agent":"discovery","action":"ping","data":{}}`, nil)
	msg, err := h.send(t, sreq, id, "mcollective.node."+node).NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("the rpc form of a ping got no reply: %v", err)
	}
	if _, r, err := v1.DecodeReply(msg.Data); err != nil || r.Message != "pong" {
		t.Errorf("the rpc form of a ping: %v, %+v", err, r)
	}
}

// events records what the host tells its Events hook.
type events struct {
	mu    sync.Mutex
	calls []string
}

func (e *events) add(s string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls = append(e.calls, s)
}

func (e *events) list() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.calls)
}

func (e *events) Startup(_ context.Context, identity string, agents []string) {
	e.add("startup " + identity + " " + strings.Join(agents, ","))
}
func (e *events) Shutdown(_ context.Context, identity string) { e.add("shutdown " + identity) }
func (e *events) WorkerChanged(_ context.Context, _ string, ev runner.WorkerEvent) {
	e.add("worker " + ev.Kind + " " + ev.Agent)
}
func (e *events) AgentsChanged(_ context.Context, identity string, ch runner.Change) {
	for _, a := range ch.Added {
		e.add("added " + a.Name)
	}
	for _, a := range ch.Removed {
		e.add("removed " + a.Name)
	}
}

// TestEventsAndSubscriptionsFollowAgents: the Events hook hears start-up,
// agent changes and shutdown; an agent's broadcast subscription comes and
// goes with it.
func TestEventsAndSubscriptionsFollowAgents(t *testing.T) {
	ev := &events{}
	h := start(t, setup{agents: []string{"shagent"}, hostOpts: []host.Option{host.WithEvents(ev)}})
	subscribed := func(subject string) bool {
		return slices.ContainsFunc(h.host.Subscriptions(), func(s host.Subscription) bool { return s.Subject == subject })
	}
	if !subscribed("mcollective.broadcast.agent.shagent") {
		t.Fatalf("not subscribed for shagent: %v", h.host.Subscriptions())
	}
	copyAgent(t, "pyagent", h.plugins)
	eventually(t, 15*time.Second, "no subscription for the added agent", func() bool { return subscribed("mcollective.broadcast.agent.pyagent") })
	if err := os.RemoveAll(filepath.Join(h.plugins, "shagent")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "the removed agent's subscription is still there", func() bool { return !subscribed("mcollective.broadcast.agent.shagent") })
	h.stop()
	want := []string{"startup " + node + " choria_util,discovery,rpcutil,shagent", "added pyagent", "removed shagent", "shutdown " + node}
	if got := ev.list(); !slices.Equal(got, want) {
		t.Errorf("events %q, want %q", got, want)
	}
}

// TestOversizedReplies: a reply larger than plugin.agent_host.reply_max_bytes,
// or than the broker accepts, becomes an error reply that gives the size,
// the limit and what to change.
func TestOversizedReplies(t *testing.T) {
	h := start(t, setup{
		agents:    []string{"shagent"},
		natsOpts:  []hosttest.NATSOption{hosttest.WithMaxPayload(64 << 10)},
		configure: func(c *config.Config) { c.ReplyMaxBytes = 200 << 10 },
	})
	r := h.call("shagent", "big", `{"bytes":300000}`)
	if r.Statuscode != protocol.Aborted || !strings.Contains(r.Statusmsg, "its reply of 300052 bytes is larger than the 204800 bytes allowed (plugin.agent_host.reply_max_bytes)") {
		t.Errorf("reply %d %q, want the reply limit with sizes and key", r.Statuscode, r.Statusmsg)
	}
	r = h.call("shagent", "big", `{"bytes":100000}`)
	if r.Statuscode != protocol.Aborted || !strings.Contains(r.Statusmsg, "bytes is larger than the 65536 bytes the broker accepts (its max_payload setting)") || r.Action != "big" {
		t.Errorf("reply %d %q, want the broker's limit", r.Statuscode, r.Statusmsg)
	}
	wantStatus(t, h.call("shagent", "big", `{"bytes":1000}`), protocol.OK, "OK")
}

// TestFederatedReplies: a request relayed by a Choria federation broker
// is answered with its federation header and hops, so the broker can
// route the reply back.
func TestFederatedReplies(t *testing.T) {
	h := start(t, setup{})
	sreq, id := unsigned(t, "rpcutil", `{"agent":"rpcutil","action":"ping","data":{}}`, nil)
	data, err := json.Marshal(sreq)
	if err != nil {
		t.Fatal(err)
	}
	replyTo := "federation.reply." + id
	fed := &v1.FederationHeader{RequestID: id, ReplyTo: client.ReplySubject("mcollective", "choria=rip.mcollective", id), Targets: []string{"mcollective.node." + node}}
	payload, err := json.Marshal(v1.Transport{Protocol: v1.TransportProtocol, Data: data, Headers: v1.TransportHeaders{
		ReplyTo: replyTo, MCSender: "rip.mcollective", SeenBy: [][3]string{{"nats://a", "fedbroker", "nats://b"}}, Federation: fed,
	}})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := h.nc.SubscribeSync(replyTo)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.nc.Publish("mcollective.node."+node, payload); err != nil {
		t.Fatal(err)
	}
	msg, err := sub.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("no reply to the federated request: %v", err)
	}
	tr, _, err := v1.DecodeReply(msg.Data)
	if err != nil {
		t.Fatal(err)
	}
	got := tr.Headers
	if got.Federation == nil || got.Federation.RequestID != id || got.Federation.ReplyTo != fed.ReplyTo || !slices.Equal(got.Federation.Targets, fed.Targets) {
		t.Errorf("federation header %+v, want %+v", got.Federation, fed)
	}
	if len(got.SeenBy) != 2 || got.SeenBy[0][1] != "fedbroker" || got.SeenBy[1][1] != node {
		t.Errorf("seen-by %v, want the broker's hop and then the node's", got.SeenBy)
	}
}

// TestFairAcrossAgents: one slow agent holding slots and flooding the
// queue does not hold up another agent's requests.
func TestFairAcrossAgents(t *testing.T) {
	h := start(t, setup{agents: []string{"shagent", "pyagent"}, longTimeout: true, configure: func(c *config.Config) { c.MaxInFlight = 2 }})
	var hangs []*nats.Subscription
	for range 20 {
		sreq, id := unsigned(t, "shagent", `{"agent":"shagent","action":"hang","data":{}}`, nil)
		hangs = append(hangs, h.send(t, sreq, id, "mcollective.node."+node))
	}
	eventually(t, 10*time.Second, "the slow requests were not taken in", func() bool { s := h.host.Stats(); return s.Waiting+s.Running == 20 })
	wantStatus(t, h.call("pyagent", "defaults", `{}`), protocol.OK, "OK")
	for _, sub := range hangs {
		if msg, err := sub.NextMsg(0); err == nil {
			t.Fatalf("a slow request finished first (%s): the other agent waited for its slot", msg.Data)
		}
	}
}
