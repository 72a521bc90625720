package grpcplugin_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/agent-host/agent-host/protocol"
	gp "github.com/agent-host/agent-host/protocol/grpcplugin"
	"github.com/agent-host/agent-host/runner"
	"github.com/agent-host/agent-host/runner/grpcplugin"
	"github.com/agent-host/agent-host/runner/pool"
	"github.com/agent-host/agent-host/runner/runnertest"
)

// patience bounds what should take a fraction of it.
const patience = 10 * time.Second

// agentExe is the sdk-go pooltest agent (testdata/agents-src/pooltest),
// which serves go-plugin as it serves the other protocols.
var agentExe string

func TestMain(m *testing.M) {
	if os.Getenv("GRPCPLUGIN_ACT_AS_HOST") != "" {
		os.Exit(actAsHost())
	}
	if mode := os.Getenv("GRPCPLUGIN_ACT_AS_PLUGIN"); mode != "" {
		os.Exit(actAsPlugin(mode))
	}
	// Not a subreaper: its sweeper would stop the plugin of a killed
	// host (TestNoPluginLeftWhenHostIsKilled) whatever the plugin does.
	dir, err := os.MkdirTemp("", "grpcplugintest")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	agentExe = filepath.Join(dir, "pooltest")
	build := exec.Command("go", "build", "-o", agentExe, "../../testdata/agents-src/pooltest")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the pooltest agent:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// newPool starts a pool of plugins of exe, closed when the test ends.
func newPool(t testing.TB, cfg pool.Config, tcfg grpcplugin.Config, logs *runnertest.Logs) *pool.Pool {
	t.Helper()
	if cfg.Executable == "" {
		cfg.Executable = agentExe
	}
	cfg.Transport = grpcplugin.New(tcfg)
	return runnertest.NewPool(t, cfg, logs, patience)
}

func TestPluginServesRequests(t *testing.T) {
	logs := &runnertest.Logs{}
	p := newPool(t, pool.Config{MaxWorkers: 1}, grpcplugin.Config{}, logs)
	rep, err := runnertest.Run(t, p, patience, "echo", `{"message":"hi"}`)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Message string
		PID     int
	}
	if err := json.Unmarshal(rep.Data, &d); err != nil || d.Message != "hi" {
		t.Fatalf("reply %+v (%v)", rep, err)
	}
	// Concurrent requests share the one plugin, which announced 4.
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			if got := runnertest.PIDOf(t, p, patience, "sleep", `{"ms":20}`); got != d.PID {
				errs <- fmt.Errorf("pid %d, want the warm plugin's %d", got, d.PID)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if s := p.Stats(); s.Started != 1 {
		t.Errorf("started %d plugins, want 1", s.Started)
	}
	if p.Capacity() != 4 {
		t.Errorf("capacity %d, want the 4 the plugin announced", p.Capacity())
	}
	// The minimal environment of exec mode, and go-plugin's own.
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", d.PID))
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range strings.Split(strings.TrimRight(string(env), "\x00"), "\x00") {
		key, _, _ := strings.Cut(kv, "=")
		switch {
		case key == "PATH", key == "CHORIA_EXTERNAL_CONFIG", key == "AGENT_HOST_PLUGIN", strings.HasPrefix(key, "PLUGIN_"):
		default:
			t.Errorf("the plugin got %s from the host", key)
		}
	}
	// What the plugin prints after its handshake is logged.
	if _, err := runnertest.Run(t, p, patience, "noisy", `{}`); err != nil {
		t.Fatal(err)
	}
	runnertest.WaitFor(t, "the plugin's stdout logged", patience, func() bool { return logs.Find("hello from stdout") != nil })
	runnertest.WaitFor(t, "the plugin's stderr logged", patience, func() bool { return logs.Find("hello from stderr") != nil })
}

func TestCrashRestartsOthersUnaffected(t *testing.T) {
	p := newPool(t, pool.Config{MaxWorkers: 2, Concurrency: 1}, grpcplugin.Config{}, nil)
	slow := make(chan error, 1)
	go func() {
		rep, err := runnertest.Run(t, p, patience, "sleep", `{"ms":1500}`)
		if err == nil && rep.Statuscode != protocol.OK {
			err = fmt.Errorf("%+v", rep)
		}
		slow <- err
	}()
	runnertest.WaitFor(t, "the slow request running", patience, func() bool { return p.Stats().Running == 1 })
	_, err := runnertest.Run(t, p, patience, "crash", `{"message":"dying on purpose"}`)
	var f *runner.Failure
	if !errors.As(err, &f) || !strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), "dying on purpose") {
		t.Fatalf("crash: %v, want a failure with the exit status and the stderr", err)
	}
	if err := <-slow; err != nil {
		t.Fatalf("the request on the other plugin: %v", err)
	}
	runnertest.PIDOf(t, p, patience, "echo", `{}`)
	if s := p.Stats(); s.Failures != 1 {
		t.Errorf("stats %+v, want one failure", s)
	}
}

