package host_test

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agent-host/agent-host/host"
	"github.com/agent-host/agent-host/host/config"
	"github.com/agent-host/agent-host/policy"
	"github.com/agent-host/agent-host/protocol"
)

// notAuthorized is what Choria tells a denied caller, and nothing more.
const notAuthorized = "You are not authorized to call this agent or action"

// authorizer is a test policy: it denies the agents and agent#actions in
// deny, with an error when err is set, and records what it was asked.
type authorizer struct {
	deny []string
	err  error

	mu     sync.Mutex
	inputs []policy.Input
}

func (a *authorizer) Authorize(_ context.Context, in *policy.Input) (policy.Decision, error) {
	a.mu.Lock()
	a.inputs = append(a.inputs, *in)
	a.mu.Unlock()
	if slices.Contains(a.deny, in.Agent) || slices.Contains(a.deny, in.Agent+"#"+in.Action) {
		return policy.Decision{Reason: "the test policy denies " + in.Agent, Policy: "/etc/choria/policies/" + in.Agent + ".policy"}, a.err
	}
	return policy.Decision{Allowed: true, Reason: "the test policy allows", Policy: "/etc/choria/policies/default.policy"}, nil
}

func (a *authorizer) asked() []policy.Input {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.inputs)
}

// callID sends agent#action with data from rip.mcollective and returns
// the reply and the request id.
func (h *harness) callID(t *testing.T, agent, action, data string) (protocol.RPCReply, string) {
	t.Helper()
	body, err := json.Marshal(map[string]any{"agent": agent, "action": action, "data": json.RawMessage(data)})
	if err != nil {
		t.Fatal(err)
	}
	sreq, id := unsigned(t, agent, string(body), nil)
	return h.publish(t, sreq, id, true), id
}

// wantDenied checks that r is exactly Choria's reply to a denied request.
func wantDenied(t *testing.T, r protocol.RPCReply, action string) {
	t.Helper()
	want := protocol.RPCReply{Action: action, Statuscode: protocol.Aborted, Statusmsg: notAuthorized, Data: json.RawMessage("{}")}
	if !reflect.DeepEqual(r, want) {
		t.Errorf("denied reply = %+v (data %s), want %+v", r, r.Data, want)
	}
}

// logLine returns the line of the host log holding msg.
func (h *harness) logLine(t *testing.T, msg string) string {
	t.Helper()
	for line := range strings.Lines(h.logs.String()) {
		if strings.Contains(line, msg) {
			return line
		}
	}
	t.Errorf("the log has no line with %q:\n%s", msg, h.logs.String())
	return ""
}

// TestAuthorizationDenied: a denied request gets exactly Choria's reply and
// never runs; the log says who was denied what, why and by which policy
// file, as Choria's line does. An authorizer's error denies too.
func TestAuthorizationDenied(t *testing.T) {
	for _, tc := range []struct {
		name, reason string
		err          error
	}{
		{"denied", `reason="the test policy denies shagent"`, nil},
		{"error", `reason="policy broken"`, errors.New("policy broken")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			authz := &authorizer{deny: []string{"shagent"}, err: tc.err}
			h := start(t, setup{agents: []string{"shagent"}, hostOpts: []host.Option{host.WithAuthorizer(authz)}})
			r, id := h.callID(t, "shagent", "echo", `{"message":"x"}`)
			wantDenied(t, r, "echo")
			if _, err := os.Stat(filepath.Join(h.plugins, "shagent", "runs")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the denied request ran: the agent's marker file exists (%v): %q", err, h.runs("shagent"))
			}
			line := h.logLine(t, "Denying choria=rip.mcollective access to shagent#echo based on authorization policy for request "+id)
			for _, want := range []string{"level=WARN", `callerid="choria=rip.mcollective"`, "agent=shagent", "action=echo", "requestid=" + id, tc.reason, "policy=/etc/choria/policies/shagent.policy"} {
				if !strings.Contains(line, want) {
					t.Errorf("the denial line lacks %s: %s", want, line)
				}
			}
			if in := authz.asked(); len(in) != 1 {
				t.Errorf("the authorizer was asked %d times, want once: %+v", len(in), in)
			}
		})
	}
}

