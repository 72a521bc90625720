package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/agent-host/agent-host/cmd/internal/loadreport"
	"github.com/agent-host/agent-host/protocol/client"
	"github.com/agent-host/agent-host/protocol/security"
)

// process is one server under test.
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	log  string
}

// start runs argv with its output in logFile.
func start(name, logFile string, argv ...string) (*process, error) {
	f, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group, so that a Ctrl-C of the bench reaches the
	// bench first and it stops the server in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, done: make(chan struct{}), log: logFile}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// exited says whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits; SIGKILL to the group after grace.
func (p *process) stop(grace time.Duration) error {
	if p.exited() {
		return fmt.Errorf("%s had exited: %v (log %s)", p.name, p.err, p.log)
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
		_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("%s did not stop within %s of SIGTERM; killed", p.name, grace)
	}
}

// caller is the bench's own client, for readiness checks.
type caller struct {
	nc  *nats.Conn
	cli *client.Client
}

func newCaller(url, cert, key, ca, identity string) (*caller, error) {
	signer, certPEM, err := security.LoadSigner(cert, key)
	if err != nil {
		return nil, err
	}
	tc, err := security.TLSConfig(cert, key, ca)
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(url, nats.Secure(tc), nats.Name("agent-host-bench"))
	if err != nil {
		return nil, err
	}
	return &caller{nc: nc, cli: client.New(nc, client.Config{Identity: identity, Signer: signer, CertPEM: certPEM})}, nil
}

// agents asks node for rpcutil inventory and returns its agents.
func (c *caller) agents(ctx context.Context, node string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	res, err := c.cli.Request(ctx, []string{node}, "rpcutil", "inventory", nil, nil)
	if err != nil {
		return nil, err
	}
	if len(res.Replies) == 0 {
		return nil, errors.New("no reply")
	}
	r := res.Replies[0]
	if r.Err != nil {
		return nil, r.Err
	}
	var inv struct {
		Agents []string `json:"agents"`
	}
	if err := json.Unmarshal(r.Body.Data, &inv); err != nil {
		return nil, err
	}
	return inv.Agents, nil
}

// waitReady polls the node's inventory until it lists every agent in want.
func (c *caller) waitReady(ctx context.Context, p *process, node string, want []string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var have []string
	var lastErr error
	for {
		if p.exited() {
			return fmt.Errorf("%s exited while starting: %v (log %s)", p.name, p.err, p.log)
		}
		got, err := c.agents(ctx, node)
		if err == nil {
			have, lastErr = got, nil
			if missing := without(want, got); len(missing) == 0 {
				return nil
			}
		} else {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %s: agents %v, want %v, last error %v (log %s)", p.name, timeout, have, want, lastErr, p.log)
		case <-time.After(300 * time.Millisecond):
		}
	}
}

func without(want, have []string) []string {
	var missing []string
	for _, w := range want {
		if !slices.Contains(have, w) {
			missing = append(missing, w)
		}
	}
	return missing
}

// loadArgs are the agent-host-load arguments every run shares.
type loadArgs struct {
	binary, broker, identity, caller, cert, key, ca string
}

// runLoad runs agent-host-load with extra arguments and decodes its JSON.
// Its exit status 2 (a request lost, the node's memory grew) still gives a
// result; the caller judges it.
func (a loadArgs) run(ctx context.Context, extra ...string) (*loadreport.Result, error) {
	args := []string{"--broker", a.broker, "--identity", a.identity, "--caller", a.caller,
		"--cert", a.cert, "--key", a.key, "--ca", a.ca, "--json"}
	args = append(args, extra...)
	cmd := exec.CommandContext(ctx, a.binary, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 2) {
		return nil, fmt.Errorf("agent-host-load %s: %w: %s", strings.Join(extra, " "), err, strings.TrimSpace(stderr.String()))
	}
	var res loadreport.Result
	if err := json.Unmarshal(out, &res); err != nil {
		return nil, fmt.Errorf("agent-host-load %s printed %q: %w", strings.Join(extra, " "), out, err)
	}
	return &res, nil
}

func itoa(n int) string { return strconv.Itoa(n) }
