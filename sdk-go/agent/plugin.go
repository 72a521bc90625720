package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/agent-host/agent-host/protocol"
	gp "github.com/agent-host/agent-host/protocol/grpcplugin"
)

// pluginMaxMessageBytes bounds one gRPC message the plugin accepts,
// before the host has said its limit in Activate: the host's own limit
// is 4 MiB by default and can be raised.
const pluginMaxMessageBytes = 64 << 20

// servePlugin serves the agent as a hashicorp/go-plugin gRPC plugin
// until the host stops it. go-plugin itself checks the magic cookie and
// negotiates the version. go-plugin serves until the host stops it: ctx
// does not end it.
func (a *Agent) servePlugin(context.Context) error {
	// go-plugin has no parent-death handling: on Linux the host has the
	// kernel kill the plugin; elsewhere, stdin ending (a pipe only the
	// host holds) says the host is gone.
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	srv := &pluginServer{agent: a, sem: make(chan struct{}, a.concurrency), running: map[string]context.CancelFunc{}, config: os.Getenv("CHORIA_EXTERNAL_CONFIG"),
		stdout: os.Stdout, stderr: os.Stderr}
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: plugin.HandshakeConfig{ProtocolVersion: gp.V1, MagicCookieKey: gp.MagicCookieKey, MagicCookieValue: gp.MagicCookieValue},
		VersionedPlugins: map[int]plugin.PluginSet{
			gp.V1: {gp.Name: &grpcAgent{srv: srv}},
		},
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			return grpc.NewServer(append(opts, grpc.MaxRecvMsgSize(pluginMaxMessageBytes))...)
		},
		// go-plugin's own messages, as levelled lines on stderr.
		Logger: hclog.New(&hclog.LoggerOptions{Name: a.name, Level: hclog.Warn, Output: os.Stderr}),
	})
	return nil
}

// grpcAgent is the go-plugin plugin: it registers the Agent service.
type grpcAgent struct {
	plugin.NetRPCUnsupportedPlugin
	srv *pluginServer
}

func (g *grpcAgent) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	gp.RegisterAgentServer(s, g.srv)
	return nil
}

func (g *grpcAgent) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, errors.New("agent: the SDK serves the plugin; the host is its client")
}

// pluginEnv is what go-plugin's client sets for its plugin.
var pluginEnv = []string{gp.MagicCookieKey, "PLUGIN_PROTOCOL_VERSIONS", "PLUGIN_UNIX_SOCKET_DIR", "PLUGIN_UNIX_SOCKET_GROUP", "PLUGIN_MIN_PORT", "PLUGIN_MAX_PORT"}

// pluginServer runs the requests the host sends over gRPC.
type pluginServer struct {
	gp.UnimplementedAgentServer
	agent  *Agent
	sem    chan struct{}
	config string

	// stdout and stderr are the process's own, which go-plugin replaces
	// with its stdio stream once it has shaken hands.
	stdout, stderr *os.File
	restore        sync.Once

	mu          sync.Mutex
	running     map[string]context.CancelFunc
	cancelled   map[string]time.Time // Cancels that came before their Run
	maxDocument int
}

func (s *pluginServer) Activate(ctx context.Context, req *gp.ActivateRequest) (*gp.ActivateReply, error) {
	// Output goes where it goes in the other modes: the host reads the
	// process's stderr with levels and keeps its last lines for failure
	// replies. go-plugin swapped the two before serving, so this is after.
	s.restore.Do(func() {
		os.Stdout, os.Stderr = s.stdout, s.stderr
		// go-plugin read its variables in Serve, before the handshake:
		// what the actions start must not find them, as it finds no
		// worker's.
		for _, key := range pluginEnv {
			os.Unsetenv(key)
		}
	})
	rep := &gp.ActivateReply{Activate: true, Agents: []string{s.agent.name}, Concurrency: int32(s.agent.concurrency), Sdk: "agent-host-go/" + Version}
	if req.MaxDocumentBytes > 0 {
		s.mu.Lock()
		s.maxDocument = int(req.MaxDocumentBytes)
		s.mu.Unlock()
	}
	if s.agent.activate != nil {
		active, err := s.agent.activate(ctx, json.RawMessage("{}"))
		rep.Activate = active
		if err != nil {
			rep.Activate, rep.ActivateReason = false, err.Error()
		}
	}
	return rep, nil
}

