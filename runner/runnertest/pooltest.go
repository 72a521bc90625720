package runnertest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agent-host/agent-host/protocol"
	"github.com/agent-host/agent-host/runner"
	"github.com/agent-host/agent-host/runner/pool"
)

// NewPool starts a pool of the pooltest agent as cfg describes (with a
// short restart backoff unless it sets one), logging into logs when not
// nil, with opts, and closes it, within d, when the test ends.
func NewPool(tb testing.TB, cfg pool.Config, logs *Logs, d time.Duration, opts ...pool.Option) *pool.Pool {
	tb.Helper()
	cfg.Agent = "pooltest"
	if cfg.RestartBackoff == 0 {
		cfg.RestartBackoff = 10 * time.Millisecond
	}
	if logs == nil {
		logs = &Logs{}
	}
	p := pool.New(cfg, append([]pool.Option{pool.WithLogger(logs.Logger())}, opts...)...)
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		_ = p.Close(ctx)
	})
	return p
}

// KillHost starts host, a process running HoldPool, reads the pid it
// prints within d, kills the host with SIGKILL and fails the test unless
// the process of that pid is gone within d too: a host killed at once must
// leave no agent process behind.
func KillHost(t *testing.T, host *exec.Cmd, d time.Duration) {
	t.Helper()
	stdout, err := host.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	host.Stderr = os.Stderr
	if err := host.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(stdout).ReadString('\n')
		lines <- strings.TrimSpace(l)
	}()
	var line string
	select {
	case line = <-lines:
	case <-time.After(d):
		_ = host.Process.Kill()
		_ = host.Wait()
		t.Fatal("the host did not say the pid of its agent process")
	}
	pid, err := strconv.Atoi(line)
	if err != nil {
		_ = host.Process.Kill()
		_ = host.Wait()
		t.Fatalf("the host said %q, not its agent process's pid", line)
	}
	if err := host.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = host.Wait()
	WaitProcessGone(t, pid, d)
}

// HoldPool is the body of a host that is to be killed: it runs one
// pooltest echo on a pool of cfg within d, prints the pid that served it
// and waits, ignoring SIGTERM, for its end. It returns the exit status.
func HoldPool(cfg pool.Config, d time.Duration) int {
	cfg.Agent = "pooltest"
	p := pool.New(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	rep, err := p.Run(ctx, PoolRequest("echo", `{}`))
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	var data struct{ PID int }
	_ = json.Unmarshal(rep.Data, &data)
	fmt.Println(data.PID)
	signal.Ignore(syscall.SIGTERM)
	time.Sleep(time.Hour)
	return 0
}

// PoolRequest is a request for an action of the pooltest agent
// (testdata/pool/pooltest.json), whose implementations the pool tests run.
func PoolRequest(action, data string) *protocol.AgentRequest {
	return &protocol.AgentRequest{
		Schema: protocol.AgentRequestSchema, Protocol: protocol.AgentRequestProtocol,
		Agent: "pooltest", Action: action, RequestID: "req-" + action, SenderID: "test", CallerID: "choria=test",
		Collective: "mcollective", TTL: 60, MsgTime: time.Now().Unix(), Data: json.RawMessage(data),
	}
}

// Run runs one pooltest action on r within d.
func Run(t *testing.T, r runner.Runner, d time.Duration, action, data string) (*protocol.AgentReply, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	return r.Run(ctx, PoolRequest(action, data))
}

// PIDOf runs, within d, a pooltest action that answers with the pid of the
// process that ran it, and returns that pid.
func PIDOf(t *testing.T, r runner.Runner, d time.Duration, action, data string) int {
	t.Helper()
	rep, err := Run(t, r, d, action, data)
	if err != nil {
		t.Fatalf("%s: %v", action, err)
	}
	if rep.Statuscode != protocol.OK {
		t.Fatalf("%s: %+v", action, rep)
	}
	var got struct{ PID int }
	if err := json.Unmarshal(rep.Data, &got); err != nil || got.PID == 0 {
		t.Fatalf("%s: no pid in %s", action, rep.Data)
	}
	return got.PID
}

// Find returns the first record whose message contains message, or nil.
func (l *Logs) Find(message string) *Record {
	for _, r := range l.Records() {
		if strings.Contains(r.Message, message) {
			return &r
		}
	}
	return nil
}

// WaitFor fails the test unless cond holds within d, looking every 10 ms.
func WaitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not happen within %s", what, d)
		}
	}
}
