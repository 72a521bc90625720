package pool

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"time"

	"github.com/agent-host/agent-host/protocol"
	"github.com/agent-host/agent-host/runner/proc"
)

// Transport starts workers that are reached some other way than the
// worker protocol's streams, such as go-plugin's gRPC (runner/grpcplugin).
// The pool supervises them exactly as it does its own: the same limits,
// restarts, recycling, deadlines and drain.
type Transport interface {
	// Launch starts one worker, as a runner/proc process under ctx (its
	// end stops the process group), and completes its handshake within
	// spec.HandshakeTimeout. On an error nothing it started is left
	// running; a *HandshakeError says whether to retry.
	Launch(ctx context.Context, spec LaunchSpec) (*Launched, error)
}

// LaunchSpec is what a Transport needs to start one worker.
type LaunchSpec struct {
	// Worker numbers the worker within its pool, for the log.
	Worker int
	// Agent names the agent; HostName the host, for the worker's log.
	Agent, HostName string
	// Executable is the agent's executable, started with no arguments.
	Executable string
	// Env is the environment of exec mode (CHORIA_EXTERNAL_CONFIG and
	// PATH): the worker gets it and what the transport needs, nothing
	// inherited from the host.
	Env []string
	// Dir is the working directory, a temporary directory.
	Dir string
	// HandshakeTimeout bounds the start and the handshake.
	HandshakeTimeout time.Duration
	// MaxDocumentBytes bounds a request or reply document.
	MaxDocumentBytes int
	// MaxLineBytes, MaxLogBytes, KillGrace and LeaveLeftovers are the
	// worker's proc settings (proc.Spec).
	MaxLineBytes   int
	MaxLogBytes    int64
	KillGrace      time.Duration
	LeaveLeftovers bool
	// Log receives the worker's output and the transport's events.
	Log *slog.Logger
	// Deliver hands the pool the reply document of request id, or the
	// failure that stands for it, at most once per request. A request of
	// a worker that died is not delivered: the pool fails it, saying how
	// the worker ended.
	Deliver func(id string, reply []byte, failure error)
}

// Launched is a worker a Transport started and shook hands with.
type Launched struct {
	Proc *proc.Process
	Link Link
	// Version is the protocol version agreed; SDK names what the worker
	// is written with.
	Version int
	SDK     string
	// Agents are the agents the worker serves.
	Agents []string
	// Concurrency is how many requests the worker runs at once.
	Concurrency int
	// MaxDocumentBytes, when set, lowers the document limit.
	MaxDocumentBytes int
	// Active is the agent's activation check; ActivateReason may say why
	// it is false.
	Active         bool
	ActivateReason string
}

// Link is how the pool talks to a worker a Transport started. Its methods
// are safe for concurrent use and never block for long: answers come
// through LaunchSpec.Deliver.
type Link interface {
	// Send sends request id, to be answered by its deadline. An error
	// wrapping worker.ErrTooLarge or worker.ErrEncoding means nothing was
	// sent and only this request fails; any other that the worker cannot
	// be sent requests.
	Send(id string, deadline time.Time, req *protocol.AgentRequest, facts []byte) error
	// Cancel says the pool no longer wants request id's result (reason is
	// one of the worker protocol's); the worker still answers it.
	Cancel(id, reason string)
	// Ping checks the worker is healthy, within ctx.
	Ping(ctx context.Context) error
	// Shutdown asks the worker to exit within grace; the pool has
	// drained it first, and stops its process group after the grace.
	Shutdown(reason string, grace time.Duration)
	// Close releases what the link holds; the process is gone.
	Close()
}

// launchLink starts a worker through the pool's Transport.
func (p *Pool) launchLink(id int) (*worker, error) {
	cfg := &p.cfg
	wctx, cancel := context.WithCancel(p.ctx)
	w := &worker{p: p, id: id, cancel: cancel, calls: map[string]chan result{}, pongs: map[string]chan struct{}{}}
	l, err := cfg.Transport.Launch(wctx, LaunchSpec{
		Worker: id, Agent: cfg.Agent, HostName: cfg.HostName, Executable: cfg.Executable,
		Env: []string{
			"CHORIA_EXTERNAL_CONFIG=" + filepath.Join(cfg.PluginConfigDir, cfg.Agent),
			"PATH=" + cfg.Path,
		},
		Dir: cfg.TempDir, HandshakeTimeout: cfg.HandshakeTimeout, MaxDocumentBytes: cfg.MaxDocumentBytes,
		MaxLineBytes: cfg.MaxLineBytes, MaxLogBytes: cfg.MaxLogBytes, KillGrace: cfg.KillGrace, LeaveLeftovers: cfg.LeaveLeftovers,
		Log:     p.log.With("worker", id),
		Deliver: func(id string, reply []byte, failure error) { w.settle(id, reply, failure) },
	})
	if err != nil {
		cancel()
		return nil, err
	}
	w.proc, w.link = l.Proc, l.Link
	var herr error
	switch {
	case !slices.Contains(l.Agents, cfg.Agent):
		herr = &HandshakeError{GiveUp: true, Msg: fmt.Sprintf("the worker serves %v, not %s", l.Agents, cfg.Agent)}
	case !l.Active:
		herr = &HandshakeError{Inactive: true, Msg: fmt.Sprintf("the agent does not activate on this node: %s", l.ActivateReason)}
	}
	if herr != nil {
		w.kill(herr.Error())
		w.proc.Wait()
		cancel()
		w.link.Close()
		return nil, herr
	}
	w.agree(l.Version, l.SDK, l.Concurrency, l.MaxDocumentBytes)
	return w, nil
}

// pingLink checks a Transport's worker is healthy, and stops it if not.
func (w *worker) pingLink() {
	ctx, cancel := context.WithTimeout(w.p.ctx, w.p.cfg.PingTimeout)
	defer cancel()
	err := w.link.Ping(ctx)
	if err == nil || w.p.ctx.Err() != nil {
		return
	}
	w.p.mu.Lock()
	busy := len(w.calls) > 0
	w.p.mu.Unlock()
	// As for a ping on the streams: a busy worker's requests' deadlines
	// look after it.
	if !busy {
		w.kill(fmt.Sprintf("its health check failed: %v", err))
	}
}
