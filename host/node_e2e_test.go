package host_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/agent-host/agent-host/host/config"
	"github.com/agent-host/agent-host/protocol"
	v1 "github.com/agent-host/agent-host/protocol/v1"
)

func TestDiscoveryFilters(t *testing.T) {
	h := start(t, setup{agents: []string{"shagent"}})
	cases := []struct {
		name  string
		build func(f *protocol.Filter)
		match bool
	}{
		{"empty filter", func(*protocol.Filter) {}, true},
		{"identity", func(f *protocol.Filter) { f.Identity = []string{node} }, true},
		{"other identity", func(f *protocol.Filter) { f.Identity = []string{"node2.example.net"} }, false},
		{"identity regex", func(f *protocol.Filter) { f.Identity = []string{"/^node\\d/"} }, true},
		{"agent", func(f *protocol.Filter) { f.Agent = []string{"shagent", "rpcutil"} }, true},
		{"missing agent", func(f *protocol.Filter) { f.Agent = []string{"shagent", "puppet"} }, false},
		{"fact", func(f *protocol.Filter) {
			f.Fact = []protocol.FactFilter{{Fact: "os.family", Operator: "==", Value: "Debian"}}
		}, true},
		{"fact mismatch", func(f *protocol.Filter) {
			f.Fact = []protocol.FactFilter{{Fact: "os.family", Operator: "==", Value: "RedHat"}}
		}, false},
		{"numeric fact", func(f *protocol.Filter) { f.Fact = []protocol.FactFilter{{Fact: "cpus", Operator: ">=", Value: "4"}} }, true},
		{"class", func(f *protocol.Filter) { f.Class = []string{"roles::web"} }, true},
		{"class regex", func(f *protocol.Filter) { f.Class = []string{"/profiles/"} }, true},
		{"class mismatch", func(f *protocol.Filter) { f.Class = []string{"roles::db"} }, false},
		{"compound", func(f *protocol.Filter) {
			f.Compound = [][]map[string]string{{{"expr": `with("role=web") && "roles::web" in classes`}}}
		}, true},
		{"compound false", func(f *protocol.Filter) {
			f.Compound = [][]map[string]string{{{"expr": `fact("os.family") == "RedHat"`}}}
		}, false},
		{"every category", func(f *protocol.Filter) {
			f.Identity = []string{node}
			f.Agent = []string{"shagent"}
			f.Class = []string{"roles::web"}
			f.Fact = []protocol.FactFilter{{Fact: "role", Operator: "=~", Value: "/^we/"}}
		}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := protocol.NewFilter()
			tc.build(f)
			if got := h.discovers(t, f); got != tc.match {
				t.Errorf("discovered = %v, want %v", got, tc.match)
			}
		})
	}
	if s := h.host.Stats(); s.Filtered == 0 || s.Passed == 0 {
		t.Errorf("stats did not count filtered and passed requests: %+v", s)
	}
}