func TestHangIsCancelledThenKilled(t *testing.T) {
	p := newPool(t, pool.Config{MaxWorkers: 1, CancelGrace: 200 * time.Millisecond}, grpcplugin.Config{}, nil)
	before := runnertest.PIDOf(t, p, patience, "echo", `{}`)
	start := time.Now()
	_, err := runnertest.Run(t, p, 300*time.Millisecond, "hang", `{}`)
	if !errors.Is(err, runner.ErrTimeout) {
		t.Fatalf("hang: %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("the hang took %s to fail", d)
	}
	runnertest.WaitProcessGone(t, before, patience)
	if after := runnertest.PIDOf(t, p, patience, "echo", `{}`); after == before {
		t.Errorf("the hung plugin %d still serves", before)
	}
}

func TestCancelledSleepAnswers(t *testing.T) {
	p := newPool(t, pool.Config{MaxWorkers: 1, CancelGrace: 2 * time.Second}, grpcplugin.Config{}, nil)
	before := runnertest.PIDOf(t, p, patience, "echo", `{}`)
	// The plugin's action sees the same deadline, so it may answer
	// (aborted) just before the host gives up.
	rep, err := runnertest.Run(t, p, 200*time.Millisecond, "sleep", `{"ms":60000}`)
	if !errors.Is(err, runner.ErrTimeout) && (err != nil || rep.Statuscode != protocol.Aborted) {
		t.Fatalf("sleep: %+v, %v, want ErrTimeout or an aborted reply", rep, err)
	}
	// The plugin honoured its deadline: it was not killed.
	if after := runnertest.PIDOf(t, p, patience, "echo", `{}`); after != before {
		t.Errorf("the plugin was replaced (%d, then %d)", before, after)
	}
}

func TestHandshakeFailures(t *testing.T) {
	cases := []struct {
		name string
		cfg  grpcplugin.Config
		want string
	}{
		{"wrong cookie", grpcplugin.Config{MagicCookieValue: "not-the-cookie"}, "not meant to be executed directly"},
		{"wrong version", grpcplugin.Config{Versions: []int{2}}, "version 1 of the Agent service, which the host did not offer ([2])"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newPool(t, pool.Config{RestartIntensity: 2, HandshakeTimeout: 5 * time.Second}, tc.cfg, nil)
			_, err := runnertest.Run(t, p, patience, "echo", `{}`)
			if !errors.Is(err, pool.ErrFailed) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrFailed saying %q", err, tc.want)
			}
		})
	}
}

func TestStrayStdoutBeforeHandshake(t *testing.T) {
	// What a careless init() does: print before Serve.
	wrapper := filepath.Join(t.TempDir(), "pooltest")
	script := "#!/bin/sh\necho 'starting up'\necho '1|1|garbage'\nprintf '%s\\n' 'x|y|unix|/nowhere|grpc-not'\nexec " + agentExe + "\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	logs := &runnertest.Logs{}
	p := newPool(t, pool.Config{Executable: wrapper}, grpcplugin.Config{}, logs)
	runnertest.PIDOf(t, p, patience, "echo", `{}`)
	var stray []string
	for _, r := range logs.Records() {
		if strings.Contains(r.Message, "before its go-plugin handshake") {
			stray = append(stray, r.Attrs["line"])
		}
	}
	if len(stray) != 3 || stray[0] != "starting up" {
		t.Errorf("stray lines logged: %q, want the 3 the plugin printed", stray)
	}
}

