package interop

import (
	"context"
	"encoding/json"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/choria-io/go-choria/choria"
	"github.com/choria-io/go-choria/client/discovery"
	"github.com/choria-io/go-choria/filter"
	"github.com/choria-io/go-choria/filter/facts"
	"github.com/choria-io/go-choria/protocol"
	"github.com/choria-io/go-choria/providers/agent/mcorpc"
	rpc "github.com/choria-io/go-choria/providers/agent/mcorpc/client"
)

// callTimeout bounds one discovery plus request; the client's own
// timeouts (discovery_timeout + the DDL's timeout) end it much sooner.
const callTimeout = 60 * time.Second

// filters are the selection flags of `choria req` / `choria discover`.
type filters struct {
	facts, classes, agents, identities, combined []string
	compound                                     string
}

func (f filters) options(fw *choria.Framework) *discovery.StandardOptions {
	fo := discovery.NewStandardOptions()
	fo.FactFilter = f.facts
	fo.ClassFilter = f.classes
	fo.AgentFilter = f.agents
	fo.IdentityFilter = f.identities
	fo.CombinedFilter = f.combined
	fo.CompoundFilter = f.compound
	fo.SetDefaultsFromChoria(fw)
	return fo
}

// discover selects nodes as `choria discover` does: the default (mc,
// broadcast) method with an implicit rpcutil agent filter.
func discover(t *testing.T, fw *choria.Framework, f filters) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
	defer cancel()
	fo := f.options(fw)
	nodes, _, err := fo.Discover(ctx, fw, "rpcutil", false, false, fw.Logger("discovery"))
	if err != nil {
		t.Fatalf("discovery with %+v: %v", f, err)
	}
	slices.Sort(nodes)
	return nodes
}

// reply is one answer as the client library hands it to a reply handler.
type reply struct {
	sender string
	*rpc.RPCReply
}

// result is what one request produced.
type result struct {
	replies []reply
	stats   *rpc.Stats
}

// bySender returns the reply from sender, failing the test if there is
// not exactly one.
func (r result) bySender(t *testing.T, sender string) reply {
	t.Helper()
	var found []reply
	for _, rep := range r.replies {
		if rep.sender == sender {
			found = append(found, rep)
		}
	}
	if len(found) != 1 {
		t.Fatalf("got %d replies from %s, want 1 (all replies: %v)", len(found), sender, r.senders())
	}
	return found[0]
}

func (r result) senders() []string {
	var s []string
	for _, rep := range r.replies {
		s = append(s, rep.sender)
	}
	slices.Sort(s)
	return s
}

// do runs one request through the mcorpc client, collecting every reply.
// Without a Targets option the client discovers first.
func do(t *testing.T, fw *choria.Framework, agent, action string, input any, opts ...rpc.RequestOption) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
	defer cancel()
	client, err := rpc.New(fw, agent)
	if err != nil {
		t.Fatalf("rpc.New(%s): %v", agent, err)
	}
	var mu sync.Mutex
	var res result
	opts = append(opts, rpc.ReplyHandler(func(pr protocol.Reply, r *rpc.RPCReply) {
		mu.Lock()
		defer mu.Unlock()
		res.replies = append(res.replies, reply{sender: pr.SenderID(), RPCReply: r})
	}))
	rr, err := client.Do(ctx, action, input, opts...)
	if err != nil {
		t.Fatalf("%s#%s: %v", agent, action, err)
	}
	res.stats = rr.Stats()
	mu.Lock()
	defer mu.Unlock()
	return res
}

// req performs what `choria req AGENT ACTION k=v... <filters>` does:
// resolve the DDL, validate and convert the arguments with it, discover
// with the filters plus the agent, then send direct requests to the
// discovered nodes.
func req(t *testing.T, fw *choria.Framework, agent, action string, args map[string]string, f filters) result {
	t.Helper()
	input := validate(t, fw, agent, action, args)
	fo := f.options(fw)
	ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
	defer cancel()
	nodes, _, err := fo.Discover(ctx, fw, agent, false, false, fw.Logger("discovery"))
	if err != nil {
		t.Fatalf("discovery for %s#%s with %+v: %v", agent, action, f, err)
	}
	if len(nodes) == 0 {
		t.Fatalf("discovery for %s#%s with %+v: no nodes", agent, action, f)
	}
	return do(t, fw, agent, action, input, rpc.Targets(nodes), rpc.Collective(fo.Collective))
}