// TestAuthorizationBuiltins: rpcutil is authorized like any agent, and
// denied; discovery is answered without asking, as in Choria; an unknown
// action is refused with code 2 before authorization, as in Choria.
func TestAuthorizationBuiltins(t *testing.T) {
	authz := &authorizer{deny: []string{"rpcutil", "shagent", "discovery"}}
	h := start(t, setup{agents: []string{"shagent"}, hostOpts: []host.Option{host.WithAuthorizer(authz)}})

	r, id := h.callID(t, "rpcutil", "ping", `{}`)
	wantDenied(t, r, "ping")
	h.logLine(t, "Denying choria=rip.mcollective access to rpcutil#ping based on authorization policy for request "+id)
	wantDenied(t, h.call("rpcutil", "inventory", `{}`), "inventory")

	if !h.discovers(t, nil) {
		t.Error("discovery did not answer a ping")
	}
	wantStatus(t, h.call("shagent", "nope", `{}`), protocol.UnknownAction, "Unknown action nope for agent shagent")
	wantStatus(t, h.call("rpcutil", "nope", `{}`), protocol.UnknownAction, "Unknown action nope for agent rpcutil")

	var asked []string
	for _, in := range authz.asked() {
		asked = append(asked, in.Agent+"#"+in.Action)
	}
	if want := []string{"rpcutil#ping", "rpcutil#inventory"}; !reflect.DeepEqual(asked, want) {
		t.Errorf("the authorizer was asked about %q, want only %q", asked, want)
	}
	if h.runs("shagent") != "" {
		t.Errorf("shagent ran: %q", h.runs("shagent"))
	}
}

// TestAuthorizationOtherAgent: a request whose body names another agent
// than the one it is addressed to is denied without asking the policy, as
// Choria denies it.
func TestAuthorizationOtherAgent(t *testing.T) {
	authz := &authorizer{}
	h := start(t, setup{agents: []string{"shagent"}, hostOpts: []host.Option{host.WithAuthorizer(authz)}})
	sreq, id := unsigned(t, "shagent", `{"agent":"rpcutil","action":"echo","data":{"message":"x"}}`, nil)
	wantDenied(t, h.publish(t, sreq, id, true), "echo")
	line := h.logLine(t, "Denying choria=rip.mcollective access to shagent#echo based on authorization policy for request "+id)
	if !strings.Contains(line, "the request body names agent rpcutil, not shagent") {
		t.Errorf("the denial does not say why: %s", line)
	}
	if len(authz.asked()) != 0 || h.runs("shagent") != "" {
		t.Errorf("the policy was asked (%+v) or the agent ran (%q)", authz.asked(), h.runs("shagent"))
	}
}

// TestAuthorizationInput: the authorizer sees the request as Choria's
// Rego input document has it; an allowed request runs.
func TestAuthorizationInput(t *testing.T) {
	authz := &authorizer{}
	h := start(t, setup{agents: []string{"shagent"}, hostOpts: []host.Option{host.WithAuthorizer(authz)}})
	if d := dataOf(t, h.call("shagent", "echo", `{"message":"hi"}`)); d["message"] != "hi" {
		t.Errorf("the allowed request: %v", d)
	}
	in := authz.asked()
	if len(in) != 1 {
		t.Fatalf("asked %d times: %+v", len(in), in)
	}
	got := in[0]
	if got.Agent != "shagent" || got.Action != "echo" || got.CallerID != "choria=rip.mcollective" || got.Collective != "mcollective" || got.TTL <= 0 || got.ProvisionMode {
		t.Errorf("input = %+v", got)
	}
	if string(got.Data) != `{"message":"hi"}` {
		t.Errorf("input data = %s", got.Data)
	}
	if time.Since(got.Time) > time.Minute {
		t.Errorf("input time = %s", got.Time)
	}
	if !strings.Contains(string(got.Facts), `"role":"web"`) || !slices.Contains(got.Classes, "roles::web") {
		t.Errorf("input facts %s, classes %q", got.Facts, got.Classes)
	}
	if want := []string{"choria_util", "discovery", "rpcutil", "shagent"}; !reflect.DeepEqual(got.Agents, want) {
		t.Errorf("input agents = %q, want %q", got.Agents, want)
	}
	if b, _ := json.Marshal(got); !strings.Contains(string(b), `"provision_mode":false`) || !strings.Contains(string(b), `"callerid":"choria=rip.mcollective"`) {
		t.Errorf("input document %s", b)
	}
}