func TestPingKeepsHealthyPlugin(t *testing.T) {
	p := newPool(t, pool.Config{MaxWorkers: 1, PingInterval: 50 * time.Millisecond, PingTimeout: time.Second}, grpcplugin.Config{}, nil)
	before := runnertest.PIDOf(t, p, patience, "echo", `{}`)
	time.Sleep(400 * time.Millisecond)
	if after := runnertest.PIDOf(t, p, patience, "echo", `{}`); after != before {
		t.Errorf("a healthy plugin was replaced after pings (%d, then %d)", before, after)
	}
}

func TestRecycledAfterRequests(t *testing.T) {
	p := newPool(t, pool.Config{MaxWorkers: 1, MaxRequests: 2}, grpcplugin.Config{}, nil)
	first := runnertest.PIDOf(t, p, patience, "echo", `{}`)
	runnertest.PIDOf(t, p, patience, "echo", `{}`)
	runnertest.WaitProcessGone(t, first, patience)
	if next := runnertest.PIDOf(t, p, patience, "echo", `{}`); next == first {
		t.Errorf("the plugin was not recycled")
	}
}

func TestDrainOnClose(t *testing.T) {
	p := newPool(t, pool.Config{MaxWorkers: 1}, grpcplugin.Config{}, nil)
	pid := runnertest.PIDOf(t, p, patience, "echo", `{}`)
	done := make(chan error, 1)
	go func() {
		rep, err := runnertest.Run(t, p, patience, "sleep", `{"ms":500}`)
		if err == nil && rep.Statuscode != protocol.OK {
			err = fmt.Errorf("%+v", rep)
		}
		done <- err
	}()
	runnertest.WaitFor(t, "the request running", patience, func() bool { return p.Stats().Running == 1 })
	ctx, cancel := context.WithTimeout(t.Context(), patience)
	defer cancel()
	if err := p.CloseFor(ctx, "reload"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("the request in flight during the close: %v", err)
	}
	runnertest.WaitProcessGone(t, pid, patience)
}

func TestNoPluginLeftWhenHostIsKilled(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	host := exec.Command(self)
	host.Env = append(os.Environ(), "GRPCPLUGIN_ACT_AS_HOST=1", "POOLTEST_AGENT="+agentExe)
	runnertest.KillHost(t, host, patience)
}

// actAsHost runs a pool of plugins of POOLTEST_AGENT, prints its plugin's
// pid once a request ran, and waits to be killed.
func actAsHost() int {
	return runnertest.HoldPool(pool.Config{Executable: os.Getenv("POOLTEST_AGENT"), Transport: grpcplugin.New(grpcplugin.Config{})}, patience)
}

// script writes an executable shell script of body, the plugin of a test.
func script(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pooltest")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// selfSigned returns a certificate in DER, as go-plugin's AutoMTLS sends.
func selfSigned(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestHandshakeLineWithCertificateFailsTheStart(t *testing.T) {
	if os.Getenv("GRPCPLUGIN_CERT_CHILD") == "" {
		// In a child: a host that panics takes the test binary with it.
		self, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(self, "-test.run", "^"+t.Name()+"$", "-test.v")
		cmd.Env = append(os.Environ(), "GRPCPLUGIN_CERT_CHILD=1")
		out, err := cmd.CombinedOutput()
		if err != nil || strings.Contains(string(out), "panic:") {
			t.Fatalf("the host with a plugin sending a certificate in its handshake line: %v\n%s", err, out)
		}
		return
	}
	cert := base64.RawStdEncoding.EncodeToString(selfSigned(t))
	exe := script(t, "echo \"1|1|unix|$PLUGIN_UNIX_SOCKET_DIR/x.sock|grpc|"+cert+"\"\nexec sleep 30\n")
	p := newPool(t, pool.Config{Executable: exe, MaxWorkers: 1, HandshakeTimeout: 2 * time.Second, RestartIntensity: 1}, grpcplugin.Config{}, nil)
	_, err := runnertest.Run(t, p, patience, "echo", `{}`)
	if !errors.Is(err, pool.ErrFailed) || !strings.Contains(err.Error(), "handshake line has 6 fields") {
		t.Fatalf("got %v, want the start failed for the handshake line's 6 fields", err)
	}
}

func TestHandshakeAddressOutsideTheSocketDirectoryIsRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dialed := make(chan struct{}, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			dialed <- struct{}{}
			c.Close()
		}
	}()
	other := filepath.Join(t.TempDir(), "other.sock")
	uln, err := net.Listen("unix", other)
	if err != nil {
		t.Fatal(err)
	}
	defer uln.Close()
	go func() {
		if c, err := uln.Accept(); err == nil {
			dialed <- struct{}{}
			c.Close()
		}
	}()
	cases := []struct{ name, line, want string }{
		{"tcp", "1|1|tcp|" + ln.Addr().String() + "|grpc", `names network "tcp", want unix`},
		{"unix elsewhere", "1|1|unix|" + other + "|grpc", "not one in the directory the host made for it"},
		{"unix relative", "1|1|unix|x.sock|grpc", "not one in the directory the host made for it"},
		{"unix climbing out", "1|1|unix|$PLUGIN_UNIX_SOCKET_DIR/../x.sock|grpc", "not one in the directory the host made for it"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			exe := script(t, "echo \""+tc.line+"\"\nexec sleep 30\n")
			p := newPool(t, pool.Config{Executable: exe, MaxWorkers: 1, HandshakeTimeout: 2 * time.Second, RestartIntensity: 1}, grpcplugin.Config{}, nil)
			_, err := runnertest.Run(t, p, patience, "echo", `{}`)
			if !errors.Is(err, pool.ErrFailed) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want the start failed saying %q", err, tc.want)
			}
			select {
			case <-dialed:
				t.Fatal("the host dialed the address the plugin's handshake line named")
			default:
			}
		})
	}
}

