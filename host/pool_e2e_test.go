package host_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/agent-host/agent-host/host/config"
	"github.com/agent-host/agent-host/protocol"
)

// Pooled agents end to end: a client on NATS, the host, and real workers
// of every implementation of the pooltest agent.

func eachPoolAgent(t *testing.T, fn func(t *testing.T, exe string)) {
	for _, a := range poolAgents {
		t.Run(a.name, func(t *testing.T) { fn(t, a.exe) })
	}
}

// poolAgentExe is the implementation of the pooltest agent named name.
func poolAgentExe(t testing.TB, name string) string {
	t.Helper()
	for _, a := range poolAgents {
		if a.name == name {
			return a.exe
		}
	}
	t.Fatalf("no pooltest agent named %s", name)
	return ""
}

// pid is the pid an action answered with.
func pid(t *testing.T, r protocol.RPCReply) int {
	t.Helper()
	if r.Statuscode != protocol.OK {
		t.Fatalf("reply %d %q", r.Statuscode, r.Statusmsg)
	}
	p, _ := dataOf(t, r)["pid"].(float64)
	if p == 0 {
		t.Fatalf("no pid in %s", r.Data)
	}
	return int(p)
}

// TestAgentsOfTheSDKsArePooled: an agent that says it speaks the worker
// protocol is pooled with no configuration, and runs per request when
// the operator says exec.
func TestAgentsOfTheSDKsArePooled(t *testing.T) {
	eachPoolAgent(t, func(t *testing.T, exe string) {
		t.Run("auto", func(t *testing.T) {
			h := start(t, setup{pooltest: exe})
			first := pid(t, h.call("pooltest", "echo", `{"message":"hi"}`))
			for range 5 {
				if got := pid(t, h.call("pooltest", "echo", `{"message":"hi"}`)); got != first {
					t.Fatalf("served by %d, then %d: not pooled", first, got)
				}
			}
			if r := h.call("pooltest", "echo", `{"message":"héllo"}`); dataOf(t, r)["message"] != "héllo" {
				t.Errorf("echo = %s", r.Data)
			}
			if !strings.Contains(h.logs.String(), "serving the agent with a pool of") {
				t.Error("the pool was not logged")
			}
		})
		t.Run("exec", func(t *testing.T) {
			h := start(t, setup{pooltest: exe, configure: func(c *config.Config) { c.PoolMode = "exec" }})
			first := pid(t, h.call("pooltest", "echo", `{"message":"hi"}`))
			if second := pid(t, h.call("pooltest", "echo", `{"message":"hi"}`)); second == first {
				t.Fatalf("two requests served by %d in exec mode", first)
			}
			if r := h.call("pooltest", "echo", `{"message":"héllo"}`); dataOf(t, r)["message"] != "héllo" {
				t.Errorf("echo = %s", r.Data)
			}
		})
	})
}

// TestWorkerCrashReply: the caller of a request whose worker died is told
// so, with the worker's last words; the agent goes on serving.
func TestWorkerCrashReply(t *testing.T) {
	eachPoolAgent(t, func(t *testing.T, exe string) {
		h := start(t, setup{pooltest: exe})
		r := h.call("pooltest", "crash", `{"message":"out of cheese"}`)
		if r.Statuscode != protocol.Aborted || !strings.Contains(r.Statusmsg, "worker running it died (exit status 3)") || !strings.Contains(r.Statusmsg, "out of cheese") {
			t.Errorf("reply %d %q; want the worker's death and its stderr", r.Statuscode, r.Statusmsg)
		}
		pid(t, h.call("pooltest", "echo", `{}`))
	})
}

