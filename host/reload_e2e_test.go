package host_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agent-host/agent-host/host"
	"github.com/agent-host/agent-host/host/config"
	"github.com/agent-host/agent-host/protocol"
)

const allowAll = "package io.choria.mcorpc.authpolicy\n\ndefault allow := true\n"

// TestReloadUnderLoad: reloads while requests run and arrive, each one
// changing the facts, the classes, the policy or the agents on disk, fail
// no request, and what changed is in use as soon as Reload returns.
func TestReloadUnderLoad(t *testing.T) {
	var factsFile, classesFile string
	confDir := t.TempDir()
	regoDir := filepath.Join(confDir, "policies", "rego")
	writeFile(t, filepath.Join(regoDir, "default.rego"), allowAll)
	h := start(t, setup{
		agents: []string{"shagent"},
		configure: func(c *config.Config) {
			factsFile, classesFile = c.FactsFiles[0], c.ClassesFile
			c.ConfigFile = filepath.Join(confDir, "server.conf")
			c.RPCAuthorization, c.RPCAuthProvider = true, "rego_policy"
			// Far beyond the test: only Reload may bring in the new agent.
			c.AgentSettle = time.Hour
		},
	})

	// The load: rpcutil (facts, on the decoders) and an agent spawned per
	// request (in-flight slots), without pause, until the reloads are done.
	var (
		done            = make(chan struct{})
		wg              sync.WaitGroup
		served          atomic.Int64
		failMu          sync.Mutex
		failures        []string
		requestsOf      = []struct{ agent, action, data string }{{"rpcutil", "ping", `{}`}, {"shagent", "echo", `{"message":"hi"}`}, {"rpcutil", "get_fact", `{"fact":"role"}`}}
		request         = func(agent, action, data string) error { return oneRequest(h, agent, action, data) }
		recordFailure   = func(err error) { failMu.Lock(); failures = append(failures, err.Error()); failMu.Unlock() }
		reloads, checks = 20, 0
	)
	for i := range 6 {
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-done:
					return
				default:
				}
				r := requestsOf[(i+n)%len(requestsOf)]
				if err := request(r.agent, r.action, r.data); err != nil {
					recordFailure(err)
					continue
				}
				served.Add(1)
			}
		})
	}

	ctx := t.Context()
	for i := range reloads {
		role := fmt.Sprintf("web%d", i)
		// Replaced whole, as configuration management does: requests
		// running meanwhile must not read half a file.
		replaceFile(t, factsFile, fmt.Sprintf(`{"os":{"family":"Debian"},"role":%q}`, role))
		replaceFile(t, classesFile, fmt.Sprintf("roles::%s\n", role))
		// A new policy text each time, still allowing everything.
		replaceFile(t, filepath.Join(regoDir, "default.rego"), allowAll+fmt.Sprintf("# revision %d\n", i))
		if i == reloads/2 {
			copyAgent(t, "pyagent", h.plugins)
		}
		if err := h.host.Reload(ctx); err != nil {
			t.Fatalf("Reload %d: %v", i, err)
		}
		// At once, not after the inventory's next look at the files.
		r := h.call("rpcutil", "get_fact", `{"fact":"role"}`)
		if want := fmt.Sprintf(`{"fact":"role","value":%q}`, role); string(r.Data) != want {
			t.Errorf("after reload %d: get_fact = %s, want %s", i, r.Data, want)
		}
		f := protocol.NewFilter()
		f.Class = []string{"roles::" + role}
		if !h.discovers(t, f) {
			t.Errorf("after reload %d: the node does not match class roles::%s", i, role)
		}
		checks++
	}
	close(done)
	wg.Wait()

	if len(failures) > 0 {
		t.Errorf("%d of %d requests failed during %d reloads; first: %s", len(failures), int64(len(failures))+served.Load(), reloads, failures[0])
	}
	if served.Load() < int64(reloads) {
		t.Errorf("only %d requests were served during the reloads", served.Load())
	}
	t.Logf("%d requests served, none failed, during %d reloads (%d checks)", served.Load(), reloads, checks)

	// The agent added on disk was served at once, well within AgentSettle.
	if _, ok := h.tryCall("pyagent", "echo", `{"message":"hi"}`, 20*time.Second); !ok {
		t.Errorf("the agent added before a reload is not served")
	}
	logs := h.logs.String()
	for _, want := range []string{`msg="agent added" agent=pyagent`, `msg=reloaded facts_changed=true classes_changed=true`, `agents_added=1`, `policies=reloaded`} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log does not say %q", want)
		}
	}
	if n := strings.Count(logs, `msg="loaded Rego policy"`); n < reloads {
		t.Errorf("the policy was loaded %d times, want at least one per reload (%d)", n, reloads)
	}

	// A policy that denies is in force as soon as Reload returns.
	writeFile(t, filepath.Join(regoDir, "default.rego"), "package io.choria.mcorpc.authpolicy\n\ndefault allow := false\n")
	if err := h.host.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, h.call("shagent", "echo", `{"message":"hi"}`), protocol.Aborted, notAuthorized)
}

