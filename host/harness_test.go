package host_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/agent-host/agent-host/host"
	"github.com/agent-host/agent-host/host/config"
	"github.com/agent-host/agent-host/host/hosttest"
	"github.com/agent-host/agent-host/protocol"
	"github.com/agent-host/agent-host/protocol/client"
	v1 "github.com/agent-host/agent-host/protocol/v1"
	"github.com/agent-host/agent-host/runner/runnertest"
)

const node = "node1.example.net"

// clockBin is the Go example agent and poolAgents the implementations
// of the pooltest agent (testdata/pool), built or found once for every
// test.
var (
	clockBin   string
	poolAgents []poolAgent
)

// poolAgent is one implementation of the pooltest agent; mode, when set,
// is the plugin.agent_host.pool.pooltest.mode its tests run with, unless
// they choose a mode for every agent.
type poolAgent struct{ name, exe, mode string }

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "agent-host-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	clockBin = filepath.Join(dir, "clock")
	pooltest := filepath.Join(dir, "pooltest")
	for src, out := range map[string]string{"./testdata/agents-src/clock": clockBin, "./testdata/agents-src/pooltest": pooltest} {
		build := exec.Command("go", "build", "-o", out, src)
		build.Dir = ".."
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n%s", src, err, out)
			os.Exit(1)
		}
	}
	// The sdk-go agent twice: as a go-plugin plugin, which agent-host
	// picks for it, and forced onto the worker protocol's streams (a copy,
	// so that start can tell the two apart).
	poolAgents = append(poolAgents, poolAgent{"go-plugin", pooltest, ""})
	streams := filepath.Join(dir, "streams", "pooltest")
	if err := os.MkdirAll(filepath.Dir(streams), 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if b, err := os.ReadFile(pooltest); err != nil || os.WriteFile(streams, b, 0o755) != nil {
		fmt.Fprintln(os.Stderr, "copying the pooltest agent:", err)
		os.Exit(1)
	}
	poolAgents = append(poolAgents, poolAgent{"go", streams, "pool"})
	if _, err := exec.LookPath("node"); err == nil {
		if js, err := filepath.Abs("../testdata/agents-src/nodepool/pooltest"); err == nil {
			if _, err := os.Stat(js); err == nil {
				poolAgents = append(poolAgents, poolAgent{"node", js, ""})
			}
		}
	}
	// The sdk-python one, when its virtual environment (make sdk-venv) is there.
	if py, err := runnertest.PythonAgent(dir, "../.venv-sdk", "../testdata/agents-src/pypool/pooltest"); err == nil {
		poolAgents = append(poolAgents, poolAgent{"python", py, ""})
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// harness is one host on an embedded NATS server with a client beside it.
type harness struct {
	t       testing.TB
	host    *host.Host
	nats    *hosttest.Server
	nc      *nats.Conn
	client  *client.Client
	plugins string
	logs    *hosttest.Buffer
	// stop ends the host's Run context and waits for Run to return.
	stop func()
}

type setup struct {
	agents []string // directories or flat names under testdata/e2e/agents
	// pooltest installs this implementation of the pooltest agent.
	pooltest string
	// longTimeout gives shagent a minute rather than 2 s per request, for
	// tests whose hanging request must outlast what they do meanwhile;
	// they stop the host with a short shutdown grace.
	longTimeout bool
	clock       bool // add the Go agent in the multi-arch layout
	natsOpts    []hosttest.NATSOption
	configure   func(*config.Config)
	clientCfg   *client.Config
	hostOpts    []host.Option
	// beforeStart runs once the broker is up and before the host starts,
	// to subscribe to what the host says at start-up.
	beforeStart func(t testing.TB, srv *hosttest.Server)
	// events builds the host's Events hook over the host's own Publish.
	events func(publish func(subject string, data []byte) error) host.Events
	// install lays out more agents in the plugin directory before the
	// host starts, so that they are loaded at once.
	install func(t testing.TB, plugins string)
}

func start(t testing.TB, s setup) *harness {
	t.Helper()
	srv := hosttest.NATS(t, s.natsOpts...)
	plugins := t.TempDir()
	for _, a := range s.agents {
		copyAgent(t, a, plugins)
	}
	if s.longTimeout {
		ddl := filepath.Join(plugins, "shagent", "shagent.json")
		b, err := os.ReadFile(ddl)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, ddl, strings.Replace(string(b), `"timeout": 2`, `"timeout": 60`, 1))
	}
	if s.clock {
		installClock(t, plugins)
	}
	if s.pooltest != "" {
		installPooltest(t, plugins, s.pooltest)
	}
	if s.install != nil {
		s.install(t, plugins)
	}

	facts := filepath.Join(t.TempDir(), "facts.json")
	writeFile(t, facts, `{"os":{"family":"Debian"},"role":"web","cpus":4}`)
	classes := filepath.Join(t.TempDir(), "classes.txt")
	writeFile(t, classes, "roles::web\nprofiles::base\n")

	cfg := config.Default()
	cfg.Identity = node
	cfg.SecurityProvider = "insecure"
	cfg.Plugins = []string{plugins}
	cfg.FactsFiles = []string{facts}
	cfg.ClassesFile = classes
	cfg.AgentSettle = 200 * time.Millisecond
	// Choria's default, actionpolicy, denies every request without policy
	// files; the tests of authorization turn it back on.
	cfg.RPCAuthorization = false
	if s.longTimeout {
		cfg.ShutdownGrace = 200 * time.Millisecond
	}
	if s.configure != nil {
		s.configure(cfg)
	}
	for _, a := range poolAgents {
		// The pooltest agent's own mode, unless the test chose one for
		// every agent; other agents keep theirs.
		if a.exe == s.pooltest && a.mode != "" && cfg.PoolMode == "auto" {
			if err := cfg.SetOption("plugin.agent_host.pool.pooltest.mode", a.mode); err != nil {
				t.Fatal(err)
			}
		}
	}

	logs := &hosttest.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts := append([]host.Option{host.WithLogger(log), host.WithBrokerURL(srv.URL())}, s.hostOpts...)
	var h *host.Host
	if s.events != nil {
		opts = append(opts, host.WithEvents(s.events(func(subject string, data []byte) error { return h.Publish(subject, data) })))
	}
	if s.beforeStart != nil {
		s.beforeStart(t, srv)
	}
	h, err := host.New(cfg, opts...)
	if err != nil {
		t.Fatalf("host.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	var stopOnce sync.Once
	stop := func() {
		stopOnce.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("host.Run: %v", err)
				}
			case <-time.After(20 * time.Second):
				t.Errorf("host did not stop within 20s")
			}
		})
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("host log:\n%s", logs.String())
		}
	})
	select {
	case <-h.Ready():
	case err := <-done:
		t.Fatalf("host stopped before it was ready: %v\n%s", err, logs.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("host not ready after 30s\n%s", logs.String())
	}

	ccfg := client.Config{Identity: "rip.mcollective"}
	if s.clientCfg != nil {
		ccfg = *s.clientCfg
	}
	nc := connect(t, srv.URL(), nil)
	return &harness{t: t, host: h, nats: srv, nc: nc, client: client.New(nc, ccfg), plugins: plugins, logs: logs, stop: stop}
}