// validate converts k=v arguments with the agent's DDL as the client does
// before sending anything.
func validate(t *testing.T, fw *choria.Framework, agent, action string, args map[string]string) map[string]any {
	t.Helper()
	input, err := validateArgs(t, fw, agent, action, args)
	if err != nil {
		t.Fatalf("client-side validation of %s#%s %v: %v", agent, action, args, err)
	}
	return input
}

func validateArgs(t *testing.T, fw *choria.Framework, agent, action string, args map[string]string) (map[string]any, error) {
	t.Helper()
	client, err := rpc.New(fw, agent)
	if err != nil {
		t.Fatalf("rpc.New(%s): %v", agent, err)
	}
	if err := client.ResolveDDL(t.Context()); err != nil {
		t.Fatalf("resolving the %s DDL: %v", agent, err)
	}
	act, err := client.DDL().ActionInterface(action)
	if err != nil {
		t.Fatalf("%s DDL: %v", agent, err)
	}
	input, _, err := act.ValidateAndConvertToDDLTypes(args)
	return input, err
}

// checkStats compares the request statistics the client keeps.
func checkStats(t *testing.T, s *rpc.Stats, ok, failed int, noResponse []string) {
	t.Helper()
	if got := s.OKCount(); got != ok {
		t.Errorf("stats: ok = %d, want %d", got, ok)
	}
	if got := s.FailCount(); got != failed {
		t.Errorf("stats: failed = %d, want %d", got, failed)
	}
	if got := s.ResponsesCount(); got != ok+failed {
		t.Errorf("stats: responses = %d, want %d", got, ok+failed)
	}
	nr := slices.Clone(s.NoResponseFrom())
	slices.Sort(nr)
	if !slices.Equal(nr, noResponse) && (len(nr) != 0 || len(noResponse) != 0) {
		t.Errorf("stats: no responses from %v, want %v", nr, noResponse)
	}
	if u := s.UnexpectedResponseFrom(); len(u) != 0 {
		t.Errorf("stats: unexpected responses from %v", u)
	}
}

func decode(t *testing.T, rep reply, v any) {
	t.Helper()
	if err := json.Unmarshal(rep.Data, v); err != nil {
		t.Fatalf("decoding the data of %s's reply %s: %v", rep.sender, rep.Data, err)
	}
}

func checkOK(t *testing.T, rep reply) {
	t.Helper()
	if rep.Statuscode != mcorpc.OK {
		t.Fatalf("%s replied statuscode %d (%q), want 0; data %s", rep.sender, rep.Statuscode, rep.Statusmsg, rep.Data)
	}
}

func TestDiscovery(t *testing.T) {
	both := []string{node1, node2}
	tests := []struct {
		name    string
		filters filters
		want    []string
	}{
		{"no filter", filters{}, both},
		{"fact", filters{facts: []string{"os.family=Debian"}}, []string{node1}},
		// Choria's fact regexes ignore case.
		{"fact regex", filters{facts: []string{"os.family=~/^red/"}}, []string{node2}},
		{"fact matching nothing", filters{facts: []string{"os.family=Windows"}}, nil},
		{"class", filters{classes: []string{"roles::db"}}, []string{node2}},
		{"class regex", filters{classes: []string{"/web/"}}, []string{node1}},
		{"identity regex", filters{identities: []string{"/node1/"}}, []string{node1}},
		{"agent", filters{agents: []string{"echo"}}, both},
		{"unknown agent", filters{agents: []string{"nosuch"}}, nil},
		{"combined fact and class", filters{combined: []string{"role=web roles::web"}}, []string{node1}},
		{"compound with", filters{compound: `with("role=db")`}, []string{node2}},
		{"compound fact and classes", filters{compound: `fact("os.family") == "Debian" || "roles::db" in classes`}, both},
		{"compound agents", filters{compound: `"echo" in agents && with("/^roles::w/")`}, []string{node1}},
		{"fact and class disagreeing", filters{facts: []string{"role=web"}, classes: []string{"roles::db"}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := discover(t, env.client, tt.filters)
			if !slices.Equal(got, tt.want) && (len(got) != 0 || len(tt.want) != 0) {
				t.Errorf("discovered %v, want %v", got, tt.want)
			}
		})
	}
}

