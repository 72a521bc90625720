// Package agent is the Go SDK for Choria external agents. An agent
// registers its actions and calls Serve, which speaks whichever protocol
// the process was started with:
//
//   - Choria's external-agent file protocol, when Choria (or agent-host in
//     exec mode) runs the agent once per request;
//   - agent-host's worker protocol (PROTOCOL.md), when agent-host keeps the
//     agent running and sends it request after request;
//   - a hashicorp/go-plugin gRPC plugin (protocol/grpcplugin), when
//     agent-host runs it as one.
//
// The same binary works under all three, with the same DDL; under
// agent-host it runs as a plugin without any configuration.
//
//	func main() {
//		a := agent.New("clock")
//		a.Action("now", agent.Typed(func(ctx context.Context, req *agent.Request, in struct{ Zone string }) (any, error) {
//			return map[string]any{"time": time.Now().UTC().Format(time.RFC3339)}, nil
//		}))
//		a.Serve()
//	}
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/agent-host/agent-host/protocol"
	gp "github.com/agent-host/agent-host/protocol/grpcplugin"
	wp "github.com/agent-host/agent-host/protocol/worker"
)

// Action runs one action. It returns the reply's data (anything that
// encodes as a JSON object, nil for {}) or an error: a *Failure keeps its
// status code, any other error is statuscode 1 (aborted) with the error's
// text. The context ends at the request's deadline when the host gives
// one (the worker protocol does) and when the host cancels the request.
type Action func(ctx context.Context, req *Request) (any, error)

// Typed adapts a function taking its inputs as a Go value: the request's
// data is decoded into In (an InvalidData failure when it does not fit).
func Typed[In any](fn func(ctx context.Context, req *Request, in In) (any, error)) Action {
	return func(ctx context.Context, req *Request) (any, error) {
		var in In
		if err := req.Decode(&in); err != nil {
			return nil, &Failure{Code: protocol.InvalidData, Message: "Could not decode the request's data: " + err.Error()}
		}
		return fn(ctx, req, in)
	}
}

// Failure is an action's failure with its SimpleRPC status code.
type Failure struct {
	Code    protocol.StatusCode
	Message string
}

func (f *Failure) Error() string { return f.Message }

