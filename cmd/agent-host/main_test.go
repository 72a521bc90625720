package main_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/agent-host/agent-host/host/config"
	"github.com/agent-host/agent-host/host/hosttest"
)

var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "agent-host-cli")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "agent-host")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building agent-host: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// repoRoot is where the README's commands run.
const repoRoot = "../.."

// devConfig is testdata/config/dev.conf on a free port, so the test does
// not collide with a `make run` on the default port.
func devConfig(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "testdata", "config", "dev.conf"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	conf := strings.Replace(string(b), "embedded_broker = 127.0.0.1:4222", "embedded_broker = "+addr, 1)
	if conf == string(b) {
		t.Fatal("dev.conf no longer sets plugin.agent_host.embedded_broker = 127.0.0.1:4222")
	}
	// Policies are read beside the configuration file, as in Choria.
	dir := t.TempDir()
	if out, err := exec.Command("cp", "-R", filepath.Join(repoRoot, "testdata", "config", "policies"), dir).CombinedOutput(); err != nil {
		t.Fatalf("copying the policies: %v\n%s", err, out)
	}
	path := filepath.Join(dir, "dev.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestDevConfigPolicy: `make run` authorizes with a Rego policy that
// allows every request, beside dev.conf where Choria looks for it.
func TestDevConfigPolicy(t *testing.T) {
	dev := filepath.Join(repoRoot, "testdata", "config", "dev.conf")
	cfg, err := config.Load(dev)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.RPCAuthorization || cfg.RPCAuthProvider != "rego_policy" {
		t.Errorf("dev.conf: rpcauthorization %v, rpcauthprovider %q; want rego_policy", cfg.RPCAuthorization, cfg.RPCAuthProvider)
	}
	b, err := os.ReadFile(filepath.Join(filepath.Dir(dev), "policies", "rego", "default.rego"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"\npackage io.choria.mcorpc.authpolicy\n", "\ndefault allow := true\n"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("default.rego lacks %q:\n%s", want, b)
		}
	}
}

// TestDefaultAuthorization: with Choria's defaults (rpcauthorization on,
// action_policy) and no policy files every request is denied, rpcutil's
// too, with Choria's reply, while discovery still answers; the host says
// at start-up where it reads policies and logs each denial.
func TestDefaultAuthorization(t *testing.T) {
	conf := devConfig(t)
	b, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	// Back to Choria's defaults.
	var lines []string
	for line := range strings.Lines(string(b)) {
		if !strings.HasPrefix(line, "rpcauth") {
			lines = append(lines, line)
		}
	}
	dir := t.TempDir()
	conf = filepath.Join(dir, "server.conf")
	if err := os.WriteFile(conf, []byte(strings.Join(lines, "")), 0o644); err != nil {
		t.Fatal(err)
	}
	run, logs := startRun(t, "run", "--config", conf, "--plugins", "testdata/agents")

	out, err := agentHost("req", "rpcutil", "ping", "--json", "--config", conf).CombinedOutput()
	if exitCode(err) != 1 || !strings.Contains(string(out), "You are not authorized to call this agent or action") {
		t.Errorf("req rpcutil ping: exit %d, want 1 and Choria's denial\n%s", exitCode(err), out)
	}
	out, err = agentHost("req", "discovery", "ping", "--config", conf).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Finished processing 1 / 1 hosts") {
		t.Errorf("req discovery ping: %v\n%s", err, out)
	}
	run.stop(t)
	for _, want := range []string{
		"authorizing with actionpolicy files from " + filepath.Join(dir, "policies"),
		"Denying choria=",
		" access to rpcutil#ping based on authorization policy for request ",
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("the log lacks %q:\n%s", want, logs.String())
		}
	}
}

func agentHost(args ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	cmd.Dir = repoRoot
	return cmd
}