func TestRPCUtil(t *testing.T) {
	h := start(t, setup{agents: []string{"shagent"}, configure: func(c *config.Config) {
		c.Collectives = []string{"mcollective", "other"}
		c.NATSPass = "s3cret"
	}})

	t.Run("ping", func(t *testing.T) {
		var d struct{ Pong int64 }
		decode(t, h.call("rpcutil", "ping", `{}`), &d)
		if time.Since(time.Unix(d.Pong, 0)).Abs() > time.Minute {
			t.Errorf("pong = %d", d.Pong)
		}
	})
	t.Run("collective_info", func(t *testing.T) {
		r := h.call("rpcutil", "collective_info", `{}`)
		if want := `{"collectives":["mcollective","other"],"main_collective":"mcollective"}`; string(r.Data) != want {
			t.Errorf("data = %s, want %s", r.Data, want)
		}
	})
	t.Run("get_fact", func(t *testing.T) {
		r := h.call("rpcutil", "get_fact", `{"fact":"os.family"}`)
		if want := `{"fact":"os.family","value":"Debian"}`; string(r.Data) != want {
			t.Errorf("data = %s, want %s", r.Data, want)
		}
		r = h.call("rpcutil", "get_fact", `{"fact":"no.such"}`)
		if want := `{"fact":"no.such","value":null}`; string(r.Data) != want {
			t.Errorf("data = %s, want %s", r.Data, want)
		}
	})
	t.Run("get_fact requires fact", func(t *testing.T) {
		wantStatus(t, h.call("rpcutil", "get_fact", `{}`), protocol.Aborted, "Validation failed: input 'fact' is required")
	})
	t.Run("get_facts", func(t *testing.T) {
		r := h.call("rpcutil", "get_facts", `{"facts":"role, cpus"}`)
		if want := `{"values":{"cpus":4,"role":"web"}}`; string(r.Data) != want {
			t.Errorf("data = %s, want %s", r.Data, want)
		}
	})
	t.Run("fact paths the facts would be reprocessed for", func(t *testing.T) {
		for _, data := range []string{`{"fact":"os|@reverse"}`, `{"facts":"role,@this"}`} {
			action := "get_fact"
			if strings.Contains(data, "facts") {
				action = "get_facts"
			}
			// The DDL's validation refuses them first; the agent would too.
			r := h.call("rpcutil", action, data)
			if r.Statuscode != protocol.Aborted || !strings.Contains(r.Statusmsg, "Validation failed") {
				t.Errorf("%s %s: %d %q, want refused", action, data, r.Statuscode, r.Statusmsg)
			}
		}
		r := h.call("rpcutil", "get_facts", `{"facts":"`+strings.Repeat("a,", 300)+`a"}`)
		wantStatus(t, r, protocol.Aborted, "Cannot look up 301 facts at once; the most is 256")
	})
	t.Run("inventory", func(t *testing.T) {
		var d struct {
			Agents         []string
			Classes        []string
			Collectives    []string
			Facts          map[string]any
			MainCollective string   `json:"main_collective"`
			DataPlugins    []string `json:"data_plugins"`
			Machines       []any
		}
		decode(t, h.call("rpcutil", "inventory", `{}`), &d)
		if !slices.Equal(d.Agents, []string{"choria_util", "discovery", "rpcutil", "shagent"}) ||
			!slices.Equal(d.Classes, []string{"profiles::base", "roles::web"}) ||
			d.Facts["role"] != "web" || d.MainCollective != "mcollective" || d.DataPlugins == nil || d.Machines == nil {
			t.Errorf("inventory = %+v", d)
		}
	})
	t.Run("agent_inventory", func(t *testing.T) {
		var d struct{ Agents []map[string]any }
		decode(t, h.call("rpcutil", "agent_inventory", `{}`), &d)
		names := []string{}
		for _, a := range d.Agents {
			names = append(names, fmt.Sprint(a["agent"]))
			if a["agent"] == "shagent" && (a["timeout"] != 2.0 || a["provider"] != "external" || a["version"] != "1.0.0") {
				t.Errorf("shagent metadata = %v", a)
			}
		}
		if !slices.Equal(names, []string{"choria_util", "discovery", "rpcutil", "shagent"}) {
			t.Errorf("agents = %v", names)
		}
	})
	t.Run("daemon_stats", func(t *testing.T) {
		var d map[string]any
		decode(t, h.call("rpcutil", "daemon_stats", `{}`), &d)
		for _, k := range []string{"agents", "configfile", "filtered", "passed", "pid", "replies", "starttime", "threads", "times", "total", "ttlexpired", "unvalidated", "validated", "version", "dropped"} {
			if _, ok := d[k]; !ok {
				t.Errorf("daemon_stats lacks %s: %v", k, d)
			}
		}
		if d["total"].(float64) < 1 {
			t.Errorf("total = %v", d["total"])
		}
	})
	t.Run("get_config_item", func(t *testing.T) {
		r := h.call("rpcutil", "get_config_item", `{"item":"identity"}`)
		if want := `{"item":"identity","value":"` + node + `"}`; string(r.Data) != want {
			t.Errorf("data = %s, want %s", r.Data, want)
		}
		r = h.call("rpcutil", "get_config_item", `{"item":"plugin.nats.pass"}`)
		if strings.Contains(string(r.Data), "s3cret") {
			t.Errorf("a secret leaked: %s", r.Data)
		}
		wantStatus(t, h.call("rpcutil", "get_config_item", `{"item":"no.such.key"}`), protocol.Aborted, "Unknown key")
	})
	t.Run("other collective", func(t *testing.T) {
		nodes, err := h.clientIn("other").Discover(context.Background(), nil, time.Second)
		if err != nil || !slices.Equal(nodes, []string{node}) {
			t.Errorf("discovery in collective other: %v %v", nodes, err)
		}
	})
}

func decode(t *testing.T, r protocol.RPCReply, v any) {
	t.Helper()
	if r.Statuscode != protocol.OK {
		t.Fatalf("reply %d %q", r.Statuscode, r.Statusmsg)
	}
	if err := json.Unmarshal(r.Data, v); err != nil {
		t.Fatalf("%s: %v", r.Data, err)
	}
}