func TestPing(t *testing.T) {
	tests := []struct {
		name string
		call func(t *testing.T) result
	}{
		{"choria req", func(t *testing.T) result {
			return req(t, env.client, "rpcutil", "ping", nil, filters{})
		}},
		// rpc.Do discovering by itself, as a program using the library would.
		{"Do with its own discovery", func(t *testing.T) result {
			return do(t, env.client, "rpcutil", "ping", struct{}{})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			res := tt.call(t)
			checkStats(t, res.stats, 2, 0, nil)
			if got := res.senders(); !slices.Equal(got, []string{node1, node2}) {
				t.Fatalf("replies from %v, want both nodes", got)
			}
			for _, rep := range res.replies {
				checkOK(t, rep)
				var data struct {
					Pong int64 `json:"pong"`
				}
				decode(t, rep, &data)
				pong := time.Unix(data.Pong, 0)
				if pong.Before(start.Add(-5*time.Second)) || pong.After(time.Now().Add(5*time.Second)) {
					t.Errorf("%s: pong %d (%s) is not the time of the request (%s)", rep.sender, data.Pong, pong, start)
				}
				if rep.Action != "ping" {
					t.Errorf("%s: reply action %q, want ping", rep.sender, rep.Action)
				}
			}
		})
	}
}

func TestInventory(t *testing.T) {
	res := req(t, env.client, "rpcutil", "inventory", nil, filters{identities: []string{node2}})
	checkStats(t, res.stats, 1, 0, nil)
	rep := res.bySender(t, node2)
	checkOK(t, rep)
	var inv struct {
		Agents         []string       `json:"agents"`
		Classes        []string       `json:"classes"`
		Collectives    []string       `json:"collectives"`
		MainCollective string         `json:"main_collective"`
		Facts          map[string]any `json:"facts"`
	}
	decode(t, rep, &inv)
	for _, a := range []string{"discovery", "rpcutil", "echo"} {
		if !slices.Contains(inv.Agents, a) {
			t.Errorf("agents %v lack %s", inv.Agents, a)
		}
	}
	if !slices.Equal(inv.Classes, []string{"roles::db"}) {
		t.Errorf("classes %v, want [roles::db]", inv.Classes)
	}
	if !slices.Equal(inv.Collectives, []string{"mcollective"}) {
		t.Errorf("collectives %v, want [mcollective]", inv.Collectives)
	}
	if inv.MainCollective != "mcollective" {
		t.Errorf("main_collective %q, want mcollective", inv.MainCollective)
	}
	wantFacts := map[string]any{"os": map[string]any{"family": "RedHat"}, "role": "db"}
	if !reflect.DeepEqual(inv.Facts, wantFacts) {
		t.Errorf("facts %v, want %v", inv.Facts, wantFacts)
	}
}

// TestFactsMatchChoria: a node's facts, read from YAML whose map keys
// look like numbers and booleans, are what Choria's own facts code makes
// of the same file.
func TestFactsMatchChoria(t *testing.T) {
	file := filepath.Join(env.dir, node1, "facts.yaml")
	want, err := facts.JSON(file, quietLog{})
	if err != nil {
		t.Fatal(err)
	}
	res := req(t, env.client, "rpcutil", "inventory", nil, filters{identities: []string{node1}})
	rep := res.bySender(t, node1)
	checkOK(t, rep)
	var inv struct {
		Facts map[string]any `json:"facts"`
	}
	decode(t, rep, &inv)
	var choria map[string]any
	if err := json.Unmarshal(want, &choria); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(inv.Facts, choria) {
		t.Errorf("facts %v, Choria reads %v", inv.Facts, choria)
	}
	if _, ok := choria["ports"].(map[string]any)["22"]; !ok {
		t.Errorf("Choria's facts %v lack ports.22: the YAML is not the case under test", choria)
	}
}

// quietLog is the logger Choria's facts package wants.
type quietLog struct{}

func (quietLog) Warnf(string, ...any)  {}
func (quietLog) Debugf(string, ...any) {}
func (quietLog) Errorf(string, ...any) {}

