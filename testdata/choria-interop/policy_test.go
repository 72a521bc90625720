package interop

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/choria-io/go-choria/client/discovery"
	"github.com/choria-io/go-choria/providers/agent/mcorpc"
	rpc "github.com/choria-io/go-choria/providers/agent/mcorpc/client"
)

const policedNode = "policed.example.net"

// The policies of the policed node, beside its configuration file as
// Choria reads them: marker's own, and default.rego for every other agent.
const (
	markerPolicy = `package io.choria.mcorpc.authpolicy

default allow := false

allow if {
	input.action == "allowed"
	input.callerid == "choria=rip.mcollective"
	"roles::web" in input.classes
}
`
	defaultPolicy = `package io.choria.mcorpc.authpolicy

default allow := false

allow if input.agent == "rpcutil"
`
)

// TestRegoPolicy: a node authorizing with Rego (rpcauthprovider =
// rego_policy), asked by the real Choria client. A denied request gets
// Choria's reply and its agent never runs (the marker agent would leave a
// file behind); an allowed one runs; an edit of the policy applies to the
// next request, with the node running.
func TestRegoPolicy(t *testing.T) {
	cfg, err := env.writeNodeConfig(env.ca, policedNode, `{"role": "web"}`, "roles::web\n")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(cfg)
	// Authorization back on, with Rego.
	appendConfig(t, cfg, "rpcauthorization = 1\nrpcauthprovider = rego_policy\n")
	rego := filepath.Join(dir, "policies", "rego")
	writeFile(t, filepath.Join(rego, "marker.rego"), markerPolicy)
	writeFile(t, filepath.Join(rego, "default.rego"), defaultPolicy)
	if err := os.MkdirAll(filepath.Join(dir, "plugin.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	plugins := t.TempDir()
	if err := installAgent(plugins, "marker"); err != nil {
		t.Fatal(err)
	}
	// The client reads its libdir for every request.
	clientDDL := filepath.Join(env.client.Configuration().LibDir[0], "mcollective", "agent", "marker.json")
	if err := copyFile(filepath.Join("agents", "marker", "marker.json"), clientDDL, 0o644); err != nil {
		t.Fatal(err)
	}
	startExtraNode(t, policedNode, "marker", cfg, plugins)

	ran := func(action string) bool {
		_, err := os.Stat(filepath.Join(dir, "plugin.d", "marker.ran-"+action))
		return err == nil
	}
	call := func(action string) reply {
		t.Helper()
		return do(t, env.client, "marker", action, struct{}{}, rpc.Targets([]string{policedNode})).bySender(t, policedNode)
	}
	const denial = "You are not authorized to call this agent or action"

	t.Run("denied, never run", func(t *testing.T) {
		checkReply(t, call("denied"), "denied", mcorpc.Aborted, denial, map[string]any{})
		if ran("denied") {
			t.Error("the denied action ran")
		}
	})
	t.Run("allowed, run", func(t *testing.T) {
		checkReply(t, call("allowed"), "allowed", mcorpc.OK, "", map[string]any{"ran": "allowed"})
		if !ran("allowed") {
			t.Error("the allowed action did not run")
		}
	})
	t.Run("rpcutil by default.rego", func(t *testing.T) {
		checkOK(t, do(t, env.client, "rpcutil", "ping", struct{}{}, rpc.Targets([]string{policedNode})).bySender(t, policedNode))
	})
	t.Run("an edit applies to the next request", func(t *testing.T) {
		writeFile(t, filepath.Join(rego, "marker.rego"), "package io.choria.mcorpc.authpolicy\n\ndefault allow := true\n")
		checkReply(t, call("denied"), "denied", mcorpc.OK, "", map[string]any{"ran": "denied"})
		if !ran("denied") {
			t.Error("the action the edited policy allows did not run")
		}
	})
	t.Run("a broken edit denies", func(t *testing.T) {
		if err := os.Remove(filepath.Join(dir, "plugin.d", "marker.ran-allowed")); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(rego, "marker.rego"), "package io.choria.mcorpc.authpolicy\n\nallow { true }\n")
		checkReply(t, call("allowed"), "allowed", mcorpc.Aborted, denial, map[string]any{})
		if ran("allowed") {
			t.Error("the action ran under a policy that does not compile")
		}
	})
}

// appendConfig adds lines to a node's configuration file: later lines win.
func appendConfig(t *testing.T, cfg, lines string) {
	t.Helper()
	f, err := os.OpenFile(cfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteString(lines)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
}

// startExtraNode runs agent-host for a node of one test until the test
// ends (the other tests see only node1 and node2) and waits until the
// client discovers it with agent and it answers a direct request.
func startExtraNode(t *testing.T, identity, agent, cfg, plugins string) {
	t.Helper()
	out, err := os.Create(filepath.Join(filepath.Dir(cfg), "output.txt"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(env.binary, "run", "--config", cfg, "--plugins", plugins)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Closed once the process has exited, so both the wait for it to
	// serve and the cleanup can see that.
	done := make(chan struct{})
	var exitErr error
	go func() { exitErr = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		defer out.Close()
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
			if exitErr != nil {
				t.Errorf("agent-host for %s after SIGTERM: %v", identity, exitErr)
			}
		case <-time.After(stopTimeout):
			_ = cmd.Process.Kill()
			t.Errorf("agent-host for %s did not stop within %s", identity, stopTimeout)
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(filepath.Dir(cfg), "agent-host.log"))
			t.Logf("agent-host's log:\n%s", b)
		}
	})

	ctx, cancel := context.WithTimeout(t.Context(), readyTimeout)
	defer cancel()
	for {
		fo := discovery.NewStandardOptions()
		fo.AgentFilter, fo.IdentityFilter = []string{agent}, []string{identity}
		fo.SetDefaultsFromChoria(env.client)
		nodes, _, err := fo.Discover(ctx, env.client, "", false, false, env.client.Logger("discovery"))
		if err == nil && slices.Equal(nodes, []string{identity}) {
			// The client's first direct request to a node that has just
			// started, and already answers discovery, can go unanswered
			// (it never reaches the node): wait for a direct ping too.
			if r := do(t, env.client, "rpcutil", "ping", struct{}{}, rpc.Targets([]string{identity})); len(r.replies) == 1 {
				return
			}
		}
		select {
		case <-done:
			t.Fatalf("agent-host for %s exited: %v", identity, exitErr)
		case <-ctx.Done():
			t.Fatal(errors.Join(fmt.Errorf("%s was never discovered", identity), ctx.Err()))
		case <-time.After(250 * time.Millisecond):
		}
	}
}
