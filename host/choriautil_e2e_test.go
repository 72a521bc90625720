package host_test

import (
	"encoding/json"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/agent-host/agent-host/host"
	"github.com/agent-host/agent-host/host/builtin"
	"github.com/agent-host/agent-host/protocol"
)

// TestChoriaUtilInfo: choria_util info answers with every output its DDL
// declares, and with the host's own connection: the broker it is on, its
// options and counters, which count a reconnection after the broker
// restarts.
func TestChoriaUtilInfo(t *testing.T) {
	h := start(t, setup{})
	d, ok := builtin.DDL(builtin.ChoriaUtil)
	if !ok {
		t.Fatal("no choria_util DDL")
	}

	var info map[string]any
	decode(t, h.call("choria_util", "info", `{}`), &info)
	want := slices.Sorted(maps.Keys(d.Action("info").Output))
	if got := slices.Sorted(maps.Keys(info)); !slices.Equal(got, want) {
		t.Errorf("info keys = %v, want the DDL's %v", got, want)
	}
	for k, v := range map[string]any{
		"security":         "insecure",
		"secure_protocol":  false,
		"connector":        "nats",
		"connector_tls":    false,
		"connected_server": h.nats.URL(),
		"client_version":   nats.Version,
		"choria_version":   "agent-host " + host.Version,
		"using_srv":        false,
	} {
		if info[k] != v {
			t.Errorf("info %s = %v, want %v", k, info[k], v)
		}
	}
	opts, _ := info["client_options"].(map[string]any)
	if opts["max_reconnect_attempts"] != -1.0 || opts["allow_reconnect"] != true || opts["name"] != "agent-host "+node {
		t.Errorf("client_options = %v", opts)
	}
	if servers, _ := info["middleware_servers"].([]any); len(servers) != 1 || servers[0] != h.nats.URL()[len("nats://"):] {
		t.Errorf("middleware_servers = %v, want the broker as host:port", info["middleware_servers"])
	}

	h.nats.Restart(t)
	var stats struct {
		Reconnects uint64 `json:"reconnects"`
		InMsgs     uint64 `json:"in_msgs"`
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, ok := h.tryCall("choria_util", "info", `{}`, time.Second)
		if ok {
			var got struct {
				Stats json.RawMessage `json:"client_stats"`
			}
			decode(t, r, &got)
			if err := json.Unmarshal(got.Stats, &stats); err != nil {
				t.Fatal(err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("choria_util info did not answer after the broker restarted")
		}
	}
	if stats.Reconnects != 1 || stats.InMsgs < 2 {
		t.Errorf("client_stats after a broker restart = %+v, want 1 reconnect and the requests counted", stats)
	}
}

// TestChoriaUtilMachines: agent-host runs no autonomous agents, and says
// so as Choria does when it runs none.
func TestChoriaUtilMachines(t *testing.T) {
	h := start(t, setup{})
	var states struct {
		IDs    []string       `json:"machine_ids"`
		Names  []string       `json:"machine_names"`
		States map[string]any `json:"states"`
	}
	decode(t, h.call("choria_util", "machine_states", `{}`), &states)
	if states.IDs == nil || states.Names == nil || states.States == nil || len(states.IDs)+len(states.Names)+len(states.States) != 0 {
		t.Errorf("machine_states = %+v, want empty lists and map", states)
	}
	wantStatus(t, h.call("choria_util", "machine_state", `{"name":"x1"}`), protocol.Aborted, "No running machines")
	wantStatus(t, h.call("choria_util", "machine_transition", `{"name":"x1","transition":"go"}`), protocol.Aborted, "Could not perform go transition: agent-host runs no autonomous agents")
	// The DDL is checked as for any agent: transition is required.
	wantStatus(t, h.call("choria_util", "machine_transition", `{"name":"x1"}`), protocol.Aborted, "Validation failed: input 'transition' is required")
}

// TestChoriaUtilAuthorized: choria_util is authorized like rpcutil.
func TestChoriaUtilAuthorized(t *testing.T) {
	authz := &authorizer{deny: []string{"choria_util"}}
	h := start(t, setup{hostOpts: []host.Option{host.WithAuthorizer(authz)}})
	wantDenied(t, h.call("choria_util", "info", `{}`), "info")
	if in := authz.asked(); len(in) != 1 || in[0].Agent != "choria_util" || in[0].Action != "info" {
		t.Errorf("the authorizer was asked %+v, want choria_util#info once", in)
	}
}