// replaceFile writes content beside path and renames it over path.
func replaceFile(t testing.TB, path, content string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".new")
	writeFile(t, tmp, content)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// oneRequest sends one request to the node and says what went wrong, if
// anything: no reply, an error, or a status other than OK.
func oneRequest(h *harness, agent, action, data string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	f := protocol.NewFilter()
	f.Agent = []string{agent}
	res, err := h.client.Request(ctx, []string{node}, agent, action, json.RawMessage(data), f)
	switch {
	case err != nil:
		return fmt.Errorf("%s#%s: %w", agent, action, err)
	case len(res.Replies) != 1 || res.Replies[0].Err != nil:
		return fmt.Errorf("%s#%s: replies %+v", agent, action, res)
	case res.Replies[0].Body.Statuscode != protocol.OK:
		return fmt.Errorf("%s#%s: status %d %q", agent, action, res.Replies[0].Body.Statuscode, res.Replies[0].Body.Statusmsg)
	}
	return nil
}

func TestReloadBeforeAndAfterServing(t *testing.T) {
	cfg := config.Default()
	cfg.Identity = node
	cfg.SecurityProvider = "insecure"
	h, err := host.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Reload(t.Context()); !errors.Is(err, host.ErrNotServing) {
		t.Errorf("Reload before Run: err = %v, want ErrNotServing", err)
	}

	hs := start(t, setup{})
	hs.stop()
	if err := hs.host.Reload(t.Context()); !errors.Is(err, host.ErrNotServing) {
		t.Errorf("Reload after Run returned: err = %v, want ErrNotServing", err)
	}
}

// TestReloadFollowsTheWatchersOrder: a SIGHUP's reload that comes while
// the watcher is still activating an agent it found waits for that change
// to be applied, so the changes are announced in the order they happened:
// the agent was added, then removed.
func TestReloadFollowsTheWatchersOrder(t *testing.T) {
	ev := &events{}
	h := start(t, setup{hostOpts: []host.Option{host.WithEvents(ev)}})
	dir := filepath.Join(h.plugins, "slow")
	marker := filepath.Join(t.TempDir(), "activating")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ddl := `{"$schema": "https://choria.io/schemas/mcorpc/ddl/v1/agent.json",
  "metadata": {"name": "slow", "description": "Slow to activate", "author": "agent-host", "license": "Apache-2.0", "version": "1.0.0", "url": "https://choria.io", "timeout": 5, "provider": "external"},
  "actions": [{"action": "run", "description": "Runs", "display": "always", "input": {}, "output": {}}]}`
	script := "#!/bin/sh\ntouch " + marker + "\nsleep 2\nprintf '{\"activate\": true}' >\"$CHORIA_EXTERNAL_REPLY\"\n"
	if err := os.WriteFile(filepath.Join(dir, "slow"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "slow.json"), []byte(ddl), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "the watcher never activated slow", func() bool { _, err := os.Stat(marker); return err == nil })
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := h.host.Reload(t.Context()); err != nil {
		t.Fatal(err)
	}
	var changes []string
	for _, c := range ev.list() {
		if strings.HasPrefix(c, "added ") || strings.HasPrefix(c, "removed ") {
			changes = append(changes, c)
		}
	}
	if want := []string{"added slow", "removed slow"}; !slices.Equal(changes, want) {
		t.Errorf("changes announced %v, want %v", changes, want)
	}
	if slices.ContainsFunc(h.host.Subscriptions(), func(s host.Subscription) bool { return s.Subject == "mcollective.broadcast.agent.slow" }) {
		t.Error("still subscribed for slow after it was removed")
	}
}