// misbehaving returns a plugin that is this test binary acting out mode
// (actAsPlugin).
func misbehaving(t *testing.T, mode string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return script(t, "GRPCPLUGIN_ACT_AS_PLUGIN="+mode+" exec "+self+"\n")
}

// actAsPlugin is a plugin that misbehaves as mode says.
func actAsPlugin(mode string) int {
	switch mode {
	case "wedged":
		// A gRPC server that takes connections but never answers (a
		// server stuck in Activate, say).
		path := filepath.Join(os.Getenv("PLUGIN_UNIX_SOCKET_DIR"), "wedged.sock")
		ln, err := net.Listen("unix", path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 7
		}
		srv := grpc.NewServer(grpc.UnknownServiceHandler(func(any, grpc.ServerStream) error { select {} }))
		fmt.Printf("1|1|unix|%s|grpc\n", path)
		_ = srv.Serve(ln)
		return 0
	}
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig:  plugin.HandshakeConfig{ProtocolVersion: gp.V1, MagicCookieKey: gp.MagicCookieKey, MagicCookieValue: gp.MagicCookieValue},
		VersionedPlugins: map[int]plugin.PluginSet{gp.V1: {gp.Name: &testPlugin{mode: mode}}},
		GRPCServer:       plugin.DefaultGRPCServer,
	})
	if mode == "slowexit" {
		// Cleanup longer than go-plugin's 2 s before its kill.
		time.Sleep(2500 * time.Millisecond)
		_ = os.WriteFile("exited-cleanly", nil, 0o644)
	}
	return 0
}

// testPlugin serves a testServer.
type testPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	mode string
}

func (p *testPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	gp.RegisterAgentServer(s, &testServer{mode: p.mode})
	return nil
}

func (p *testPlugin) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, errors.New("the plugin's side only")
}

// testServer is an Agent service whose Run misbehaves as its mode says.
type testServer struct {
	gp.UnimplementedAgentServer
	mode string
}

func (s *testServer) Activate(context.Context, *gp.ActivateRequest) (*gp.ActivateReply, error) {
	rep := &gp.ActivateReply{Activate: true, Agents: []string{"pooltest"}, Concurrency: 1, Sdk: "test/" + s.mode}
	if s.mode == "smalldoc" {
		rep.MaxDocumentBytes = 2048
	}
	return rep, nil
}

func (s *testServer) Run(context.Context, *gp.RunRequest) (*gp.RunReply, error) {
	if s.mode == "runerror" {
		return nil, status.Error(codes.Internal, "the action broke")
	}
	if s.mode == "flood" {
		// To fd 1 itself (what a child or a plugin in another language
		// writes) and to os.Stdout, which go-plugin forwards over its
		// stdio stream.
		fd1 := os.NewFile(1, "stdout")
		line := strings.Repeat("x", 1000) + "\n"
		for range 2000 {
			_, _ = fd1.WriteString("fd1 " + line)
			_, _ = os.Stdout.WriteString("stdio " + line)
		}
	}
	return &gp.RunReply{Reply: []byte(`{"statuscode":0,"statusmsg":"OK","data":{}}`)}, nil
}