// TestPooledTimeout: a request past its DDL timeout is cancelled, its
// hung worker killed, and the caller told it timed out.
func TestPooledTimeout(t *testing.T) {
	eachPoolAgent(t, func(t *testing.T, exe string) {
		h := start(t, setup{pooltest: exe, configure: func(c *config.Config) { c.PoolCancelGrace = 100 * time.Millisecond }})
		ddl := filepath.Join(h.plugins, "pooltest", "pooltest.json")
		b, _ := os.ReadFile(ddl)
		writeFile(t, ddl, strings.Replace(string(b), `"timeout": 10`, `"timeout": 1`, 1))
		eventually(t, 15*time.Second, "the 1 s timeout was not loaded", func() bool {
			return strings.Contains(string(h.call("rpcutil", "agent_inventory", `{}`).Data), `"timeout":1,`)
		})
		r := h.call("pooltest", "hang", `{}`)
		if r.Statuscode != protocol.Aborted || !strings.Contains(r.Statusmsg, "timed out") {
			t.Errorf("reply %d %q; want a timeout", r.Statuscode, r.Statusmsg)
		}
		pid(t, h.call("pooltest", "echo", `{}`))
	})
}

// TestPooledOverload: 64 requests at once for an agent whose one worker
// runs one at a time: every request gets its reply, or at once a reply
// that the node is busy; none goes unanswered.
func TestPooledOverload(t *testing.T) {
	eachPoolAgent(t, func(t *testing.T, exe string) {
		h := start(t, setup{pooltest: exe, configure: func(c *config.Config) {
			c.PoolMaxWorkers, c.PoolConcurrency = 1, 1
			c.QueueLimit = 16 // 8 for the agent
		}})
		pid(t, h.call("pooltest", "echo", `{}`))
		const sent = 64
		var subs []*nats.Subscription
		for range sent {
			sreq, id := unsigned(t, "pooltest", `{"agent":"pooltest","action":"sleep","data":{"ms":100}}`, nil)
			subs = append(subs, h.send(t, sreq, id, "mcollective.node."+node))
		}
		ok, busy := 0, 0
		for _, sub := range subs {
			msg, err := sub.NextMsg(20 * time.Second)
			if err != nil {
				t.Fatalf("a request went unanswered: %v", err)
			}
			switch r := replyBody(t, msg.Data); {
			case r.Statuscode == protocol.OK:
				ok++
			case r.Statuscode == protocol.Aborted && strings.Contains(r.Statusmsg, node+" is busy"):
				busy++
			default:
				t.Errorf("reply %d %q", r.Statuscode, r.Statusmsg)
			}
		}
		// One runs, eight wait; the rest are refused.
		if ok < 9 || ok+busy != sent {
			t.Errorf("%d served and %d busy of %d; want at least the 9 the pool and queue hold served", ok, busy, sent)
		}
	})
}

// TestPooledHotReload: replacing a pooled agent's executable while
// requests flow replaces its workers without failing a request.
func TestPooledHotReload(t *testing.T) {
	eachPoolAgent(t, func(t *testing.T, exe string) {
		h := start(t, setup{pooltest: exe})
		before := pid(t, h.call("pooltest", "echo", `{}`))

		var failed, served atomic.Int64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		pids := sync.Map{}
		for range 4 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					r, ok := h.tryCall("pooltest", "echo", `{}`, 20*time.Second)
					if !ok || r.Statuscode != protocol.OK {
						failed.Add(1)
						t.Errorf("a request failed during the reload: %v %d %q", ok, r.Statuscode, r.Statusmsg)
						continue
					}
					served.Add(1)
					pids.Store(int(dataOf(t, r)["pid"].(float64)), true)
				}
			})
		}
		time.Sleep(300 * time.Millisecond)
		// A new build, moved into place as deployment tools do.
		target := filepath.Join(h.plugins, "pooltest", "pooltest")
		next := filepath.Join(h.plugins, "pooltest", ".pooltest.new")
		copyFile(t, exe, next)
		if err := os.Rename(next, target); err != nil {
			t.Fatal(err)
		}
		eventually(t, 20*time.Second, "the pool was not replaced", func() bool {
			return strings.Contains(h.logs.String(), "retiring the agent's pool of workers")
		})
		time.Sleep(500 * time.Millisecond)
		close(stop)
		wg.Wait()
		after := pid(t, h.call("pooltest", "echo", `{}`))
		if after == before {
			t.Errorf("still served by %d after the reload", before)
		}
		if failed.Load() > 0 || served.Load() == 0 {
			t.Errorf("%d failed, %d served during the reload", failed.Load(), served.Load())
		}
		waitGone(t, before)
	})
}