func connect(t testing.TB, url string, opts []nats.Option) *nats.Conn {
	t.Helper()
	opts = append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond)}, opts...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("connecting the client: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// call sends one RPC request straight to the node and returns its reply.
func (h *harness) call(agent, action, data string) protocol.RPCReply {
	h.t.Helper()
	r, ok := h.tryCall(agent, action, data, 20*time.Second)
	if !ok {
		h.t.Fatalf("%s#%s: no reply", agent, action)
	}
	return r
}

// tryCall is call without failing: ok is false when no reply came in wait.
func (h *harness) tryCall(agent, action, data string, wait time.Duration) (protocol.RPCReply, bool) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	f := protocol.NewFilter()
	f.Agent = []string{agent}
	res, err := h.client.Request(ctx, []string{node}, agent, action, json.RawMessage(data), f)
	if err != nil {
		// Only expected while the broker restarts; call() fails on it.
		h.t.Logf("%s#%s: %v", agent, action, err)
		return protocol.RPCReply{}, false
	}
	if len(res.Replies) == 0 {
		return protocol.RPCReply{}, false
	}
	if r := res.Replies[0]; len(res.Replies) != 1 || r.Sender != node || r.Err != nil || len(res.Unexpected) > 0 || res.Duplicates > 0 {
		h.t.Fatalf("%s#%s: want one reply from %s, got %+v", agent, action, node, res)
	}
	return res.Replies[0].Body, true
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (h *harness) runs(agent string) string {
	b, _ := os.ReadFile(filepath.Join(h.plugins, agent, "runs"))
	return string(b)
}

func dataOf(t *testing.T, r protocol.RPCReply) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Data, &m); err != nil {
		t.Fatalf("reply data %s: %v", r.Data, err)
	}
	return m
}

