package main_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/agent-host/agent-host/protocol"
	"github.com/agent-host/agent-host/protocol/client"
)

// defaultConfig is where `agent-host run` looks without --config, as a
// Choria server's packages do.
const defaultConfig = "/etc/choria/server.conf"

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestSIGHUPUnderLoad sends a real SIGHUP to `agent-host run`, again and
// again, while requests run and arrive: none fails, each reload makes the
// facts changed on disk visible at once, and SIGTERM still drains.
func TestSIGHUPUnderLoad(t *testing.T) {
	dir := t.TempDir()
	plugins := filepath.Join(dir, "plugins")
	if err := os.MkdirAll(plugins, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-R", filepath.Join(repoRoot, "testdata", "e2e", "agents", "shagent"), plugins).CombinedOutput(); err != nil {
		t.Fatalf("copying shagent: %v\n%s", err, out)
	}
	facts := filepath.Join(dir, "facts.json")
	writeAtomically(t, facts, `{"role":"web"}`)
	addr := freeAddr(t)
	conf := filepath.Join(dir, "server.conf")
	writeAtomically(t, conf, strings.Join([]string{
		"identity = node1.example.net",
		"collectives = mcollective",
		"plugin.security.provider = insecure",
		"plugin.agent_host.embedded_broker = " + addr,
		"plugin.yaml = " + facts,
		"rpcauthorization = false",
		"plugin.agent_host.shutdown_grace = 20s",
		"",
	}, "\n"))
	// Where systemd would listen for Type=notify's messages.
	notes := listenNotify(t)
	run, logs := startRun(t, "run", "--config", conf, "--plugins", plugins)

	nc, err := nats.Connect("nats://" + addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	cl := client.New(nc, client.Config{Identity: "rip.mcollective"})
	call := func(agent, action, data string) (protocol.RPCReply, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		f := protocol.NewFilter()
		f.Agent = []string{agent}
		res, err := cl.Request(ctx, []string{"node1.example.net"}, agent, action, json.RawMessage(data), f)
		switch {
		case err != nil:
			return protocol.RPCReply{}, err
		case len(res.Replies) != 1 || res.Replies[0].Err != nil:
			return protocol.RPCReply{}, fmt.Errorf("replies %+v", res)
		case res.Replies[0].Body.Statuscode != protocol.OK:
			return res.Replies[0].Body, fmt.Errorf("status %d %q", res.Replies[0].Body.Statuscode, res.Replies[0].Body.Statusmsg)
		}
		return res.Replies[0].Body, nil
	}

	var (
		done     = make(chan struct{})
		wg       sync.WaitGroup
		served   atomic.Int64
		failMu   sync.Mutex
		failures []string
	)
	for i := range 4 {
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-done:
					return
				default:
				}
				agent, action, data := "rpcutil", "ping", `{}`
				if (i+n)%2 == 1 {
					agent, action, data = "shagent", "echo", `{"message":"hi"}`
				}
				if _, err := call(agent, action, data); err != nil {
					failMu.Lock()
					failures = append(failures, fmt.Sprintf("%s#%s: %v", agent, action, err))
					failMu.Unlock()
					continue
				}
				served.Add(1)
			}
		})
	}

	const hups = 20
	reloaded := regexp.MustCompile(`msg=reloaded `)
	for i := range hups {
		role := fmt.Sprintf("db%d", i)
		writeAtomically(t, facts, fmt.Sprintf(`{"role":%q}`, role))
		if err := run.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for len(reloaded.FindAllString(logs.String(), -1)) < i+1 {
			if time.Now().After(deadline) {
				t.Fatalf("no reload logged after SIGHUP %d:\n%s", i+1, logs.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
		r, err := call("rpcutil", "get_fact", `{"fact":"role"}`)
		if want := fmt.Sprintf(`{"fact":"role","value":%q}`, role); err != nil || string(r.Data) != want {
			t.Errorf("after SIGHUP %d: get_fact = %s (%v), want %s", i+1, r.Data, err, want)
		}
		// Let the load run between reloads too.
		time.Sleep(50 * time.Millisecond)
	}
	close(done)
	wg.Wait()

	// A request in flight when SIGTERM comes still finishes: the agent
	// replies once "open" exists, after the signal.
	gated := make(chan error, 1)
	go func() {
		_, err := call("shagent", "gate", `{}`)
		gated <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for b, _ := os.ReadFile(filepath.Join(plugins, "shagent", "runs")); !strings.Contains(string(b), "gate"); b, _ = os.ReadFile(filepath.Join(plugins, "shagent", "runs")) {
		if time.Now().After(deadline) {
			t.Fatal("the gated request did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		_ = os.WriteFile(filepath.Join(plugins, "shagent", "open"), nil, 0o644)
	}()
	run.stop(t)
	if err := <-gated; err != nil {
		t.Errorf("the request in flight at SIGTERM: %v", err)
	}

	if len(failures) > 0 {
		t.Errorf("%d requests failed during %d SIGHUPs; first: %s", len(failures), hups, failures[0])
	}
	want := []string{"READY=1"}
	for range hups {
		want = append(want, "RELOADING=1", "READY=1")
	}
	want = append(want, "STOPPING=1")
	if got := notes(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("systemd was told %q, want %q", got, want)
	}
	if served.Load() < hups {
		t.Errorf("only %d requests were served", served.Load())
	}
	t.Logf("%d requests served during %d SIGHUPs, %d failed", served.Load(), hups, len(failures))
}

// listenNotify makes a socket like systemd's NOTIFY_SOCKET for the
// processes the test starts, and returns what they sent so far.
func listenNotify(t *testing.T) func() []string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	var mu sync.Mutex
	var got []string
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			mu.Lock()
			got = append(got, string(buf[:n]))
			mu.Unlock()
		}
	}()
	return func() []string {
		// Datagrams already sent are in the socket's buffer: give the
		// reader a moment to take them.
		time.Sleep(100 * time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
}

func writeAtomically(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestRunDefaultConfig: without --config, run reads Choria's server
// configuration path, and says so when it is not there.
func TestRunDefaultConfig(t *testing.T) {
	if _, err := os.Stat(defaultConfig); err == nil {
		t.Skipf("%s exists on this machine; the test needs it absent", defaultConfig)
	}
	out, err := agentHost("run").CombinedOutput()
	if exitCode(err) != 1 || !strings.Contains(string(out), defaultConfig) || !strings.Contains(string(out), "--config") {
		t.Errorf("run without --config: exit %d, want 1 and an error naming %s and --config:\n%s", exitCode(err), defaultConfig, out)
	}
}

// TestServiceUnit checks dist/agent-host.service: systemd accepts it, it
// starts `agent-host run` with flags the command has, reloads with SIGHUP
// and leaves time for the shutdown drain.
func TestServiceUnit(t *testing.T) {
	unit := filepath.Join(repoRoot, "dist", "agent-host.service")
	b, err := os.ReadFile(unit)
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if ok && !strings.HasPrefix(k, "#") {
			settings[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	for k, want := range map[string]string{
		"Type":       "notify",
		"ExecReload": "/bin/kill -HUP $MAINPID",
		"KillMode":   "mixed",
		"Restart":    "on-failure",
	} {
		if settings[k] != want {
			t.Errorf("%s = %q, want %q", k, settings[k], want)
		}
	}
	if d, err := time.ParseDuration(settings["TimeoutStopSec"]); err != nil || d <= 10*time.Second {
		t.Errorf("TimeoutStopSec = %q, want more than the default shutdown grace (10s)", settings["TimeoutStopSec"])
	}

	// The command line must be one the binary takes: run it with --help.
	argv := strings.Fields(settings["ExecStart"])
	if len(argv) < 2 || filepath.Base(argv[0]) != "agent-host" || argv[1] != "run" {
		t.Fatalf("ExecStart = %q, want agent-host run ...", settings["ExecStart"])
	}
	out, err := agentHost(append(argv[1:], "--help")...).CombinedOutput()
	if err != nil {
		t.Errorf("agent-host %s --help: %v\n%s", strings.Join(argv[1:], " "), err, out)
	}
	if !strings.Contains(settings["ExecStart"], "--config="+defaultConfig) && !strings.Contains(settings["ExecStart"], "--config "+defaultConfig) {
		t.Errorf("ExecStart does not name %s", defaultConfig)
	}

	// systemd's own check, with ExecStart pointing at the built binary.
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Logf("systemd-analyze is not installed: the unit's syntax is not checked by systemd")
		return
	}
	tmp := filepath.Join(t.TempDir(), "agent-host.service")
	text := strings.Replace(string(b), "ExecStart="+argv[0], "ExecStart="+bin, 1)
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command(analyze, "verify", tmp).CombinedOutput()
	// verify also complains about the environment (no systemd running in
	// a container, units it cannot find); only lines about this file count.
	var problems []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "agent-host.service") {
			problems = append(problems, line)
		}
	}
	if len(problems) > 0 {
		t.Errorf("systemd-analyze verify (%v):\n%s", err, strings.Join(problems, "\n"))
	}
}

// TestSIGHUPReopensTheLogFile: after logrotate moves the log file away, a
// SIGHUP makes the host log to a new file at the configured path.
func TestSIGHUPReopensTheLogFile(t *testing.T) {
	dir := t.TempDir()
	logfile := filepath.Join(dir, "agent-host.log")
	conf := filepath.Join(dir, "server.conf")
	writeAtomically(t, conf, strings.Join([]string{
		"identity = node1.example.net",
		"plugin.security.provider = insecure",
		"plugin.agent_host.embedded_broker = " + freeAddr(t),
		"rpcauthorization = false",
		"logfile = " + logfile,
		"",
	}, "\n"))
	cmd := agentHost("run", "--config", conf, "--plugins", dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	logged := func(path, what string) bool {
		b, _ := os.ReadFile(path)
		return strings.Contains(string(b), what)
	}
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s did not happen", what)
			}
		}
	}
	waitUntil("serving, in the log file", func() bool { return logged(logfile, "agent-host serving") })

	rotated := logfile + ".1"
	if err := os.Rename(logfile, rotated); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitUntil("the reload logged in a new file", func() bool { return logged(logfile, `"msg":"reloaded"`) })
	if logged(rotated, "SIGHUP") {
		t.Errorf("the SIGHUP was logged to the rotated file:\n%s", must(os.ReadFile(rotated)))
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