// TestQuickStart runs what the README shows: `make run`'s command, then
// `agent-host req parrot echo message=hello`.
func TestQuickStart(t *testing.T) {
	if out, err := exec.Command("python3", "-c", "import mco_agent").CombinedOutput(); err != nil {
		t.Fatalf("py-mco-agent is not importable by python3 on PATH (run `make test`): %v\n%s", err, out)
	}
	conf := devConfig(t)
	run, logs := startRun(t, "run", "--config", conf, "--plugins", "testdata/agents")

	out, err := agentHost("req", "parrot", "echo", "message=hello", "--config", conf).CombinedOutput()
	if err != nil {
		t.Fatalf("req failed: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "dev1.example.net") || !strings.Contains(string(out), "message: hello") ||
		!strings.Contains(string(out), "Finished processing 1 / 1 hosts") {
		t.Errorf("req output:\n%s", out)
	}

	out, err = agentHost("req", "rpcutil", "get_fact", "fact=os.family", "-F", "role=web", "--json", "--config", conf).CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"value": "Debian"`) {
		t.Errorf("req rpcutil get_fact: %v\n%s", err, out)
	}

	out, err = agentHost("req", "rpcutil", "ping", "-F", "role=db", "--dt", "500ms", "--config", conf).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no node answered discovery: check the filter") {
		t.Errorf("req with a filter matching nothing: err %v\n%s", err, out)
	}

	out, err = agentHost("req", "parot", "echo", "--dt", "500ms", "--config", conf).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no node serves agent parot: 1 node(s) matched the filter without it, so the agent name may be wrong") {
		t.Errorf("req of a misspelt agent: err %v\n%s", err, out)
	}

	out, err = agentHost("req", "discovery", "ping", "--config", conf).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Finished processing 1 / 1 hosts") || strings.Contains(string(out), "no response") {
		t.Errorf("req discovery ping: %v\n%s", err, out)
	}

	// The sdk-go example runs as go-plugin plugins, with no configuration.
	out, err = agentHost("req", "greeter", "hello", "name=world", "--config", conf).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "hello, world") || !strings.Contains(string(out), "Debian") {
		t.Errorf("req greeter hello: %v\n%s", err, out)
	}
	if !strings.Contains(logs.String(), `msg="worker started" component=pool agent=greeter`) ||
		!strings.Contains(logs.String(), `msg="serving the agent with a pool of go-plugin plugins" agent=greeter`) {
		t.Errorf("the greeter was not served by a go-plugin plugin:\n%s", logs.String())
	}

	out, err = agentHost("req", "parrot", "echo", "message=a;b", "--config", conf).CombinedOutput()
	if code := exitCode(err); code != 1 || !strings.Contains(string(out), "Validation failed: validation failed for input 'message'") {
		t.Errorf("req with an invalid input: exit %d\n%s", code, out)
	}

	run.stop(t)
	if !strings.Contains(logs.String(), "started an embedded NATS broker") || !strings.Contains(logs.String(), "SECURITY DISABLED") {
		t.Errorf("run did not announce the embedded broker and insecure mode:\n%s", logs.String())
	}
}

// running is an `agent-host run` started by a test.
type running struct {
	cmd     *exec.Cmd
	done    chan error
	logs    *syncBuffer
	out     *syncBuffer // stdout
	stopped bool
}

// syncBuffer is a log buffer the reader goroutine writes while the test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) WriteString(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.WriteString(s)
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startRun starts agent-host with args and waits until it serves; it is
// killed when the test ends unless stopped first.
func startRun(t *testing.T, args ...string) (*running, *syncBuffer) {
	t.Helper()
	r := &running{cmd: agentHost(args...), done: make(chan error, 1), logs: &syncBuffer{}, out: &syncBuffer{}}
	r.cmd.Stdout = r.out
	stderr, err := r.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	serving := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			r.logs.WriteString(sc.Text() + "\n")
			if !once && strings.Contains(sc.Text(), "agent-host serving") {
				once = true
				close(serving)
			}
		}
		r.done <- r.cmd.Wait()
	}()
	t.Cleanup(func() {
		if !r.stopped {
			_ = r.cmd.Process.Kill()
			<-r.done
		}
	})
	select {
	case <-serving:
	case <-time.After(30 * time.Second):
		t.Fatalf("agent-host run did not start serving:\n%s", r.logs.String())
	}
	return r, r.logs
}

// stop sends SIGTERM and waits for a clean exit.
func (r *running) stop(t *testing.T) {
	t.Helper()
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-r.done:
		r.stopped = true
		if err != nil {
			t.Errorf("agent-host run exited with %v after SIGTERM:\n%s", err, r.logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("agent-host run did not stop after SIGTERM")
	}
}

// TestLeftoversMayBeKept: with plugin.agent_host.stop_leftovers off, what
// an agent starts and leaves running lives on, as under Choria, for
// agents that start daemons; the host does not become a subreaper.
func TestLeftoversMayBeKept(t *testing.T) {
	plugins := t.TempDir()
	src := filepath.Join(repoRoot, "testdata", "e2e", "agents", "shagent")
	for _, f := range []string{"shagent", "shagent.json"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(plugins, "shagent"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(plugins, "shagent", f), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	conf := devConfig(t)
	f, err := os.OpenFile(conf, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(f, "plugin.agent_host.stop_leftovers = false")
	f.Close()
	run, logs := startRun(t, "run", "--config", conf, "--plugins", plugins)
	out, err := agentHost("req", "shagent", "detach", "--config", conf, "--plugins", plugins).CombinedOutput()
	if err != nil {
		t.Fatalf("req shagent detach: %v\n%s", err, out)
	}
	var pids []int
	for _, name := range []string{"detached.pid", "escaped.pid"} {
		b, err := os.ReadFile(filepath.Join(plugins, "shagent", name))
		if err != nil {
			t.Fatal(err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, pid)
		t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	}
	time.Sleep(2500 * time.Millisecond) // longer than a stop's grace and a sweep
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); err != nil {
			t.Errorf("the agent's child %d was stopped although stop_leftovers is off: %v\n%s", pid, err, logs.String())
		}
	}
	run.stop(t)
}

func exitCode(err error) int {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	}
	return -1
}

func TestAgentsCommand(t *testing.T) {
	// Activation checks run the agents, and some record that beside
	// themselves: give them a copy.
	e2e := t.TempDir()
	if out, err := exec.Command("cp", "-R", filepath.Join(repoRoot, "testdata", "e2e", "agents")+"/.", e2e).CombinedOutput(); err != nil {
		t.Fatalf("copying the test agents: %v\n%s", err, out)
	}
	out, err := agentHost("agents", "--plugins", "testdata/agents", "--plugins", e2e).CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{"parrot", "nodeinfo", "directory", "pyagent", "flat", "echo,exit,crash,hang,", "inactive"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("agents output lacks %q:\n%s", want, out)
		}
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "inactive ") && !strings.Contains(line, " no") {
			t.Errorf("inactive agent not reported inactive: %q", line)
		}
		if f := strings.Fields(line); len(f) > 4 && (f[0] == "greeter") != (f[4] == "plugin") {
			t.Errorf("only the sdk-go greeter should run as go-plugin plugins: %q", line)
		}
	}
}

func TestBadConfigStopsStartup(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "bad.conf")
	if err := os.WriteFile(conf, []byte("identity = n1.example.net\nttl = abc\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := agentHost("run", "--config", conf).CombinedOutput()
	if exitCode(err) != 1 || !strings.Contains(string(out), `ttl: "abc" is not an integer`) || strings.Count(strings.TrimSpace(string(out)), "\n") != 0 {
		t.Errorf("bad config: exit %d, want 1 and a one-line error naming the key:\n%s", exitCode(err), out)
	}
}

func TestNoBrokerWithFileSecurity(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "server.conf")
	if err := os.WriteFile(conf, []byte("identity = n1.example.net\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := agentHost("run", "--config", conf).CombinedOutput()
	if exitCode(err) != 1 || !strings.Contains(string(out), "set plugin.choria.middleware_hosts") {
		t.Errorf("file security without a broker: exit %d, want 1 and advice:\n%s", exitCode(err), out)
	}
}

func TestVersion(t *testing.T) {
	out, err := agentHost("version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "agent-host ") {
		t.Errorf("version: %v %q", err, out)
	}
}

// TestSignedOverTLS runs the binary the way a real deployment does: file
// security, a TLS broker, and `req` signing with a client certificate.
func TestSignedOverTLS(t *testing.T) {
	pki := hosttest.NewPKI(t)
	broker := hosttest.NATS(t, hosttest.WithTLS(pki))
	nodeCert, nodeKey := pki.Issue(t, "node1.example.net")
	ripCert, ripKey := pki.Issue(t, "rip.mcollective")
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	common := "collectives = mcollective\nplugin.security.provider = file\nplugin.security.file.ca = " + pki.CAFile +
		"\nplugin.choria.middleware_hosts = " + broker.URL() + "\n"
	server := write("server.conf", "identity = node1.example.net\nrpcauthorization = false\n"+common+
		"plugin.security.file.certificate = "+nodeCert+"\nplugin.security.file.key = "+nodeKey+"\n")
	client := write("client.conf", "identity = rip.mcollective\n"+common+
		"plugin.security.file.certificate = "+ripCert+"\nplugin.security.file.key = "+ripKey+"\n")

	run := agentHost("run", "--config", server)
	var logs hosttest.Buffer
	run.Stderr = &logs
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = run.Process.Signal(syscall.SIGTERM)
		_ = run.Wait()
		if t.Failed() {
			t.Logf("agent-host log:\n%s", logs.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(logs.String(), "agent-host serving") {
		if time.Now().After(deadline) {
			t.Fatal("agent-host run did not start serving")
		}
		time.Sleep(50 * time.Millisecond)
	}

	out, err := agentHost("req", "rpcutil", "ping", "-I", "node1.example.net", "--config", client).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Finished processing 1 / 1 hosts") {
		t.Fatalf("signed req over TLS: %v\n%s", err, out)
	}
	if !strings.Contains(logs.String(), `callerid="choria=rip.mcollective" action=ping statuscode=0`) {
		t.Errorf("the host did not log the verified ping from rip.mcollective")
	}

	// Without a certificate the client sends Choria's "insecure" markers,
	// which file security refuses: no reply, and the host logs why.
	anon := write("anon.conf", "identity = rip.mcollective\nplugin.choria.middleware_hosts = "+broker.URL()+"\n")
	out, err = agentHost("req", "rpcutil", "ping", "-I", "node1.example.net", "--timeout", "2s", "--config", anon).CombinedOutput()
	if exitCode(err) != 1 || !strings.Contains(string(out), "no response") {
		t.Errorf("unsigned req: exit %d, want 1 with no response\n%s", exitCode(err), out)
	}
	if !strings.Contains(logs.String(), "request failed security verification") {
		t.Errorf("the host did not log the refused unsigned request")
	}
}