func TestShutdownGraceIsHonoured(t *testing.T) {
	dir := t.TempDir()
	p := newPool(t, pool.Config{Executable: misbehaving(t, "slowexit"), MaxWorkers: 1, TempDir: dir, ShutdownGrace: 10 * time.Second}, grpcplugin.Config{}, nil)
	if _, err := runnertest.Run(t, p, patience, "echo", `{}`); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), patience)
	defer cancel()
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "exited-cleanly")); err != nil {
		t.Fatal("the plugin was stopped during its cleanup of 2.5 s, within a shutdown grace of 10 s")
	}
}

func TestShutdownGraceOverStopsThePlugin(t *testing.T) {
	p := newPool(t, pool.Config{Executable: misbehaving(t, "slowexit"), MaxWorkers: 1, ShutdownGrace: 300 * time.Millisecond, KillGrace: 200 * time.Millisecond}, grpcplugin.Config{}, nil)
	if _, err := runnertest.Run(t, p, patience, "echo", `{}`); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), patience)
	defer cancel()
	start := time.Now()
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("a plugin with a shutdown grace of 300ms took %s to stop", d)
	}
}

func TestWedgedPluginStartIsBoundedAndRetried(t *testing.T) {
	logs := &runnertest.Logs{}
	p := newPool(t, pool.Config{Executable: misbehaving(t, "wedged"), MaxWorkers: 1, HandshakeTimeout: 500 * time.Millisecond, RestartIntensity: 2}, grpcplugin.Config{}, logs)
	start := time.Now()
	_, err := runnertest.Run(t, p, patience, "echo", `{}`)
	if !errors.Is(err, pool.ErrFailed) || !strings.Contains(err.Error(), "2 failures") || !strings.Contains(err.Error(), "activation failed") {
		t.Fatalf("got %v after %s, want the pool failed after 2 failed activations", err, time.Since(start))
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("two starts bounded by a handshake timeout of 500ms took %s", d)
	}
	if s := p.Stats(); s.Failures != 2 {
		t.Errorf("stats %+v, want 2 failures", s)
	}
}

func TestPluginOutputIsWithinTheLogBudget(t *testing.T) {
	logs := &runnertest.Logs{}
	p := newPool(t, pool.Config{Executable: misbehaving(t, "flood"), MaxWorkers: 1, MaxLogBytes: 16 << 10}, grpcplugin.Config{}, logs)
	start := time.Now()
	if _, err := runnertest.Run(t, p, patience, "echo", `{}`); err != nil {
		t.Fatal(err)
	}
	// go-plugin's stdio stream may still be delivering.
	time.Sleep(500 * time.Millisecond)
	var fd1, stdio int
	for _, r := range logs.Records() {
		switch {
		case strings.HasPrefix(r.Message, "fd1 "):
			fd1 += len(r.Message)
		case strings.HasPrefix(r.Message, "stdio "):
			stdio += len(r.Message)
		}
	}
	// 16 KiB at once and 64 KiB a second after, both together.
	budget := 16<<10 + int(time.Since(start).Seconds()*float64(64<<10)) + 2000
	if fd1+stdio > budget {
		t.Fatalf("logged %d bytes from fd 1 and %d from go-plugin's stdio stream, of 4 MB written, want at most %d", fd1, stdio, budget)
	}
	if logs.Find("output beyond the log limit was not logged") == nil {
		t.Error("what was not logged was not counted")
	}
}