// TestPooledShutdownDrains: stopping the host lets pooled requests that
// run finish, answered, then stops their workers.
func TestPooledShutdownDrains(t *testing.T) {
	eachPoolAgent(t, func(t *testing.T, exe string) {
		h := start(t, setup{pooltest: exe, configure: func(c *config.Config) { c.ShutdownGrace = 5 * time.Second }})
		worker := pid(t, h.call("pooltest", "echo", `{}`))
		var subs []*nats.Subscription
		for range 3 {
			sreq, id := unsigned(t, "pooltest", `{"agent":"pooltest","action":"sleep","data":{"ms":1000}}`, nil)
			subs = append(subs, h.send(t, sreq, id, "mcollective.node."+node))
		}
		eventually(t, 10*time.Second, "the sleeps did not start", func() bool { return h.host.Stats().Running == 3 })
		h.stop()
		for i, sub := range subs {
			msg, err := sub.NextMsg(10 * time.Second)
			if err != nil {
				t.Fatalf("request %d unanswered after the shutdown: %v", i, err)
			}
			if r := replyBody(t, msg.Data); r.Statuscode != protocol.OK {
				t.Errorf("request %d: %d %q, want it to finish", i, r.Statuscode, r.Statusmsg)
			}
		}
		waitGone(t, worker)
	})
}

// waitGone waits for a process to be gone.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	eventually(t, 10*time.Second, fmt.Sprintf("process %d still runs", pid), func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		return err != nil || strings.Contains(string(b), ") Z ")
	})
}

// TestPooledBurstUsesTheAnnouncedConcurrency: until its first worker's
// handshake a pool assumes one request per worker; requests queued
// meanwhile start as soon as the worker says it runs more, not when the
// first finishes.
func TestPooledBurstUsesTheAnnouncedConcurrency(t *testing.T) {
	eachPoolAgent(t, func(t *testing.T, exe string) {
		h := start(t, setup{pooltest: exe, configure: func(c *config.Config) { c.PoolMaxWorkers = 1 }})
		const sleep = 1500 * time.Millisecond
		begin := time.Now()
		var subs []*nats.Subscription
		for range 4 { // the pooltest agents announce 4
			sreq, id := unsigned(t, "pooltest", fmt.Sprintf(`{"agent":"pooltest","action":"sleep","data":{"ms":%d}}`, sleep.Milliseconds()), nil)
			subs = append(subs, h.send(t, sreq, id, "mcollective.node."+node))
		}
		for _, sub := range subs {
			msg, err := sub.NextMsg(20 * time.Second)
			if err != nil {
				t.Fatalf("a request went unanswered: %v", err)
			}
			if r := replyBody(t, msg.Data); r.Statuscode != protocol.OK {
				t.Fatalf("reply %d %q", r.Statuscode, r.Statusmsg)
			}
		}
		// Run one after another they would take two sleeps at least.
		if took := time.Since(begin); took >= 2*sleep {
			t.Errorf("4 requests of %s on one worker running 4 at once took %s: they did not run together", sleep, took)
		}
	})
}

// TestSDKGoAgentRunsAsPlugin: with no configuration, an sdk-go agent is
// served over NATS by go-plugin plugins, the same binary that also runs
// per request and on the worker protocol's streams.
func TestSDKGoAgentRunsAsPlugin(t *testing.T) {
	h := start(t, setup{pooltest: poolAgentExe(t, "go-plugin")})
	first := pid(t, h.call("pooltest", "echo", `{"message":"hi"}`))
	if got := pid(t, h.call("pooltest", "echo", `{"message":"hi"}`)); got != first {
		t.Fatalf("served by %d, then %d: not pooled", first, got)
	}
	if !strings.Contains(h.logs.String(), "serving the agent with a pool of go-plugin plugins") {
		t.Error("the agent is not served by go-plugin plugins")
	}
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", first))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(env), "AGENT_HOST_PLUGIN=io.agent-host.plugin\x00") {
		t.Errorf("the serving process was not started as a plugin: %q", env)
	}
}