// Fail returns a Failure.
func Fail(code protocol.StatusCode, format string, args ...any) error {
	return &Failure{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Request is one request as the agent sees it.
type Request struct {
	Agent, Action                 string
	RequestID, SenderID, CallerID string
	Collective                    string
	TTL                           int
	Time                          time.Time
	// Data is the request's inputs, a JSON object.
	Data json.RawMessage
	// Facts are the node's facts, a JSON object.
	Facts json.RawMessage
	// ConfigFile is the agent's configuration file, which may not exist
	// (Choria's CHORIA_EXTERNAL_CONFIG).
	ConfigFile string
}

// Decode decodes the request's data into v.
func (r *Request) Decode(v any) error { return json.Unmarshal(r.Data, v) }

// DecodeFacts decodes the node's facts into v.
func (r *Request) DecodeFacts(v any) error { return json.Unmarshal(r.Facts, v) }

// Config reads the agent's configuration file, Choria's key = value
// format (comments start with #); a missing file is an empty configuration.
// It looks for the file as Choria names it and, as Puppet writes it, with
// a .cfg suffix.
func (r *Request) Config() (map[string]string, error) {
	return readConfig(r.ConfigFile)
}

// Option configures an Agent.
type Option func(*Agent)

// WithConcurrency sets how many requests a worker runs at once (1 by
// default): actions then run on several goroutines.
func WithConcurrency(n int) Option { return func(a *Agent) { a.concurrency = max(n, 1) } }

// WithLogger sets the logger; the default writes JSON lines to stderr,
// which the host logs at their level.
func WithLogger(l *slog.Logger) Option { return func(a *Agent) { a.log = l } }

// Agent is an external agent: its actions, its activation check and how
// it serves.
type Agent struct {
	name        string
	actions     map[string]Action
	activate    func(ctx context.Context, facts json.RawMessage) (bool, error)
	concurrency int
	log         *slog.Logger
}

// New returns an agent named name, as its DDL names it.
func New(name string, opts ...Option) *Agent {
	a := &Agent{name: name, actions: map[string]Action{}, concurrency: 1,
		log: slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	for _, o := range opts {
		o(a)
	}
	return a
}

// Name is the agent's name.
func (a *Agent) Name() string { return a.name }

// Logger is the agent's logger, for actions.
func (a *Agent) Logger() *slog.Logger { return a.log }

// Action registers an action.
func (a *Agent) Action(name string, fn Action) { a.actions[name] = fn }

// Activate sets the activation check: whether the agent should be served
// on this node. Without one it always is. In exec mode Choria gives the
// check no facts; in worker mode the facts are those of the first request
// and so not known: facts is then {}.
func (a *Agent) Activate(fn func(ctx context.Context, facts json.RawMessage) (bool, error)) {
	a.activate = fn
}

// Serve serves as the process was started to, and exits the process: 0
// when all went well.
func (a *Agent) Serve() {
	if err := a.ServeContext(context.Background()); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", a.name, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// ErrNotStarted means the process was started neither by Choria nor by
// agent-host.
var ErrNotStarted = errors.New("agent: this is a Choria external agent: Choria or agent-host runs it, with CHORIA_EXTERNAL_PROTOCOL, AGENT_HOST_WORKER or AGENT_HOST_PLUGIN set")

// ServeContext is Serve without the exit.
func (a *Agent) ServeContext(ctx context.Context) error {
	switch {
	case os.Getenv(gp.MagicCookieKey) != "":
		// go-plugin checks the cookie's value and refuses a wrong one.
		return a.servePlugin(ctx)
	case os.Getenv(wp.EnvWorker) == wp.Name:
		return a.serveWorker(ctx)
	case os.Getenv("CHORIA_EXTERNAL_PROTOCOL") != "":
		return a.serveExec(ctx)
	default:
		return ErrNotStarted
	}
}

// run runs one request and returns the reply, never panicking: a panic in
// an action is a failure with its message, logged with its stack.
func (a *Agent) run(ctx context.Context, req *Request) (rep protocol.AgentReply) {
	rep = protocol.AgentReply{Statuscode: protocol.OK, Statusmsg: "OK", Data: json.RawMessage("{}")}
	fn := a.actions[req.Action]
	if fn == nil {
		rep.Statuscode, rep.Statusmsg = protocol.UnknownAction, fmt.Sprintf("Unknown action %s for agent %s", req.Action, a.name)
		return rep
	}
	defer func() {
		if r := recover(); r != nil {
			a.log.Error("the action panicked", "action", req.Action, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			rep.Statuscode, rep.Statusmsg, rep.Data = protocol.Aborted, fmt.Sprintf("%s#%s failed: %v", a.name, req.Action, r), json.RawMessage("{}")
		}
	}()
	data, err := fn(ctx, req)
	if err != nil {
		var f *Failure
		if errors.As(err, &f) {
			rep.Statuscode, rep.Statusmsg = f.Code, f.Message
		} else {
			rep.Statuscode, rep.Statusmsg = protocol.Aborted, err.Error()
		}
		return rep
	}
	if data == nil {
		return rep
	}
	b, err := json.Marshal(data)
	switch {
	case err != nil:
		rep.Statuscode, rep.Statusmsg = protocol.Aborted, "Could not encode the reply: "+err.Error()
	case len(b) == 0 || b[0] != '{':
		rep.Statuscode, rep.Statusmsg = protocol.Aborted, "The action's reply data is not a JSON object"
	default:
		rep.Data = b
	}
	return rep
}

func requestOf(doc *protocol.AgentRequest, facts json.RawMessage, configFile string) *Request {
	if len(facts) == 0 {
		facts = json.RawMessage("{}")
	}
	return &Request{
		Agent: doc.Agent, Action: doc.Action, RequestID: doc.RequestID, SenderID: doc.SenderID,
		CallerID: doc.CallerID, Collective: doc.Collective, TTL: doc.TTL, Time: time.Unix(doc.MsgTime, 0),
		Data: doc.Data, Facts: facts, ConfigFile: configFile,
	}
}

// offered says whether the host offered version v of the worker protocol.
func offered(v int) bool {
	return slices.Contains(splitVersions(os.Getenv(wp.EnvVersions)), fmt.Sprint(v))
}

// splitVersions splits a comma-separated list of versions.
func splitVersions(s string) []string {
	var out []string
	for v := range strings.SplitSeq(s, ",") {
		out = append(out, strings.TrimSpace(v))
	}
	return out
}