func TestReconnect(t *testing.T) {
	h := start(t, setup{agents: []string{"shagent"}})
	wantStatus(t, h.call("shagent", "echo", `{"message":"before"}`), protocol.OK, "OK")
	h.nats.Restart(t)
	eventually(t, 30*time.Second, "the host did not serve again after the broker restarted", func() bool {
		r, ok := h.tryCall("shagent", "echo", `{"message":"after"}`, time.Second)
		return ok && r.Statuscode == protocol.OK
	})
	if !strings.Contains(h.logs.String(), "reconnected to broker") {
		t.Error("the reconnect was not logged")
	}
}

// TestOverloadGetsBusyReplies: requests beyond what the queue holds are
// answered at once that the node is busy, never dropped in silence.
func TestOverloadGetsBusyReplies(t *testing.T) {
	h := start(t, setup{agents: []string{"shagent"}, longTimeout: true, configure: func(c *config.Config) {
		c.MaxInFlight = 1
		c.QueueLimit = 4 // 2 per agent
	}})
	h.sendHang(t)
	eventually(t, 10*time.Second, "the first request did not take the slot", func() bool { return h.host.Stats().Running == 1 })
	const sent = 29
	var subs []*nats.Subscription
	for range sent {
		sreq, id := unsigned(t, "shagent", `{"agent":"shagent","action":"hang","data":{}}`, nil)
		subs = append(subs, h.send(t, sreq, id, "mcollective.node."+node))
	}
	eventually(t, 10*time.Second, "the requests beyond the queue were not refused", func() bool { return h.host.Stats().Busy == sent-2 })
	if s := h.host.Stats(); s.Waiting != 2 || s.Running != 1 {
		t.Errorf("stats %+v; want 2 waiting and 1 running", s)
	}
	// The busy replies come at once, long before the first hang ends.
	busy := 0
	for _, sub := range subs {
		msg, err := sub.NextMsg(200 * time.Millisecond)
		if err != nil {
			continue
		}
		r := replyBody(t, msg.Data)
		if r.Statuscode != protocol.Aborted || !strings.Contains(r.Statusmsg, node+" is busy: 2 requests for shagent are already waiting") || r.Action != "hang" {
			t.Errorf("reply %d %q, want busy", r.Statuscode, r.Statusmsg)
		}
		busy++
	}
	if busy != sent-2 {
		t.Errorf("%d busy replies, want %d", busy, sent-2)
	}
}