func TestGetFact(t *testing.T) {
	args := map[string]string{"fact": "os.family"}
	debian := filters{facts: []string{"os.family=Debian"}}

	check := func(t *testing.T, res result) {
		t.Helper()
		if got := res.senders(); !slices.Equal(got, []string{node1}) {
			t.Fatalf("replies from %v, want only %s", got, node1)
		}
		rep := res.bySender(t, node1)
		checkOK(t, rep)
		var data struct {
			Fact  string `json:"fact"`
			Value any    `json:"value"`
		}
		decode(t, rep, &data)
		if data.Fact != "os.family" || data.Value != "Debian" {
			t.Errorf("got fact %q = %v, want os.family = Debian", data.Fact, data.Value)
		}
	}

	t.Run("direct to the discovered node", func(t *testing.T) {
		res := req(t, env.client, "rpcutil", "get_fact", args, debian)
		checkStats(t, res.stats, 1, 0, nil)
		check(t, res)
	})

	// One broadcast to both nodes carrying the fact filter: node2 must
	// apply the filter itself and stay silent.
	t.Run("broadcast with the filter", func(t *testing.T) {
		f, err := filter.NewFilter(filter.FactFilter(debian.facts...), filter.AgentFilter("rpcutil"))
		if err != nil {
			t.Fatal(err)
		}
		res := do(t, env.client, "rpcutil", "get_fact", validate(t, env.client, "rpcutil", "get_fact", args),
			rpc.BroadcastRequest(), rpc.Filter(f), rpc.Targets([]string{node1, node2}))
		checkStats(t, res.stats, 1, 0, []string{node2})
		check(t, res)
	})
}

func TestEcho(t *testing.T) {
	t.Run("say", func(t *testing.T) {
		res := req(t, env.client, "echo", "say", map[string]string{"message": "hello"}, filters{identities: []string{node1}})
		checkStats(t, res.stats, 1, 0, nil)
		rep := res.bySender(t, node1)
		checkOK(t, rep)
		var data struct {
			Message string `json:"message"`
			Role    string `json:"role"`
		}
		decode(t, rep, &data)
		if data.Message != "hello" || data.Role != "web" {
			t.Errorf("got message %q role %q, want hello and web", data.Message, data.Role)
		}
	})

	// The client validates with the DDL before sending, like the host.
	t.Run("client refuses shell metacharacters", func(t *testing.T) {
		_, err := validateArgs(t, env.client, "echo", "say", map[string]string{"message": "hello; rm -rf /"})
		if err == nil || !strings.Contains(err.Error(), "message") {
			t.Fatalf("client-side validation error = %v, want one about message", err)
		}
	})

	// Do sends its payload without validating it, so these reach the host,
	// which must refuse them with Choria's wording.
	tests := []struct {
		name   string
		input  map[string]any
		wantIn string
	}{
		{"shell metacharacters", map[string]any{"message": "hello; rm -rf /"}, "may not contain ';'"},
		{"longer than maxlength", map[string]any{"message": strings.Repeat("x", 101)}, "longer than 100"},
		{"missing required input", map[string]any{}, "required"},
		{"undeclared input", map[string]any{"message": "hi", "colour": "red"}, "colour"},
	}
	for _, tt := range tests {
		t.Run("host refuses "+tt.name, func(t *testing.T) {
			res := do(t, env.client, "echo", "say", tt.input, rpc.Targets([]string{node1}))
			checkStats(t, res.stats, 0, 1, nil)
			rep := res.bySender(t, node1)
			if rep.Statuscode != mcorpc.Aborted {
				t.Errorf("statuscode %d, want %d (aborted)", rep.Statuscode, mcorpc.Aborted)
			}
			if !strings.HasPrefix(rep.Statusmsg, "Validation failed:") || !strings.Contains(rep.Statusmsg, tt.wantIn) {
				t.Errorf("statusmsg %q, want one starting with \"Validation failed:\" mentioning %q", rep.Statusmsg, tt.wantIn)
			}
		})
	}
}

// TestForeignCA signs the same requests with a certificate of the same
// name from another CA: the nodes must ignore them.
func TestForeignCA(t *testing.T) {
	both := []string{node1, node2}
	t.Run("discovery finds nothing", func(t *testing.T) {
		if got := discover(t, env.rogue, filters{}); len(got) != 0 {
			t.Errorf("discovered %v with a foreign certificate, want nothing", got)
		}
	})
	t.Run("ping gets no replies", func(t *testing.T) {
		res := do(t, env.rogue, "rpcutil", "ping", struct{}{}, rpc.Targets(both))
		if len(res.replies) != 0 {
			t.Errorf("got replies from %v to a request signed by a foreign CA", res.senders())
		}
		checkStats(t, res.stats, 0, 0, both)
	})
	t.Run("the same ping with the right certificate works", func(t *testing.T) {
		res := do(t, env.client, "rpcutil", "ping", struct{}{}, rpc.Targets(both))
		checkStats(t, res.stats, 2, 0, nil)
	})
}