func wantStatus(t *testing.T, r protocol.RPCReply, code protocol.StatusCode, msg string) {
	t.Helper()
	if r.Statuscode != code || r.Statusmsg != msg {
		t.Errorf("reply = %d %q, want %d %q (data %s)", r.Statuscode, r.Statusmsg, code, msg, r.Data)
	}
}

// copyAgent copies testdata/e2e/agents/<name> (a directory, or the flat
// pair name.json + name) into dir, keeping file modes.
func copyAgent(t testing.TB, name, dir string) {
	t.Helper()
	src := filepath.Join("..", "testdata", "e2e", "agents", name)
	if _, err := os.Stat(filepath.Join(src, name+".json")); err == nil {
		copyDir(t, src, filepath.Join(dir, name))
		return
	}
	for _, f := range []string{name, name + ".json"} {
		copyFile(t, filepath.Join(filepath.Dir(src), f), filepath.Join(dir, f))
	}
}

func copyDir(t testing.TB, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		copyFile(t, p, filepath.Join(dst, rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func copyFile(t testing.TB, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, st.Mode().Perm())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// installClock lays the Go agent out as Choria's multi-arch layout:
// clock/clock.json + clock/clock/clock-<os>_<arch>.
func installClock(t testing.TB, dir string) {
	t.Helper()
	copyFile(t, filepath.Join("..", "testdata", "agents", "clock", "clock.json"), filepath.Join(dir, "clock", "clock.json"))
	copyFile(t, clockBin, filepath.Join(dir, "clock", "clock", "clock-"+runtime.GOOS+"_"+runtime.GOARCH))
}

// installPooltest lays out the pooltest agent with the executable exe:
// pooltest/pooltest.json + pooltest/pooltest.
func installPooltest(t testing.TB, dir, exe string) {
	t.Helper()
	copyFile(t, filepath.Join("..", "testdata", "pool", "pooltest.json"), filepath.Join(dir, "pooltest", "pooltest.json"))
	copyFile(t, exe, filepath.Join(dir, "pooltest", "pooltest"))
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// unsigned builds a request from rip.mcollective, for a host in insecure
// mode, with body verbatim as its message; it returns it and its id.
func unsigned(t testing.TB, agent, body string, f *protocol.Filter) (*v1.SecureRequest, string) {
	t.Helper()
	return unsignedWith(t, agent, body, f, nil)
}

// unsignedWith is unsigned with the envelope changed by edit first.
func unsignedWith(t testing.TB, agent, body string, f *protocol.Filter, edit func(*v1.RequestEnvelope)) (*v1.SecureRequest, string) {
	t.Helper()
	id, err := v1.NewRequestID()
	if err != nil {
		t.Fatal(err)
	}
	env := v1.RequestEnvelope{
		RequestID: id, SenderID: "rip.mcollective", CallerID: "choria=rip.mcollective", Collective: "mcollective",
		Agent: agent, TTL: 60, Time: time.Now().Unix(), Filter: f,
	}
	if edit != nil {
		edit(&env)
	}
	req := v1.NewRequest(env, []byte(body))
	sreq, err := req.Seal(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return sreq, id
}

// rawCall sends body verbatim as the request message and waits for the reply.
func (h *harness) rawCall(t *testing.T, agent, body string) protocol.RPCReply {
	t.Helper()
	sreq, id := unsigned(t, agent, body, nil)
	return h.publish(t, sreq, id, true)
}

// sendHang starts a shagent hang request and waits until the agent runs;
// the subscription receives its reply.
func (h *harness) sendHang(t *testing.T) *nats.Subscription {
	t.Helper()
	sreq, id := unsigned(t, "shagent", `{"agent":"shagent","action":"hang","data":{}}`, nil)
	sub := h.send(t, sreq, id, "mcollective.node."+node)
	eventually(t, 10*time.Second, "the hanging agent did not start", func() bool { return strings.Contains(h.runs("shagent"), "hang") })
	return sub
}

// publish sends a secure request to the node and returns its reply; with
// wantReply false it asserts that none comes.
func (h *harness) publish(t *testing.T, sreq *v1.SecureRequest, id string, wantReply bool) protocol.RPCReply {
	t.Helper()
	before := h.refused()
	sub := h.send(t, sreq, id, "mcollective.node."+node)
	if !wantReply {
		// The host refuses before it dispatches, so once the refusal is
		// counted no reply can follow; the short wait catches a bug that
		// would both count and reply.
		eventually(t, 10*time.Second, "the request was not refused", func() bool { return h.refused() > before })
		if msg, err := sub.NextMsg(200 * time.Millisecond); err == nil {
			t.Fatalf("got a reply, want none: %s", msg.Data)
		}
		return protocol.RPCReply{}
	}
	msg, err := sub.NextMsg(20 * time.Second)
	if err != nil {
		t.Fatalf("no reply: %v", err)
	}
	return replyBody(t, msg.Data)
}

// replyBody unwraps a reply payload down to its SimpleRPC body.
func replyBody(t testing.TB, payload []byte) protocol.RPCReply {
	t.Helper()
	_, body, err := client.DecodeReply(payload)
	if err != nil {
		t.Fatalf("reply %s: %v", payload, err)
	}
	return *body
}

// clientIn is a client addressing another collective.
func (h *harness) clientIn(collective string) *client.Client {
	return client.New(h.nc, client.Config{Identity: "rip.mcollective", Collective: collective})
}

// refused counts the requests the host turned away before dispatch.
func (h *harness) refused() int64 {
	s := h.host.Stats()
	return s.Unvalidated + s.TTLExpired + s.Filtered + s.UnknownAgent
}

// discovers reports whether the node answers a discovery ping with filter
// f, waiting for either its pong or the host counting the filter mismatch.
func (h *harness) discovers(t *testing.T, f *protocol.Filter) bool {
	t.Helper()
	sreq, id := unsigned(t, "discovery", "cGluZw==", f)
	before := h.host.Stats().Filtered
	sub := h.send(t, sreq, id, "mcollective.broadcast.agent.discovery")
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if msg, err := sub.NextMsg(20 * time.Millisecond); err == nil {
			tr, err := v1.DecodeTransport(msg.Data)
			if err != nil || tr.Headers.MCSender != node {
				t.Fatalf("discovery reply %s: %v", msg.Data, err)
			}
			return true
		}
		if h.host.Stats().Filtered > before {
			return false
		}
	}
	t.Fatal("neither a discovery reply nor a filtered request within 20s")
	return false
}

// send publishes a secure request from rip.mcollective on subject and
// returns the subscription its reply will arrive on, closed at cleanup.
func (h *harness) send(t *testing.T, sreq *v1.SecureRequest, id, subject string) *nats.Subscription {
	t.Helper()
	replyTo := client.ReplySubject("mcollective", "choria=rip.mcollective", id)
	sub, err := h.nc.SubscribeSync(replyTo)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	payload, err := v1.EncodeRequest(sreq, replyTo, "rip.mcollective")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.nc.Publish(subject, payload); err != nil {
		t.Fatal(err)
	}
	return sub
}