// TestIntakeCountsWholeMessages: what a message came with counts against
// plugin.agent_host.pending_bytes, headers included, though Choria sends
// none: a flood of small requests with large headers is dropped too.
func TestIntakeCountsWholeMessages(t *testing.T) {
	// A bound smaller than one message with its headers, but far larger
	// than its body: only counting the whole message refuses it, and it
	// is refused whatever the timing, even into an empty intake.
	h := start(t, setup{configure: func(c *config.Config) {
		c.PendingLimit = 1 << 20
		c.PendingBytes = 64 << 10
	}})
	sreq, _ := unsigned(t, "rpcutil", `{"agent":"rpcutil","action":"ping","data":{}}`, nil)
	payload, err := v1.EncodeRequest(sreq, nats.NewInbox(), "rip.mcollective")
	if err != nil {
		t.Fatal(err)
	}
	if len(payload) > 8<<10 {
		t.Fatalf("the request's body is %d bytes, too close to the bound", len(payload))
	}
	header := nats.Header{"X-Padding": []string{strings.Repeat("x", 100<<10)}}
	const sent = 100
	for range sent {
		if err := h.nc.PublishMsg(&nats.Msg{Subject: "mcollective.node." + node, Data: payload, Header: header}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 20*time.Second, "the flood was not taken in", func() bool { s := h.host.Stats(); return s.Total+s.Dropped == sent })
	if s := h.host.Stats(); s.IntakeDropped != sent {
		t.Fatalf("%d messages of 100 KiB headers and a small body through a 64 KiB intake: %d dropped, want all (stats %+v)", sent, s.IntakeDropped, s)
	}
	// The same request without the padding fits.
	wantStatus(t, h.call("rpcutil", "ping", `{}`), protocol.OK, "OK")
}

// TestIntakeOverflowIsCounted: messages arriving faster than they can be
// decoded, beyond plugin.agent_host.pending_limit, are dropped unread,
// counted and logged, as NATS drops them for a slow consumer.
func TestIntakeOverflowIsCounted(t *testing.T) {
	h := start(t, setup{configure: func(c *config.Config) { c.PendingLimit = 1 }})
	sreq, _ := unsigned(t, "rpcutil", `{"agent":"rpcutil","action":"ping","data":{}}`, nil)
	payload, err := v1.EncodeRequest(sreq, nats.NewInbox(), "rip.mcollective")
	if err != nil {
		t.Fatal(err)
	}
	for range 5000 {
		if err := h.nc.Publish("mcollective.node."+node, payload); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "the flood was not taken in", func() bool { s := h.host.Stats(); return s.Total+s.Dropped == 5000 })
	if h.host.Stats().IntakeDropped == 0 {
		t.Fatal("no drop was counted")
	}
	if !strings.Contains(h.logs.String(), "requests dropped: more are waiting to be decoded than plugin.agent_host.pending_limit") {
		t.Error("the drop was not logged")
	}
	wantStatus(t, h.call("rpcutil", "ping", `{}`), protocol.OK, "OK")
}

func TestServiceAgent(t *testing.T) {
	h := start(t, setup{configure: func(c *config.Config) { c.AgentSettle = 0 }})
	b, err := os.ReadFile(filepath.Join("..", "testdata", "e2e", "agents", "shagent", "shagent.json"))
	if err != nil {
		t.Fatal(err)
	}
	copyAgent(t, "shagent", h.plugins)
	service := strings.Replace(string(b), `"provider": "external"`, `"provider": "external", "service": true`, 1)
	writeFile(t, filepath.Join(h.plugins, "shagent", "shagent.json"), service)
	eventually(t, 15*time.Second, "the service agent was not loaded", func() bool {
		return strings.Contains(string(h.call("rpcutil", "agent_inventory", `{}`).Data), `"service":true`)
	})
	subjects := map[string]string{}
	for _, s := range h.host.Subscriptions() {
		subjects[s.Subject] = s.Queue
	}
	if q, ok := subjects["mcollective.broadcast.service.shagent"]; !ok || q != "shagent" {
		t.Errorf("subscriptions %v: want mcollective.broadcast.service.shagent in queue group shagent", subjects)
	}
	if _, ok := subjects["mcollective.broadcast.agent.shagent"]; ok {
		t.Errorf("a service agent is also subscribed on its broadcast.agent subject: %v", subjects)
	}
	sreq, id := unsigned(t, "shagent", `{"agent":"shagent","action":"echo","data":{"message":"served"}}`, nil)
	msg, err := h.send(t, sreq, id, "mcollective.broadcast.service.shagent").NextMsg(20 * time.Second)
	if err != nil {
		t.Fatalf("no reply on the service subject: %v", err)
	}
	if !strings.Contains(string(msg.Data), "mc_sender") {
		t.Errorf("reply %s", msg.Data)
	}
}

// TestBuiltinsAnswerWhenSlotsAreBusy: with every in-flight slot held by a
// slow agent and a deep queue behind it, the node must still answer
// rpcutil and discovery at once, or it would vanish from `choria ping`
// under load.
func TestBuiltinsAnswerWhenSlotsAreBusy(t *testing.T) {
	h := start(t, setup{agents: []string{"shagent"}, longTimeout: true, configure: func(c *config.Config) { c.MaxInFlight = 1 }})
	hangReply := h.sendHang(t)
	for range 100 {
		sreq, id := unsigned(t, "shagent", `{"agent":"shagent","action":"hang","data":{}}`, nil)
		h.send(t, sreq, id, "mcollective.node."+node)
	}
	eventually(t, 10*time.Second, "the requests were not queued", func() bool { return h.host.Stats().Waiting == 100 })

	wantStatus(t, h.call("rpcutil", "ping", `{}`), protocol.OK, "OK")
	if !h.discovers(t, nil) {
		t.Error("discovery did not answer")
	}
	if s := h.host.Stats(); s.Running != 1 || s.Waiting != 100 {
		t.Fatalf("stats %+v: the built-ins were answered only after agent requests ran", s)
	}
	if msg, err := hangReply.NextMsg(0); err == nil {
		t.Fatalf("the hanging request finished first (%s): built-ins waited for its slot", msg.Data)
	}
	h.stop()
	if _, err := hangReply.NextMsg(20 * time.Second); err != nil {
		t.Errorf("the hanging request never got a reply: %v", err)
	}
}