// TestAuthorizerSelection: the configuration picks the authorizer as
// Choria's does, and the host says which at start-up: off warns loudly and
// allows, a provider no authorizer has denies everything, rego_policy and
// action_policy (in any case) read the policies beside the configuration
// file, which here has none, so they deny as Choria's do.
func TestAuthorizerSelection(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "server.conf")
	tests := []struct {
		name     string
		on       bool
		provider string
		startup  string // the start-up line
		allowed  bool
		reason   string // in the denial line, when set
	}{
		{"off", false, "action_policy", `level=WARN msg="AUTHORIZATION DISABLED: authorization is off (rpcauthorization = false)`, true, ""},
		{"unknown provider", true, "aaasvc", `level=ERROR msg="unsupported authorization provider \"aaasvc\": every request will be denied"`, false, `reason="unsupported authorization provider: aaasvc"`},
		{"action_policy", true, "action_policy", `level=INFO msg="authorizing with actionpolicy files from ` + filepath.Join(dir, "policies") + ` `, false, ""},
		{"action_policy in capitals", true, "ACTION_POLICY", `level=INFO msg="authorizing with actionpolicy files from ` + filepath.Join(dir, "policies") + ` `, false, ""},
		{"rego_policy in Choria's title case", true, "Rego_policy", `level=INFO msg="authorizing with Rego policies from ` + filepath.Join(dir, "policies", "rego") + ` `, false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := start(t, setup{agents: []string{"shagent"}, configure: func(c *config.Config) {
				c.RPCAuthorization, c.RPCAuthProvider, c.ConfigFile = tc.on, tc.provider, conf
			}})
			h.logLine(t, tc.startup)
			r, id := h.callID(t, "shagent", "echo", `{"message":"x"}`)
			if tc.allowed {
				if r.Statuscode != protocol.OK || h.runs("shagent") != "echo\n" {
					t.Errorf("with authorization off the request was not run: %+v, runs %q", r, h.runs("shagent"))
				}
				return
			}
			wantDenied(t, r, "echo")
			wantDenied(t, h.call("rpcutil", "ping", `{}`), "ping")
			if h.runs("shagent") != "" {
				t.Errorf("the denied request ran: %q", h.runs("shagent"))
			}
			line := h.logLine(t, "Denying choria=rip.mcollective access to shagent#echo based on authorization policy for request "+id)
			if !strings.Contains(line, tc.reason) {
				t.Errorf("the denial line lacks %s: %s", tc.reason, line)
			}
		})
	}
}

