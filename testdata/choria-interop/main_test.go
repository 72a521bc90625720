// Package interop drives agent-host with the real Choria client library
// (go-choria's discovery and mcorpc client packages, the code behind
// `choria req`): two agent-host nodes on an embedded TLS NATS broker,
// asked to discover, ping, report inventory and facts and run a custom
// external agent, with Choria's own request signing.
package interop

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/choria-io/go-choria/choria"
	"github.com/choria-io/go-choria/client/discovery"
	"github.com/nats-io/nats-server/v2/server"
)

// The two nodes, their facts and classes, as the tests expect them.
const (
	node1 = "node1.example.net"
	node2 = "node2.example.net"

	clientName = "rip.mcollective"
)

var nodeSpecs = []struct {
	identity string
	facts    string
	classes  string
}{
	// YAML with keys YAML reads as numbers and booleans, which Choria
	// turns into strings (TestFactsMatchChoria).
	{node1, "os:\n  family: Debian\nrole: web\nports:\n  22: ssh\n  8080: proxy\nflags:\n  true: on\n  1.5: half\nversions: [1, 2.5, \"3\"]\n", "roles::web\n"},
	{node2, `{"os": {"family": "RedHat"}, "role": "db"}`, "roles::db\n"},
}

// Waits that only bound a failure; a healthy run never reaches them.
const (
	readyTimeout = 90 * time.Second
	stopTimeout  = 20 * time.Second
)

// env is the world TestMain sets up for the tests.
var env *environment

type environment struct {
	dir     string
	binary  string
	ca      *pki
	nats    *server.Server
	natsURL string
	nodes   []*node
	logs    []string // files worth printing when something fails

	// greeter is the sdk-go example agent; refServer is
	// cmd/reference-server, the real Choria server.
	greeter   string
	refServer string

	// client is the Choria framework of rip.mcollective, certificate
	// issued by the nodes' CA; rogue has a certificate of the same name
	// from another CA.
	client *choria.Framework
	rogue  *choria.Framework
}

type node struct {
	identity string
	cmd      *exec.Cmd
	done     chan struct{} // closed when the process has exited
	err      error         // Wait's result, valid after done
}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "choria-interop-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "choria-interop:", err)
		return 1
	}
	e := &environment{dir: dir}
	code := 0
	if err := e.setUp(); err != nil {
		fmt.Fprintln(os.Stderr, "choria-interop: set-up failed:", err)
		code = 1
	} else {
		env = e
		code = m.Run()
	}
	if err := e.stop(); err != nil {
		fmt.Fprintln(os.Stderr, "choria-interop: shutdown failed:", err)
		code = 1
	}
	if code != 0 {
		e.dumpLogs(os.Stderr)
	}
	if err := os.RemoveAll(dir); err != nil {
		fmt.Fprintln(os.Stderr, "choria-interop:", err)
	}
	return code
}

func (e *environment) setUp() error {
	// Built before HOME changes, which would take the go command's build
	// and module caches with it.
	e.binary = filepath.Join(e.dir, "agent-host")
	if err := buildAll(e); err != nil {
		return err
	}

	// The Choria client reads ~/.choriarc and friends, and names itself
	// after $USER unless told otherwise; neither may leak in from the
	// machine running the tests.
	home := filepath.Join(e.dir, "home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		return err
	}
	os.Setenv("HOME", home)
	os.Setenv("MCOLLECTIVE_CERTNAME", clientName)

	ca, err := newPKI(filepath.Join(e.dir, "ssl"), "Choria interop CA")
	if err != nil {
		return err
	}
	e.ca = ca
	other, err := newPKI(filepath.Join(e.dir, "ssl-other"), "Some other CA")
	if err != nil {
		return err
	}

	if err := e.startNATS(ca); err != nil {
		return err
	}

	plugins := filepath.Join(e.dir, "plugins")
	if err := installAgent(plugins, "echo"); err != nil {
		return err
	}
	for _, spec := range nodeSpecs {
		cfg, err := e.writeNodeConfig(ca, spec.identity, spec.facts, spec.classes)
		if err != nil {
			return err
		}
		if err := e.startNode(spec.identity, cfg, plugins); err != nil {
			return err
		}
	}

	// The client needs the custom agent's DDL; rpcutil's is built in.
	libdir := filepath.Join(e.dir, "libdir")
	if err := copyFile(filepath.Join("agents", "echo", "echo.json"), filepath.Join(libdir, "mcollective", "agent", "echo.json"), 0o644); err != nil {
		return err
	}
	cert, key, err := ca.issue(clientName, nil, nil)
	if err != nil {
		return err
	}
	if e.client, err = e.newClient("client", libdir, cert, key, ca.caFile); err != nil {
		return err
	}
	// The rogue client trusts the real CA for the broker's TLS, so it
	// reaches the nodes; only its signing certificate is foreign.
	rcert, rkey, err := other.issue(clientName, nil, nil)
	if err != nil {
		return err
	}
	if e.rogue, err = e.newClient("rogue", libdir, rcert, rkey, ca.caFile); err != nil {
		return err
	}

	return e.waitReady()
}

