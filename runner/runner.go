// Package runner runs external agents. It defines the Runner contract the
// host dispatches through and finds agents on disk: their DDLs, their
// executables and whether they activate on this node. Sub-packages hold
// the ways of running an agent: spawn (one process per request, Choria's
// file protocol) and proc (one supervised OS process).
package runner

import (
	"context"
	"errors"
	"fmt"

	"github.com/agent-host/agent-host/protocol"
)

// Runner runs the actions of one agent.
type Runner interface {
	// Run executes one request and returns the agent's reply. The
	// context's deadline is the action's timeout: when it passes, the agent
	// and everything it started are killed and Run returns an error that
	// matches ErrTimeout. Run never returns a nil reply with a nil error.
	Run(ctx context.Context, req *protocol.AgentRequest) (*protocol.AgentReply, error)
}

// RunnerFunc adapts a function to Runner.
type RunnerFunc func(ctx context.Context, req *protocol.AgentRequest) (*protocol.AgentReply, error)

// Run calls f.
func (f RunnerFunc) Run(ctx context.Context, req *protocol.AgentRequest) (*protocol.AgentReply, error) {
	return f(ctx, req)
}

var (
	// ErrTimeout means the agent did not finish within its deadline and was killed.
	ErrTimeout = errors.New("runner: agent timed out")
	// ErrReplyTooLarge means the agent wrote a reply larger than allowed.
	ErrReplyTooLarge = errors.New("runner: agent reply too large")
	// ErrNoExecutable means the agent's executable was not found.
	ErrNoExecutable = errors.New("agent executable was not found")
)

// ExitError reports an agent that exited unsuccessfully. Its message is the
// one Choria gives: "executing parrot failed: exit status 3"; Code is -1
// when the process was killed by a signal.
type ExitError struct {
	Name string
	Code int
}

func (e *ExitError) Error() string {
	return fmt.Sprintf("executing %s failed: exit status %d", e.Name, e.Code)
}

// Interface guards
var _ Runner = RunnerFunc(nil)
