package interop

// The real Choria server (package refserver: go-choria's server.Instance
// with its Go and external agent providers) on the tests' broker with the
// tests' PKI, asked by the real client. Agents in its libdir, the sdk-go
// example agent greeter among them, run under it unchanged.
//
// The Choria servers live in a collective of their own, so that the
// other tests, which discover everything in mcollective, never see them.

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/choria-io/go-choria/choria"
	"github.com/choria-io/go-choria/providers/agent/mcorpc"
	rpc "github.com/choria-io/go-choria/providers/agent/mcorpc/client"

	"github.com/agent-host/agent-host/testdata/choria-interop/refserver"
)

const (
	// choriaNode runs in the test process, choriaCmdNode as
	// cmd/reference-server.
	choriaNode    = "choria1.example.net"
	choriaCmdNode = "choria2.example.net"
	refCollective = "reference"

	choriaFacts = "os:\n  family: Alpine\nrole: reference\n"
	// The greeter's configuration file, which Choria names
	// <config dir>/plugin.d/greeter.
	greeterConfig = "greeting = howdy\n"
)

// The agents the Choria servers serve: Choria's Go agents (but executor,
// which does not activate without plugin.choria.executor.enabled) and the
// external agents installed by installChoriaAgents.
var choriaAgents = []string{"choria_util", "discovery", "echo", "greeter", "procinfo", "rpcutil"}