func TestNoSocketDirectoryLeftWhenTheStartFails(t *testing.T) {
	cases := []struct{ name, body string }{
		{"exec fails", ""},
		{"handshake refused", "echo '1|1|tcp|127.0.0.1:1|grpc'\nexec sleep 30\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			exe := script(t, tc.body)
			if tc.body == "" {
				if err := os.WriteFile(exe, []byte("#!/nonexistent/interpreter\n"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			p := newPool(t, pool.Config{Executable: exe, MaxWorkers: 1, TempDir: dir, RestartIntensity: 3}, grpcplugin.Config{}, nil)
			if _, err := runnertest.Run(t, p, patience, "echo", `{}`); !errors.Is(err, pool.ErrFailed) {
				t.Fatalf("got %v, want the pool failed", err)
			}
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				if strings.HasPrefix(e.Name(), "plugin-dir") {
					t.Errorf("socket directory %s left in the pool's TempDir", e.Name())
				}
			}
		})
	}
}

func TestGoPluginLogKeepsItsLevels(t *testing.T) {
	logs := &runnertest.Logs{}
	// go-plugin's Serve without a logger writes hclog's JSON on stderr.
	p := newPool(t, pool.Config{Executable: misbehaving(t, "plain"), MaxWorkers: 1}, grpcplugin.Config{}, logs)
	if _, err := runnertest.Run(t, p, patience, "echo", `{}`); err != nil {
		t.Fatal(err)
	}
	runnertest.WaitFor(t, "go-plugin's line logged", patience, func() bool { return logs.Find("plugin address") != nil })
	if r := logs.Find("plugin address"); r.Message != "plugin address" || r.Level != slog.LevelDebug || r.Attrs["network"] != "unix" {
		t.Errorf("go-plugin's debug line logged as %+v, want its message at debug with its fields", r)
	}
}

func TestActionsChildrenGetNoGoPluginVariables(t *testing.T) {
	p := newPool(t, pool.Config{MaxWorkers: 1}, grpcplugin.Config{}, nil)
	rep, err := runnertest.Run(t, p, patience, "spawn", `{}`)
	if err != nil {
		t.Fatal(err)
	}
	var d struct{ Child int }
	if err := json.Unmarshal(rep.Data, &d); err != nil || d.Child == 0 {
		t.Fatalf("reply %+v (%v)", rep, err)
	}
	defer syscall.Kill(d.Child, syscall.SIGKILL)
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", d.Child))
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range strings.Split(string(env), "\x00") {
		if strings.HasPrefix(kv, "AGENT_HOST_PLUGIN=") || strings.HasPrefix(kv, "PLUGIN_") {
			t.Errorf("the action's child inherited %s", kv)
		}
	}
}

func TestPluginsLowerDocumentLimitApplies(t *testing.T) {
	p := newPool(t, pool.Config{Executable: misbehaving(t, "smalldoc"), MaxWorkers: 1}, grpcplugin.Config{}, nil)
	if _, err := runnertest.Run(t, p, patience, "echo", `{}`); err != nil {
		t.Fatal(err)
	}
	_, err := runnertest.Run(t, p, patience, "echo", `{"message":"`+strings.Repeat("x", 4096)+`"}`)
	var f *runner.Failure
	if !errors.As(err, &f) || !strings.Contains(f.Message, "larger than the 2048 bytes its worker accepts") {
		t.Fatalf("a request over the plugin's limit of 2048 bytes: %v, want it refused saying so", err)
	}
	if s := p.Stats(); s.Started != 1 || s.Failures != 0 {
		t.Errorf("stats %+v, want the one plugin still serving", s)
	}
}

func TestNetRPCPluginIsGivenUp(t *testing.T) {
	exe := script(t, "echo \"1|1|unix|$PLUGIN_UNIX_SOCKET_DIR/x.sock|netrpc\"\n")
	p := newPool(t, pool.Config{Executable: exe, MaxWorkers: 1, RestartIntensity: 5}, grpcplugin.Config{}, nil)
	_, err := runnertest.Run(t, p, patience, "echo", `{}`)
	if !errors.Is(err, pool.ErrFailed) || !strings.Contains(err.Error(), `unsupported plugin protocol "netrpc"`) {
		t.Fatalf("got %v, want the pool given up on the unsupported protocol", err)
	}
	if s := p.Stats(); s.Failures > 1 {
		t.Errorf("stats %+v: the plugin was retried", s)
	}
}

func TestRunFailureIsSaidOnce(t *testing.T) {
	p := newPool(t, pool.Config{Executable: misbehaving(t, "runerror"), MaxWorkers: 1}, grpcplugin.Config{}, nil)
	_, err := runnertest.Run(t, p, patience, "echo", `{}`)
	var f *runner.Failure
	if !errors.As(err, &f) || strings.Count(err.Error(), "the action broke") != 1 || strings.Contains(f.Message, "rpc error") {
		t.Fatalf("got %v, want the plugin's error once, for the node's log only", err)
	}
}
