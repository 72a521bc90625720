package host_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