// installChoriaAgents lays out greeter, echo and procinfo as Choria's
// external agent provider finds them, <libdir>/mcollective/agent/<agent>/
// holding <agent>.json and the executable <agent> or, for greeter, the
// multi-arch <agent>/<agent>-<os>_<arch>. Unless fresh, the DDLs are dated
// an hour back: the provider leaves DDLs changed in the last 5 seconds for
// a later pass.
func installChoriaAgents(t *testing.T, dir string, fresh bool) (libdir string) {
	t.Helper()
	libdir = filepath.Join(dir, "lib")
	agents := filepath.Join(libdir, "mcollective", "agent")
	type file struct{ src, dst string }
	var ddls []string
	for _, a := range []struct {
		name string
		exe  file
	}{
		{"greeter", file{env.greeter, filepath.Join("greeter", fmt.Sprintf("greeter-%s_%s", runtime.GOOS, runtime.GOARCH))}},
		{"echo", file{filepath.Join("agents", "echo", "echo"), "echo"}},
		{"procinfo", file{filepath.Join("agents", "procinfo", "procinfo"), "procinfo"}},
	} {
		ddl := filepath.Join(agents, a.name, a.name+".json")
		if err := copyFile(ddlSource(a.name), ddl, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := copyFile(a.exe.src, filepath.Join(agents, a.name, a.exe.dst), 0o755); err != nil {
			t.Fatal(err)
		}
		ddls = append(ddls, ddl)
	}
	if !fresh {
		past := time.Now().Add(-time.Hour)
		for _, ddl := range ddls {
			if err := os.Chtimes(ddl, past, past); err != nil {
				t.Fatal(err)
			}
		}
	}
	return libdir
}

// ddlSource is where the tests keep an agent's DDL: greeter's is the copy
// in the main module's example agents.
func ddlSource(agent string) string {
	if agent == "greeter" {
		return filepath.Join("..", "agents", "greeter", "greeter.json")
	}
	return filepath.Join("agents", agent, agent+".json")
}

// writeChoriaConfig writes the configuration of a Choria server named
// identity serving the external agents in libdir, with the facts,
// classes and greeter configuration beside it.
func writeChoriaConfig(t *testing.T, identity, libdir string) string {
	t.Helper()
	dir := filepath.Join(env.dir, identity)
	cert, key, err := env.ca.issue(identity, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	factsFile := filepath.Join(dir, "facts.yaml")
	classesFile := filepath.Join(dir, "classes.txt")
	logFile := filepath.Join(dir, "choria.log")
	for f, content := range map[string]string{
		factsFile:   choriaFacts,
		classesFile: "roles::reference\n",
		filepath.Join(dir, "plugin.d", "greeter"): greeterConfig,
	} {
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := filepath.Join(dir, "server.conf")
	env.logs = append(env.logs, logFile)
	err = writeConfig(cfg,
		"identity", identity,
		"collectives", refCollective,
		"plugin.choria.middleware_hosts", env.natsURL,
		"plugin.security.provider", "file",
		"plugin.security.file.certificate", cert,
		"plugin.security.file.key", key,
		"plugin.security.file.ca", env.ca.caFile,
		"plugin.choria.agent_provider.mcorpc.libdir", libdir,
		"rpcauthorization", "0",
		"plugin.yaml", factsFile,
		"classesfile", classesFile,
		"loglevel", "debug",
		"logfile", logFile,
	)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// newReferenceClient is rip.mcollective in the Choria servers'
// collective, with the external agents' DDLs under its libdir.
func newReferenceClient(t *testing.T, name string) *choria.Framework {
	t.Helper()
	libdir := filepath.Join(env.dir, name+"-libdir")
	for _, a := range []string{"greeter", "echo", "procinfo"} {
		if err := copyFile(ddlSource(a), filepath.Join(libdir, "mcollective", "agent", a+".json"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cert, key, err := env.ca.issue(clientName, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(env.dir, name+".conf")
	logFile := filepath.Join(env.dir, name+".log")
	env.logs = append(env.logs, logFile)
	err = writeConfig(cfg,
		"identity", clientName,
		"collectives", refCollective,
		"main_collective", refCollective,
		"libdir", libdir,
		"plugin.security.provider", "file",
		"plugin.security.file.certificate", cert,
		"plugin.security.file.key", key,
		"plugin.security.file.ca", env.ca.caFile,
		"plugin.choria.middleware_hosts", env.natsURL,
		"plugin.choria.use_srv", "false",
		"discovery_timeout", "1",
		"loglevel", "debug",
		"logfile", logFile,
	)
	if err != nil {
		t.Fatal(err)
	}
	fw, err := choria.New(cfg)
	if err != nil {
		t.Fatalf("loading Choria client configuration %s: %v", name, err)
	}
	return fw
}

// checkReply compares a reply's status and data with what is expected.
func checkReply(t *testing.T, rep reply, action string, code mcorpc.StatusCode, msg string, data map[string]any) {
	t.Helper()
	if rep.Action != action {
		t.Errorf("%s: reply action %q, want %q", rep.sender, rep.Action, action)
	}
	if rep.Statuscode != code || rep.Statusmsg != msg {
		t.Errorf("%s: statuscode %d statusmsg %q, want %d %q", rep.sender, rep.Statuscode, rep.Statusmsg, code, msg)
	}
	var got map[string]any
	decode(t, rep, &got)
	if !reflect.DeepEqual(got, data) {
		t.Errorf("%s: data %s, want %v", rep.sender, rep.Data, data)
	}
}

// greet asks node's greeter to say hello to name.
func greet(t *testing.T, fw *choria.Framework, node string, input map[string]any) reply {
	t.Helper()
	res := do(t, fw, "greeter", "hello", input, rpc.Targets([]string{node}))
	return res.bySender(t, node)
}

// startChoriaServer starts the real Choria server in the test process,
// waits until it serves the agents on disk and stops it when the test
// ends (or before, once Stop is called).
func startChoriaServer(t *testing.T, cfg string) *refserver.Server {
	t.Helper()
	srv, err := refserver.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Stop(srv.ShutdownGrace()); err != nil {
			t.Error(err)
		}
	})
	ctx, cancel := context.WithTimeout(t.Context(), readyTimeout)
	defer cancel()
	if err := srv.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return srv
}

// TestChoriaServer runs the real Choria server in the test process.
func TestChoriaServer(t *testing.T) {
	client := newReferenceClient(t, "reference-client")
	libdir := installChoriaAgents(t, filepath.Join(env.dir, choriaNode), false)
	srv := startChoriaServer(t, writeChoriaConfig(t, choriaNode, libdir))
	if got := srv.Agents(); !slices.Equal(got, choriaAgents) {
		t.Fatalf("the Choria server serves %v, want %v", got, choriaAgents)
	}

	t.Run("rpcutil ping", func(t *testing.T) {
		start := time.Now()
		res := req(t, client, "rpcutil", "ping", nil, filters{})
		checkStats(t, res.stats, 1, 0, nil)
		rep := res.bySender(t, choriaNode)
		checkOK(t, rep)
		var data struct {
			Pong int64 `json:"pong"`
		}
		decode(t, rep, &data)
		if pong := time.Unix(data.Pong, 0); pong.Before(start.Add(-5*time.Second)) || pong.After(time.Now().Add(5*time.Second)) {
			t.Errorf("pong %d (%s) is not the time of the request (%s)", data.Pong, pong, start)
		}
	})

	t.Run("rpcutil inventory", func(t *testing.T) {
		res := do(t, client, "rpcutil", "inventory", struct{}{}, rpc.Targets([]string{choriaNode}))
		rep := res.bySender(t, choriaNode)
		checkOK(t, rep)
		var inv struct {
			Agents  []string       `json:"agents"`
			Classes []string       `json:"classes"`
			Facts   map[string]any `json:"facts"`
			Version string         `json:"version"`
		}
		decode(t, rep, &inv)
		if inv.Version != "0.30.2" {
			t.Errorf("version %q, want go-choria's, 0.30.2", inv.Version)
		}
		slices.Sort(inv.Agents)
		if !slices.Equal(inv.Agents, choriaAgents) {
			t.Errorf("agents %v, want %v", inv.Agents, choriaAgents)
		}
		if !slices.Equal(inv.Classes, []string{"roles::reference"}) {
			t.Errorf("classes %v, want [roles::reference]", inv.Classes)
		}
		if want := map[string]any{"os": map[string]any{"family": "Alpine"}, "role": "reference"}; !reflect.DeepEqual(inv.Facts, want) {
			t.Errorf("facts %v, want %v", inv.Facts, want)
		}
	})

	// greeter, built from sdk-go/examples/greeter, answers with the
	// greeting of its configuration file and the node's os.family fact.
	t.Run("greeter hello", func(t *testing.T) {
		res := req(t, client, "greeter", "hello", map[string]string{"name": "Ada"}, filters{identities: []string{choriaNode}})
		checkStats(t, res.stats, 1, 0, nil)
		checkReply(t, res.bySender(t, choriaNode), "hello", mcorpc.OK, "OK",
			map[string]any{"greeting": "howdy, Ada", "os_family": "Alpine"})
	})

	// The agent's own failure: a name of spaces passes the DDL and the
	// agent refuses it with agent.Fail(InvalidData, ...).
	t.Run("greeter refuses an empty name", func(t *testing.T) {
		res := do(t, client, "greeter", "hello", map[string]any{"name": "   "}, rpc.Targets([]string{choriaNode}))
		checkStats(t, res.stats, 0, 1, nil)
		checkReply(t, res.bySender(t, choriaNode), "hello", mcorpc.InvalidData, "name is empty", map[string]any{})
	})

	// Inputs the DDL refuses never reach the agent: Choria answers for it
	// (Do sends them without the client's own validation).
	for _, tt := range []struct {
		name  string
		input map[string]any
		msg   string
	}{
		{"missing name", map[string]any{}, "Validation failed: input 'name' is required"},
		{"name too long", map[string]any{"name": strings.Repeat("x", 65)}, "Validation failed: validation failed for input 'name': is longer than 64 characters"},
		{"name not a string", map[string]any{"name": 42}, "Validation failed: validation failed for input 'name': is not a string"},
		{"undeclared input", map[string]any{"name": "Ada", "colour": "red"}, "Validation failed: request contains an input 'colour' that is not declared in the DDL. Valid inputs are: name"},
	} {
		t.Run("greeter validation: "+tt.name, func(t *testing.T) {
			rep := greet(t, client, choriaNode, tt.input)
			checkReply(t, rep, "hello", mcorpc.Aborted, tt.msg, map[string]any{})
		})
	}

	t.Run("unknown action", func(t *testing.T) {
		res := do(t, client, "greeter", "goodbye", struct{}{}, rpc.Targets([]string{choriaNode}))
		checkReply(t, res.bySender(t, choriaNode), "goodbye", mcorpc.UnknownAction, "Unknown action goodbye for agent greeter", map[string]any{})
	})

	// Choria's external agent provider starts the agent afresh for every
	// request, as a child of the server, here the test process.
	t.Run("a process per request", func(t *testing.T) {
		pids := map[float64]bool{}
		for range 3 {
			res := do(t, client, "procinfo", "pids", struct{}{}, rpc.Targets([]string{choriaNode}))
			rep := res.bySender(t, choriaNode)
			checkOK(t, rep)
			var data struct {
				PID  float64 `json:"pid"`
				PPID float64 `json:"ppid"`
			}
			decode(t, rep, &data)
			if int(data.PPID) != os.Getpid() {
				t.Errorf("the agent's parent is %v, want the server's process %d", data.PPID, os.Getpid())
			}
			pids[data.PID] = true
		}
		if len(pids) != 3 {
			t.Errorf("three requests ran in %d processes (%v), want 3", len(pids), pids)
		}
	})

	// The same refusals from agent-host and from Choria, word for word.
	t.Run("echo refusals match agent-host", func(t *testing.T) {
		for _, input := range []map[string]any{
			{"message": "hello; rm -rf /"},
			{"message": strings.Repeat("x", 101)},
			{},
			{"message": "hi", "colour": "red"},
		} {
			want := do(t, env.client, "echo", "say", input, rpc.Targets([]string{node1})).bySender(t, node1)
			got := do(t, client, "echo", "say", input, rpc.Targets([]string{choriaNode})).bySender(t, choriaNode)
			if got.Statuscode != want.Statuscode || got.Statusmsg != want.Statusmsg {
				t.Errorf("input %v: Choria says %d %q, agent-host %d %q", input, got.Statuscode, got.Statusmsg, want.Statuscode, want.Statusmsg)
			}
		}
	})
}

// TestReferenceServerCommand runs cmd/reference-server as `make bench`
// does: started with --config, waited for until it prints "ready", asked
// at once, stopped with SIGTERM. Its DDLs are brand new, so "ready" must
// wait for the external agent provider to take them.
func TestReferenceServerCommand(t *testing.T) {
	client := newReferenceClient(t, "reference-cmd-client")
	dir := filepath.Join(env.dir, choriaCmdNode)
	libdir := installChoriaAgents(t, dir, true)
	st, err := os.Stat(filepath.Join(libdir, "mcollective", "agent", "greeter", "greeter.json"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := writeChoriaConfig(t, choriaCmdNode, libdir)

	stderr, err := os.Create(filepath.Join(dir, "stderr.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	env.logs = append(env.logs, stderr.Name())
	cmd := exec.Command(env.refServer, "--config", cfg)
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	exited := make(chan error, 1)
	t.Cleanup(func() {
		cmd.Process.Kill()
	})

	select {
	case line, ok := <-lines:
		if !ok || line != "ready" {
			t.Fatalf("the first line on standard output is %q (ok %v), want ready", line, ok)
		}
	case <-time.After(readyTimeout):
		t.Fatalf("no ready line within %s", readyTimeout)
	}
	if ready := time.Now(); ready.Before(st.ModTime().Add(5 * time.Second)) {
		t.Errorf("ready %s after the DDLs were written; Choria takes no DDL younger than 5s", ready.Sub(st.ModTime()))
	}

	rep := greet(t, client, choriaCmdNode, map[string]any{"name": "Grace"})
	checkReply(t, rep, "hello", mcorpc.OK, "OK", map[string]any{"greeting": "howdy, Grace", "os_family": "Alpine"})
	res := do(t, client, "rpcutil", "ping", struct{}{}, rpc.Targets([]string{choriaCmdNode}))
	checkOK(t, res.bySender(t, choriaCmdNode))

	var rest []string
	go func() {
		for line := range lines {
			rest = append(rest, line)
		}
		exited <- cmd.Wait()
	}()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		// Exit status 1 would mean it took longer than Choria allows.
		if err != nil {
			t.Errorf("reference-server after SIGTERM: %v", err)
		}
	case <-time.After(stopTimeout):
		t.Fatalf("reference-server did not exit within %s of SIGTERM", stopTimeout)
	}
	if len(rest) != 0 {
		t.Errorf("reference-server printed %q on standard output after ready, want nothing", rest)
	}
}