// TestAudit: with rpcaudit on, every authorized request is appended to
// plugin.rpcaudit.logfile (mode 0600) before it runs, one JSON object per
// line with Choria's keys; denied requests are not, nor are discovery
// pings or unknown actions. A request that then fails validation was
// authorized, so it is audited, as in Choria, which validates in the action.
func TestAudit(t *testing.T) {
	logfile := filepath.Join(t.TempDir(), "audit", "rpcaudit.log")
	if err := os.MkdirAll(filepath.Dir(logfile), 0o700); err != nil {
		t.Fatal(err)
	}
	authz := &authorizer{deny: []string{"rpcutil#inventory"}}
	h := start(t, setup{agents: []string{"shagent"}, hostOpts: []host.Option{host.WithAuthorizer(authz)}, configure: func(c *config.Config) {
		c.RPCAudit, c.RPCAuditLogfile = true, logfile
	}})
	h.logLine(t, "auditing every authorized request")

	before := time.Now().Unix()
	_, echoID := h.callID(t, "shagent", "echo", `{"message":"audited"}`)
	_, pingID := h.callID(t, "rpcutil", "ping", `{}`)
	wantDenied(t, h.call("rpcutil", "inventory", `{}`), "inventory")
	wantStatus(t, h.call("shagent", "nope", `{}`), protocol.UnknownAction, "Unknown action nope for agent shagent")
	if !h.discovers(t, nil) {
		t.Error("discovery did not answer")
	}
	r, badID := h.callID(t, "shagent", "echo", `{"message":"a;b"}`)
	if r.Statuscode != protocol.Aborted || !strings.HasPrefix(r.Statusmsg, "Validation failed") {
		t.Errorf("the invalid request: %+v", r)
	}

	st, err := os.Stat(logfile)
	if err != nil {
		t.Fatalf("the audit log: %v", err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("the audit log has mode %v, want 0600", st.Mode().Perm())
	}
	b, err := os.ReadFile(logfile)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	want := []struct{ id, agent, action, data string }{
		{echoID, "shagent", "echo", `{"message":"audited"}`},
		{pingID, "rpcutil", "ping", `{}`},
		{badID, "shagent", "echo", `{"message":"a;b"}`},
	}
	if len(lines) != len(want) {
		t.Fatalf("the audit log has %d lines, want %d:\n%s", len(lines), len(want), b)
	}
	keys := []string{"action", "agent", "caller", "data", "request_id", "request_time", "sender", "timestamp"}
	for i, line := range lines {
		var m map[string]json.RawMessage
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("audit line %d is not a JSON object: %v\n%s", i, err, line)
		}
		if got := slices.Sorted(maps.Keys(m)); !reflect.DeepEqual(got, keys) {
			t.Errorf("audit line %d has keys %q, want Choria's %q", i, got, keys)
		}
		var a struct {
			Timestamp   string          `json:"timestamp"`
			RequestID   string          `json:"request_id"`
			RequestTime int64           `json:"request_time"`
			Caller      string          `json:"caller"`
			Sender      string          `json:"sender"`
			Agent       string          `json:"agent"`
			Action      string          `json:"action"`
			Data        json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal([]byte(line), &a); err != nil {
			t.Fatal(err)
		}
		w := want[i]
		if a.RequestID != w.id || a.Agent != w.agent || a.Action != w.action || string(a.Data) != w.data ||
			a.Caller != "choria=rip.mcollective" || a.Sender != "rip.mcollective" {
			t.Errorf("audit line %d = %s, want request %s %s#%s data %s", i, line, w.id, w.agent, w.action, w.data)
		}
		if a.RequestTime < before-1 || a.RequestTime > time.Now().Unix() {
			t.Errorf("audit line %d request_time %d", i, a.RequestTime)
		}
		ts, err := time.Parse("2006-01-02T15:04:05.000000-0700", a.Timestamp)
		if err != nil || !strings.HasSuffix(a.Timestamp, "+0000") || time.Since(ts) > time.Minute {
			t.Errorf("audit line %d timestamp %q is not Choria's UTC microsecond format: %v", i, a.Timestamp, err)
		}
	}
}

// TestAuditFailureIsNotFatal: an audit log that cannot be written is
// logged, and the request runs all the same, as in Choria.
func TestAuditFailureIsNotFatal(t *testing.T) {
	logfile := filepath.Join(t.TempDir(), "missing", "rpcaudit.log")
	h := start(t, setup{agents: []string{"shagent"}, configure: func(c *config.Config) {
		c.RPCAudit, c.RPCAuditLogfile = true, logfile
	}})
	if d := dataOf(t, h.call("shagent", "echo", `{"message":"x"}`)); d["message"] != "x" {
		t.Errorf("the request did not run: %v", d)
	}
	h.logLine(t, "auditing the request failed; it runs unaudited")
}
