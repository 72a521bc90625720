package interop

// Agents written with agent-host's Python SDK (sdk-python, installed into
// .venv-sdk) run unchanged under the real Choria server, asked by the real
// client, and answer the same under agent-host, which pools them.

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/choria-io/go-choria/choria"
	"github.com/choria-io/go-choria/filter/facts"
	"github.com/choria-io/go-choria/providers/agent/mcorpc"
	rpc "github.com/choria-io/go-choria/providers/agent/mcorpc/client"
)

const (
	// sdkNode serves the SDK agents; sdkInactiveNode the same with
	// kitchen's activation declined. Both run in the test process.
	sdkNode         = "choria3.example.net"
	sdkInactiveNode = "choria4.example.net"

	// Declines kitchen's activation: its should_activate reads it.
	kitchenDeclines = "activate = false\n"
)

// The SDK agents, each a directory holding <name> and <name>.json,
// used unchanged. legacy comes last: see installSDKAgents.
var sdkAgents = []struct{ name, dir string }{
	{"parrot", filepath.Join("..", "agents", "parrot")},
	{"kitchen", filepath.Join("..", "agents-src", "pycompat", "kitchen")},
	{"legacy", filepath.Join("..", "agents-src", "pycompat", "legacy")},
}

// sdkPython is the interpreter of .venv-sdk, which `make test` creates.
func sdkPython(t *testing.T) string {
	t.Helper()
	python, err := filepath.Abs(filepath.Join("..", "..", ".venv-sdk", "bin", "python"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(python); err != nil {
		t.Fatalf("the Python SDK's virtual environment is missing (%v): run make test, which creates it", err)
	}
	return python
}

// installSDKAgents lays the SDK agents out in dir as Choria's external
// agent provider finds them: <agent>/<agent>.json beside the executable
// <agent>/<agent>, a wrapper running the unchanged agent file with
// .venv-sdk's python. The agents' own #!/usr/bin/env python3 would find
// .venv's, whose real py-mco-agent has the same import names.
//
// Each directory is made aside, dated an hour back and renamed into
// place, so that a running agent-host neither waits for it to settle nor
// sees half of it. A reload that sees legacy, renamed last, sees them all.
func installSDKAgents(t *testing.T, python, dir string) {
	t.Helper()
	past := time.Now().Add(-time.Hour)
	for _, a := range sdkAgents {
		script, err := filepath.Abs(filepath.Join(a.dir, a.name))
		if err != nil {
			t.Fatal(err)
		}
		stage, err := os.MkdirTemp(env.dir, "stage-")
		if err != nil {
			t.Fatal(err)
		}
		ddl, exe := filepath.Join(stage, a.name+".json"), filepath.Join(stage, a.name)
		if err := copyFile(filepath.Join(a.dir, a.name+".json"), ddl, 0o644); err != nil {
			t.Fatal(err)
		}
		wrapper := fmt.Sprintf("#!/bin/sh\nexec %s %s \"$@\"\n", shellQuote(python), shellQuote(script))
		if err := os.WriteFile(exe, []byte(wrapper), 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{ddl, exe} {
			if err := os.Chtimes(f, past, past); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(stage, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(stage, filepath.Join(dir, a.name)); err != nil {
			t.Fatal(err)
		}
	}
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// addClientDDLs gives a client the SDK agents' DDLs; it reads its libdir
// anew for every request.
func addClientDDLs(t *testing.T, fw *choria.Framework) {
	t.Helper()
	for _, a := range sdkAgents {
		dst := filepath.Join(fw.Configuration().LibDir[0], "mcollective", "agent", a.name+".json")
		if err := copyFile(filepath.Join(a.dir, a.name+".json"), dst, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// writeFile writes an agent's configuration or a node's file.
func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// waitDiscovered polls discovery until it finds exactly want.
func waitDiscovered(t *testing.T, fw *choria.Framework, f filters, want []string) {
	t.Helper()
	deadline := time.Now().Add(readyTimeout)
	for {
		got := discover(t, fw, f)
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s, discovery with %+v finds %v, want %v", readyTimeout, f, got, want)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// sdkTarget is one node serving the SDK agents and the client asking it.
type sdkTarget struct {
	name       string
	fw         *choria.Framework
	node       string
	collective string
	dir        string         // the node's configuration directory
	facts      map[string]any // the facts the node hands its agents
}

// TestSDKAgents asks the same of the SDK agents served by a Choria server
// started in the test process and by agent-host's node1.
func TestSDKAgents(t *testing.T) {
	python := sdkPython(t)
	client := newReferenceClient(t, "sdk-client")
	addClientDDLs(t, client)
	libdir := filepath.Join(env.dir, sdkNode, "lib")
	installSDKAgents(t, python, filepath.Join(libdir, "mcollective", "agent"))
	srv := startChoriaServer(t, writeChoriaConfig(t, sdkNode, libdir))
	want := []string{"choria_util", "discovery", "kitchen", "legacy", "parrot", "rpcutil"}
	if got := srv.Agents(); !slices.Equal(got, want) {
		t.Fatalf("the Choria server serves %v, want %v", got, want)
	}

	// agent-host's two nodes get the same agents in their plugins
	// directory, hot-added (they stay for the rest of the run, which no
	// other test minds); node2 declines kitchen's activation.
	writeFile(t, filepath.Join(env.dir, node2, "plugin.d", "kitchen"), kitchenDeclines)
	addClientDDLs(t, env.client)
	installSDKAgents(t, python, filepath.Join(env.dir, "plugins"))
	waitDiscovered(t, env.client, filters{agents: []string{"legacy"}}, []string{node1, node2})

	// node1's facts as Choria reads them (TestFactsMatchChoria).
	b, err := facts.JSON(filepath.Join(env.dir, node1, "facts.yaml"), quietLog{})
	if err != nil {
		t.Fatal(err)
	}
	var node1Facts map[string]any
	if err := json.Unmarshal(b, &node1Facts); err != nil {
		t.Fatal(err)
	}
	for _, tg := range []sdkTarget{
		{"choria", client, sdkNode, refCollective, filepath.Join(env.dir, sdkNode),
			map[string]any{"os": map[string]any{"family": "Alpine"}, "role": "reference"}},
		{"agent-host", env.client, node1, "mcollective", filepath.Join(env.dir, node1), node1Facts},
	} {
		t.Run(tg.name, func(t *testing.T) { checkSDKAgents(t, tg) })
	}

	// Choria runs the activation check once, when it loads the agent,
	// and does not register an agent that declines: the client finds
	// no kitchen on that server, as on agent-host's node2.
	t.Run("kitchen declining activation is not served", func(t *testing.T) {
		if got := discover(t, env.client, filters{agents: []string{"kitchen"}}); !slices.Equal(got, []string{node1}) {
			t.Errorf("agent-host: discovery of kitchen finds %v, want only %s (node2 declines)", got, node1)
		}
		// One Choria server runs in a process at a time.
		if err := srv.Stop(srv.ShutdownGrace()); err != nil {
			t.Fatal(err)
		}
		libdir := filepath.Join(env.dir, sdkInactiveNode, "lib")
		installSDKAgents(t, python, filepath.Join(libdir, "mcollective", "agent"))
		cfg := writeChoriaConfig(t, sdkInactiveNode, libdir)
		writeFile(t, filepath.Join(env.dir, sdkInactiveNode, "plugin.d", "kitchen"), kitchenDeclines)
		inactive := startChoriaServer(t, cfg)
		want := []string{"choria_util", "discovery", "legacy", "parrot", "rpcutil"}
		if got := inactive.Agents(); !slices.Equal(got, want) {
			t.Errorf("the Choria server serves %v, want %v", got, want)
		}
		if got := discover(t, client, filters{agents: []string{"kitchen"}}); len(got) != 0 {
			t.Errorf("discovery of kitchen finds %v, want nothing", got)
		}
		if got := discover(t, client, filters{agents: []string{"parrot"}}); !slices.Equal(got, []string{sdkInactiveNode}) {
			t.Errorf("discovery of parrot finds %v, want %s", got, sdkInactiveNode)
		}
	})
}

// checkSDKAgents asks tg's node what the SDK agents answer, the same
// words from Choria and from agent-host.
func checkSDKAgents(t *testing.T, tg sdkTarget) {
	to := rpc.Targets([]string{tg.node})

	// parrot reads <config dir>/plugin.d/parrot anew for every request.
	// The statusmsg of a success is the agent's, py-mco-agent's "".
	t.Run("parrot echo", func(t *testing.T) {
		res := req(t, tg.fw, "parrot", "echo", map[string]string{"message": "hello"}, filters{identities: []string{tg.node}})
		checkStats(t, res.stats, 1, 0, nil)
		checkReply(t, res.bySender(t, tg.node), "echo", mcorpc.OK, "", map[string]any{"message": "hello"})

		writeFile(t, filepath.Join(tg.dir, "plugin.d", "parrot"), "prefix = PFX: \n")
		res = req(t, tg.fw, "parrot", "echo", map[string]string{"message": "hello"}, filters{identities: []string{tg.node}})
		checkReply(t, res.bySender(t, tg.node), "echo", mcorpc.OK, "", map[string]any{"message": "PFX: hello"})
	})

	// Every field of the request the agent was handed.
	t.Run("kitchen request", func(t *testing.T) {
		start := time.Now().Unix()
		res := do(t, tg.fw, "kitchen", "request", map[string]any{"message": "hi"}, to)
		rep := res.bySender(t, tg.node)
		var data map[string]any
		decode(t, rep, &data)
		msgtime, _ := data["msgtime"].(float64)
		if int64(msgtime) < start || int64(msgtime) > time.Now().Unix() {
			t.Errorf("msgtime %v is not the time of the request (%d)", data["msgtime"], start)
		}
		checkReply(t, rep, "request", mcorpc.OK, "", map[string]any{
			"protocol":   "io.choria.mcorpc.external.v1.rpc_request",
			"agent":      "kitchen",
			"action":     "request",
			"requestid":  res.stats.RequestID,
			"senderid":   clientName,
			"callerid":   "choria=" + clientName,
			"collective": tg.collective,
			"ttl":        float64(60),
			"msgtime":    msgtime,
			"data":       map[string]any{"message": "hi"},
		})
	})

	none := map[string]any{}
	for _, tt := range []struct {
		agent, action string
		input         map[string]any
		code          mcorpc.StatusCode
		msg           string
		data          map[string]any
	}{
		// reply.fail, and the action goes on.
		{"kitchen", "invalid", none, mcorpc.Aborted, "Invalid command", map[string]any{"after": "still ran"}},
		// py-mco-agent's words for an exception, doubled prefix and all.
		{"kitchen", "boom", none, mcorpc.Aborted, "RPC Aborted: RPC Aborted: kaboom", none},
		{"kitchen", "status", none, mcorpc.MissingData, "set by hand", none},
		// In the DDL, so Choria runs the agent, but not in the class.
		{"kitchen", "missing", none, mcorpc.Aborted, "RPC Aborted: RPC Aborted: Unknown RPC Action: missing", none},
		{"kitchen", "facts", none, mcorpc.OK, "", map[string]any{"facts": tg.facts}},
		// The 0.3 names; the agent class's own actions only.
		{"legacy", "echo", map[string]any{"message": "m"}, mcorpc.OK, "",
			map[string]any{"message": "m", "name": "legacy", "registered": []any{"echo"}, "same_base": true}},
		// py-mco-agent shares one registry between the classes of a
		// file; the SDK keeps them apart.
		{"legacy", "other_only", none, mcorpc.Aborted, "RPC Aborted: RPC Aborted: Unknown RPC Action: other_only", none},
	} {
		t.Run(tt.agent+" "+tt.action, func(t *testing.T) {
			res := do(t, tg.fw, tt.agent, tt.action, tt.input, to)
			checkReply(t, res.bySender(t, tg.node), tt.action, tt.code, tt.msg, tt.data)
		})
	}
}