// buildAll builds, side by side, agent-host and the sdk-go example agent
// greeter from the enclosing module, and the reference Choria server
// from this one.
func buildAll(e *environment) error {
	e.greeter = filepath.Join(e.dir, "greeter")
	e.refServer = filepath.Join(e.dir, "reference-server")
	root := filepath.Join("..", "..")
	builds := []struct {
		dir, out, pkg string
		flags         []string
	}{
		{root, e.binary, "./cmd/agent-host", []string{"-ldflags", "-X github.com/agent-host/agent-host/host.Version=" + interopVersion}},
		{root, e.greeter, "./sdk-go/examples/greeter", nil},
		{".", e.refServer, "./cmd/reference-server", nil},
	}
	errs := make([]error, len(builds))
	var wg sync.WaitGroup
	for i, b := range builds {
		wg.Go(func() { errs[i] = goBuild(b.dir, b.out, b.pkg, b.flags...) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// goBuild builds the package pkg of the module in dir into out.
func goBuild(dir, out, pkg string, flags ...string) error {
	gobin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("the go command is needed to build %s: %w", pkg, err)
	}
	cmd := exec.Command(gobin, append(append([]string{"-C", dir, "build"}, flags...), "-o", out, pkg)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building %s: %w\n%s", pkg, err, b)
	}
	return nil
}

// startNATS starts an in-process broker on a random loopback port with
// TLS; clients are not asked for certificates.
func (e *environment) startNATS(ca *pki) error {
	cert, key, err := ca.issue("broker", []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		return err
	}
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: cert, KeyFile: key, CaFile: ca.caFile})
	if err != nil {
		return fmt.Errorf("broker TLS: %w", err)
	}
	srv, err := server.NewServer(&server.Options{
		Host:       "127.0.0.1",
		Port:       server.RANDOM_PORT,
		TLS:        true,
		TLSConfig:  tc,
		TLSTimeout: 5,
		NoLog:      true,
		NoSigs:     true,
	})
	if err != nil {
		return fmt.Errorf("creating broker: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return errors.New("the embedded broker did not start accepting connections")
	}
	e.nats = srv
	e.natsURL = fmt.Sprintf("nats://127.0.0.1:%d", srv.Addr().(*net.TCPAddr).Port)
	return nil
}

// installAgent copies agents/NAME into plugins/NAME. The DDL is dated in
// the past so that the host's wait for files to settle does not apply.
func installAgent(plugins, name string) error {
	src := filepath.Join("agents", name)
	dst := filepath.Join(plugins, name)
	if err := copyFile(filepath.Join(src, name), filepath.Join(dst, name), 0o755); err != nil {
		return err
	}
	ddl := filepath.Join(dst, name+".json")
	if err := copyFile(filepath.Join(src, name+".json"), ddl, 0o644); err != nil {
		return err
	}
	past := time.Now().Add(-time.Hour)
	return os.Chtimes(ddl, past, past)
}

func (e *environment) writeNodeConfig(ca *pki, identity, facts, classes string) (string, error) {
	dir := filepath.Join(e.dir, identity)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	cert, key, err := ca.issue(identity, nil, nil)
	if err != nil {
		return "", err
	}
	factsFile := filepath.Join(dir, "facts.yaml")
	classesFile := filepath.Join(dir, "classes.txt")
	logFile := filepath.Join(dir, "agent-host.log")
	if err := os.WriteFile(factsFile, []byte(facts+"\n"), 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(classesFile, []byte(classes), 0o644); err != nil {
		return "", err
	}
	cfg := filepath.Join(dir, "server.conf")
	e.logs = append(e.logs, logFile)
	return cfg, writeConfig(cfg,
		"identity", identity,
		"collectives", "mcollective",
		"plugin.security.provider", "file",
		"plugin.security.file.certificate", cert,
		"plugin.security.file.key", key,
		"plugin.security.file.ca", ca.caFile,
		"plugin.choria.middleware_hosts", e.natsURL,
		// As for the reference server: Choria's default authorization
		// denies every request without policy files.
		"rpcauthorization", "0",
		"plugin.yaml", factsFile,
		"classesfile", classesFile,
		"loglevel", "debug",
		"logfile", logFile,
	)
}

func (e *environment) startNode(identity, cfg, plugins string) error {
	out := filepath.Join(e.dir, identity, "output.txt")
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	e.logs = append(e.logs, out)
	cmd := exec.Command(e.binary, "run", "--config", cfg, "--plugins", plugins)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("starting agent-host for %s: %w", identity, err)
	}
	n := &node{identity: identity, cmd: cmd, done: make(chan struct{})}
	go func() {
		n.err = cmd.Wait()
		f.Close()
		close(n.done)
	}()
	e.nodes = append(e.nodes, n)
	return nil
}

// newClient writes a client configuration as in Choria's documentation
// and loads it the way the choria command does.
func (e *environment) newClient(name, libdir, cert, key, caFile string) (*choria.Framework, error) {
	cfg := filepath.Join(e.dir, name+".conf")
	logFile := filepath.Join(e.dir, name+".log")
	e.logs = append(e.logs, logFile)
	err := writeConfig(cfg,
		"identity", clientName,
		"collectives", "mcollective",
		"main_collective", "mcollective",
		"libdir", libdir,
		"plugin.security.provider", "file",
		"plugin.security.file.certificate", cert,
		"plugin.security.file.key", key,
		"plugin.security.file.ca", caFile,
		"plugin.choria.middleware_hosts", e.natsURL,
		"plugin.choria.use_srv", "false",
		// Every broadcast discovery waits this long for answers.
		"discovery_timeout", "1",
		"loglevel", "debug",
		"logfile", logFile,
	)
	if err != nil {
		return nil, err
	}
	fw, err := choria.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("loading Choria client configuration %s: %w", name, err)
	}
	return fw, nil
}

// waitReady polls discovery until both nodes answer and have loaded the
// echo agent, or a node exits, or the deadline passes.
func (e *environment) waitReady() error {
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	want := []string{node1, node2}
	var got []string
	for ctx.Err() == nil {
		for _, n := range e.nodes {
			select {
			case <-n.done:
				return fmt.Errorf("agent-host for %s exited during start-up: %v", n.identity, n.err)
			default:
			}
		}
		fo := discovery.NewStandardOptions()
		fo.AgentFilter = []string{"echo"}
		fo.SetDefaultsFromChoria(e.client)
		nodes, _, err := fo.Discover(ctx, e.client, "", false, false, e.client.Logger("discovery"))
		if err == nil {
			slices.Sort(nodes)
			got = nodes
			if slices.Equal(nodes, want) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
	return fmt.Errorf("after %s, discovery of nodes with the echo agent found %v, want %v", readyTimeout, got, want)
}

// stop ends the nodes with SIGTERM and the broker. A node that needs a
// SIGKILL or exits with an error fails the run: agent-host must drain and
// exit cleanly on SIGTERM.
func (e *environment) stop() error {
	var errs []error
	for _, n := range e.nodes {
		select {
		case <-n.done:
			errs = append(errs, fmt.Errorf("agent-host for %s exited before the end of the tests: %v", n.identity, n.err))
			continue
		default:
		}
		if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			errs = append(errs, fmt.Errorf("signalling agent-host for %s: %w", n.identity, err))
		}
	}
	for _, n := range e.nodes {
		select {
		case <-n.done:
			if n.err != nil {
				errs = append(errs, fmt.Errorf("agent-host for %s after SIGTERM: %w", n.identity, n.err))
			}
		case <-time.After(stopTimeout):
			n.cmd.Process.Kill()
			<-n.done
			errs = append(errs, fmt.Errorf("agent-host for %s did not exit within %s of SIGTERM; killed", n.identity, stopTimeout))
		}
	}
	if e.nats != nil {
		e.nats.Shutdown()
		e.nats.WaitForShutdown()
	}
	return errors.Join(errs...)
}

// dumpLogs prints the end of every log; the client's debug logs are long.
func (e *environment) dumpLogs(w io.Writer) {
	const maxLines = 200
	for _, f := range e.logs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		lines := strings.SplitAfter(string(b), "\n")
		if len(lines) > maxLines {
			lines = append([]string{fmt.Sprintf("[... %d earlier lines]\n", len(lines)-maxLines)}, lines[len(lines)-maxLines:]...)
		}
		fmt.Fprintf(w, "\n===== %s =====\n%s", strings.TrimPrefix(f, e.dir+string(filepath.Separator)), strings.Join(lines, ""))
	}
}

// writeConfig writes "key = value" lines from alternating keys and values.
func writeConfig(path string, kv ...string) error {
	var b strings.Builder
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(&b, "%s = %s\n", kv[i], kv[i+1])
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		return fmt.Errorf("writing %s: %w", dst, err)
	}
	return os.Chmod(dst, mode)
}
