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

// DefaultPluginConfigDir is where agents' configuration lives when the
// host has no configuration file: the plugin.d beside Choria's default
// server configuration, /etc/choria/server.conf. An agent is told
// CHORIA_EXTERNAL_CONFIG=<dir>/<agent>.
const DefaultPluginConfigDir = "/etc/choria/plugin.d"

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
	// ErrReplyTooLarge is matched by every ReplyTooLargeError.
	ErrReplyTooLarge = errors.New("runner: agent reply too large")
	// ErrNoExecutable means the agent's executable was not found.
	ErrNoExecutable = errors.New("agent executable was not found")
	// ErrWorkerDied means the long-lived worker running the request ended
	// before it answered.
	ErrWorkerDied = errors.New("the worker running the request died")
)

// ReplyTooLargeError reports an agent reply larger than allowed. Size is
// at least Limit+1; it is the exact size when it was known.
type ReplyTooLargeError struct {
	Size, Limit int64
}

func (e *ReplyTooLargeError) Error() string {
	return fmt.Sprintf("runner: agent reply of %d bytes is larger than the %d allowed", e.Size, e.Limit)
}

// Is makes errors.Is(err, ErrReplyTooLarge) hold.
func (e *ReplyTooLargeError) Is(target error) bool { return target == ErrReplyTooLarge }

// ExitError reports an agent that exited unsuccessfully. Its message is the
// one Choria gives for an exit status, "executing parrot failed: exit
// status 3", and names the signal for a process a signal ended:
// "executing parrot failed: killed by signal SIGSEGV".
type ExitError struct {
	Name string
	// Code is the exit status, or -1 when a signal ended the process.
	Code int
	// Signal is the signal's name, such as SIGSEGV, when a signal ended
	// the process.
	Signal string
}

func (e *ExitError) Error() string {
	if e.Signal != "" {
		return fmt.Sprintf("executing %s failed: killed by signal %s", e.Name, e.Signal)
	}
	return fmt.Sprintf("executing %s failed: exit status %d", e.Name, e.Code)
}

// Failure is a runner error with two texts: Message is for the caller and
// says what went wrong in the caller's terms; Err is the detail for the
// node's log, which may name files on the node.
type Failure struct {
	Message string
	Err     error
}

func (e *Failure) Error() string { return e.Message + ": " + e.Err.Error() }

func (e *Failure) Unwrap() error { return e.Err }

// Cause is the text of err for the caller: the Message of a Failure in
// it, or else the error's own text.
func Cause(err error) string {
	var f *Failure
	if errors.As(err, &f) {
		return f.Message
	}
	return err.Error()
}

// Interface guards
var _ Runner = RunnerFunc(nil)