// Bounds on the cancellations remembered for requests not running yet.
const (
	maxEarlyCancels = 1024
	earlyCancelTTL  = 10 * time.Second
)

func (s *pluginServer) Cancel(_ context.Context, req *gp.CancelRequest) (*gp.CancelReply, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cancel := s.running[req.Id]; cancel != nil {
		cancel()
		return &gp.CancelReply{}, nil
	}
	// Run and Cancel are separate calls, which nothing orders: a Cancel
	// may come before its Run, which then honours it.
	s.rememberCancel(req.Id, time.Now())
	return &gp.CancelReply{}, nil
}

// rememberCancel keeps id as cancelled, within the bounds; s.mu is held.
func (s *pluginServer) rememberCancel(id string, now time.Time) {
	if s.cancelled == nil {
		s.cancelled = map[string]time.Time{}
	}
	oldest, oldestAt := "", now
	for k, at := range s.cancelled {
		switch {
		case now.Sub(at) > earlyCancelTTL:
			delete(s.cancelled, k)
		case !at.After(oldestAt):
			oldest, oldestAt = k, at
		}
	}
	if len(s.cancelled) >= maxEarlyCancels {
		delete(s.cancelled, oldest)
	}
	s.cancelled[id] = now
}

// register makes request id cancellable, and says whether a Cancel for
// it came first; s.mu is held.
func (s *pluginServer) register(id string, cancel context.CancelFunc) (cancelledEarly bool) {
	s.running[id] = cancel
	at, ok := s.cancelled[id]
	delete(s.cancelled, id)
	return ok && time.Since(at) <= earlyCancelTTL
}

func (s *pluginServer) Run(ctx context.Context, req *gp.RunRequest) (*gp.RunReply, error) {
	// The action's context ends at the deadline, at a Cancel, and when the
	// host gives up on the call. The request is cancellable from the
	// start, before it is read and while it waits for a slot.
	actx, cancel := context.WithDeadline(ctx, time.UnixMilli(req.DeadlineMs))
	defer cancel()
	s.mu.Lock()
	if s.register(req.Id, cancel) {
		cancel()
	}
	limit := s.maxDocument
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.running, req.Id)
		s.mu.Unlock()
	}()
	// The same checks as a worker's request document: bounded nesting,
	// then the document itself.
	var doc protocol.AgentRequest
	if err := protocol.CheckDepth(req.Request, protocol.MaxDataDepth+2); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "the request document: %v", err)
	}
	if err := json.Unmarshal(req.Request, &doc); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "the request document: %v", err)
	}
	facts := json.RawMessage(req.Facts)
	if !json.Valid(facts) {
		facts = nil
	}
	// Requests wait for a slot as they would in a worker; the host sends
	// no more than the concurrency announced.
	select {
	case s.sem <- struct{}{}:
	case <-actx.Done():
		if ctx.Err() != nil {
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		return s.reply(aborted(actx), limit), nil
	}
	defer func() { <-s.sem }()
	rep := s.agent.run(actx, requestOf(&doc, facts, s.config))
	if actx.Err() != nil && rep.Statuscode == protocol.OK {
		rep = aborted(actx)
	}
	return s.reply(rep, limit), nil
}

func aborted(ctx context.Context) protocol.AgentReply {
	return protocol.AgentReply{Statuscode: protocol.Aborted, Statusmsg: "Cancelled: " + ctx.Err().Error(), Data: json.RawMessage("{}")}
}

// reply encodes rep within the host's document limit.
func (s *pluginServer) reply(rep protocol.AgentReply, limit int) *gp.RunReply {
	b, _ := json.Marshal(rep)
	if limit > 0 && len(b) > limit {
		// A reply the host would refuse fails this request alone.
		b, _ = json.Marshal(protocol.AgentReply{Statuscode: protocol.UnknownError, Statusmsg: fmt.Sprintf("the reply is too large for the host: %d bytes, over its %d (plugin.agent_host.pool.max_document_bytes)", len(b), limit), Data: json.RawMessage("{}")})
	}
	return &gp.RunReply{Reply: b}
}

// pluginOffered says whether the host offered version v of the plugin
// service in the activation check.
func pluginOffered(v int) bool {
	return slices.Contains(splitVersions(os.Getenv(gp.EnvVersions)), fmt.Sprint(v))
}
