// Package grpcplugin runs agents as hashicorp/go-plugin gRPC plugins
// (PROTOCOL.md, "go-plugin"): a pool.Transport, so that runner/pool
// supervises plugins as it does its workers (restarts with backoff, the
// intensity limit, recycling, deadlines, drain before shutdown).
//
// go-plugin's client starts the plugin and does its handshake (magic
// cookie, version negotiation, gRPC over a unix socket), but through a
// runner/proc process rather than its own: a session and process group
// of its own, stopped as a whole, the host's minimal environment
// (SkipHostEnv), stderr into the host's log with levels, and on Linux
// killed by the kernel when the host dies. Lines the plugin writes to
// stdout before its handshake line are logged and skipped, where
// go-plugin alone would fail the start.
package grpcplugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"
	gprunner "github.com/hashicorp/go-plugin/runner"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/agent-host/agent-host/protocol"
	gp "github.com/agent-host/agent-host/protocol/grpcplugin"
	wp "github.com/agent-host/agent-host/protocol/worker"
	"github.com/agent-host/agent-host/runner/pool"
	"github.com/agent-host/agent-host/runner/proc"
)

// Config says how plugins are started. The zero value is what agent-host
// uses; the fields exist so that mismatches can be tested.
type Config struct {
	// Versions are the versions of the Agent service offered. Empty means
	// [grpcplugin.V1].
	Versions []int
	// MagicCookieValue is the cookie's value. Empty means
	// grpcplugin.MagicCookieValue.
	MagicCookieValue string
}

// Transport starts go-plugin plugins for a pool.
type Transport struct {
	cfg Config
}

// New returns a Transport for cfg.
func New(cfg Config) *Transport {
	if len(cfg.Versions) == 0 {
		cfg.Versions = []int{gp.V1}
	}
	if cfg.MagicCookieValue == "" {
		cfg.MagicCookieValue = gp.MagicCookieValue
	}
	return &Transport{cfg: cfg}
}

// messageSlack is what a gRPC message may hold beyond its document.
const messageSlack = 64 << 10

// maxStrayLogged bounds the stray stdout lines logged before the
// handshake; the others are counted.
const maxStrayLogged = 10

// Launch starts one plugin and shakes hands: go-plugin's, then Activate.
func (t *Transport) Launch(ctx context.Context, spec pool.LaunchSpec) (*pool.Launched, error) {
	log := spec.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	pr := &procRunner{ctx: ctx, spec: spec, log: log, versions: t.cfg.Versions, started: make(chan struct{})}
	pr.stdoutR, pr.stdoutW = io.Pipe()
	sets := map[int]plugin.PluginSet{}
	for _, v := range t.cfg.Versions {
		sets[v] = plugin.PluginSet{gp.Name: &agentPlugin{}}
	}
	maxMsg := spec.MaxDocumentBytes + messageSlack
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  plugin.HandshakeConfig{ProtocolVersion: uint(t.cfg.Versions[0]), MagicCookieKey: gp.MagicCookieKey, MagicCookieValue: t.cfg.MagicCookieValue},
		VersionedPlugins: sets,
		RunnerFunc: func(_ hclog.Logger, cmd *exec.Cmd, socketDir string) (gprunner.Runner, error) {
			pr.env, pr.socketDir = cmd.Env, socketDir
			return pr, nil
		},
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		SkipHostEnv:      true,
		StartTimeout:     spec.HandshakeTimeout,
		UnixSocketConfig: &plugin.UnixSocketConfig{TempDir: spec.Dir},
		// After its handshake a Go plugin's os.Stdout and os.Stderr reach
		// the host over go-plugin's stdio stream.
		// They are logged as the process's output, within its log budget.
		SyncStdout: &lineLog{emit: pr.logLine(slog.LevelInfo, "stdout")},
		SyncStderr: &lineLog{emit: pr.logLine(slog.LevelError, "stderr")},
		// go-plugin's own messages, the host's.
		Logger: hclog.New(&hclog.LoggerOptions{Name: "go-plugin", Level: hclog.Debug, DisableTime: true, Output: &lineLog{emit: func(line []byte, _ bool) {
			log.Debug(string(line), "stream", "go-plugin")
		}}}),
		GRPCDialOptions: []grpc.DialOption{grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(maxMsg), grpc.MaxCallSendMsgSize(maxMsg))},
	})
	l, err := t.handshake(ctx, client, pr, spec)
	if err != nil {
		// The process group first: go-plugin's Kill asks the plugin's
		// controller to shut down with no deadline but the plugin's exit,
		// which a wedged plugin would never give it.
		if p := pr.process(); p != nil {
			p.Kill()
			p.Wait()
		}
		client.Kill()
		// go-plugin made it before the start, and removes it only when
		// the plugin started.
		if pr.socketDir != "" {
			_ = os.RemoveAll(pr.socketDir)
		}
		return nil, err
	}
	return l, nil
}

func (t *Transport) handshake(ctx context.Context, client *plugin.Client, pr *procRunner, spec pool.LaunchSpec) (*pool.Launched, error) {
	deadline := time.Now().Add(spec.HandshakeTimeout)
	cp, err := startClient(client)
	if err != nil {
		return nil, pr.startError(err, t.cfg.Versions)
	}
	raw, err := cp.Dispense(gp.Name)
	if err != nil {
		return nil, &pool.HandshakeError{Msg: fmt.Sprintf("the plugin does not serve %q: %v", gp.Name, err)}
	}
	agent := raw.(gp.AgentClient)
	gc := cp.(*plugin.GRPCClient)
	actx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	rep, err := agent.Activate(actx, &gp.ActivateRequest{Agent: spec.Agent, Host: spec.HostName, MaxDocumentBytes: int64(spec.MaxDocumentBytes)})
	if err != nil {
		if status.Code(err) == codes.Unimplemented {
			return nil, &pool.HandshakeError{GiveUp: true, Msg: fmt.Sprintf("the plugin does not serve the Agent service: %v", err)}
		}
		return nil, &pool.HandshakeError{Msg: fmt.Sprintf("the plugin's activation failed: %v; its stderr ended with: %s", err, tail(pr.process()))}
	}
	lctx, lcancel := context.WithCancel(context.Background())
	// The lower of the two limits, as the pool agrees it for the worker.
	maxDocument := spec.MaxDocumentBytes
	if rep.MaxDocumentBytes > 0 {
		maxDocument = min(maxDocument, int(min(rep.MaxDocumentBytes, math.MaxInt32)))
	}
	l := &link{client: client, gc: gc, agent: agent, conn: gc.Conn, proc: pr.process(), deliver: spec.Deliver,
		maxDocument: maxDocument, ctx: lctx, cancel: lcancel}
	return &pool.Launched{
		Proc: pr.process(), Link: l, Version: client.NegotiatedVersion(), SDK: rep.Sdk, Agents: rep.Agents,
		Concurrency: int(rep.Concurrency), MaxDocumentBytes: int(rep.MaxDocumentBytes),
		Active: rep.Activate, ActivateReason: rep.ActivateReason,
	}, nil
}

// startClient is client.Client(), with a panic in go-plugin's start (which
// it re-raises after killing the plugin) made a failed start rather than
// the end of the host.
func startClient(client *plugin.Client) (cp plugin.ClientProtocol, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("go-plugin panicked starting the plugin: %v", r)
		}
	}()
	return client.Client()
}

// link is a started plugin, for the pool.
type link struct {
	client      *plugin.Client
	gc          *plugin.GRPCClient
	agent       gp.AgentClient
	conn        *grpc.ClientConn
	proc        *proc.Process
	deliver     func(id string, reply []byte, failure error)
	maxDocument int

	ctx    context.Context // ends the calls still running when the link closes
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// diedWait is how long a failed call waits to see whether its plugin
// died, which the pool then reports with how it ended.
const diedWait = time.Second

func (l *link) Send(id string, deadline time.Time, req *protocol.AgentRequest, facts []byte) error {
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("%w: %v", wp.ErrEncoding, err)
	}
	if len(b)+len(facts) > l.maxDocument {
		return fmt.Errorf("%w: %d bytes", wp.ErrTooLarge, len(b)+len(facts))
	}
	l.wg.Go(func() {
		// Not the request's context: as a worker does, a plugin is told
		// of a cancellation with Cancel and still answers; a plugin that
		// does not is stopped by the pool, which ends this call.
		rep, err := l.agent.Run(l.ctx, &gp.RunRequest{Id: id, DeadlineMs: deadline.UnixMilli(), Request: b, Facts: facts})
		if err != nil {
			select {
			case <-l.proc.Exited():
				return
			case <-l.ctx.Done():
				return
			case <-time.After(diedWait):
			}
			l.deliver(id, nil, fmt.Errorf("the plugin's Run failed: %w", err))
			return
		}
		l.deliver(id, rep.Reply, nil)
	})
	return nil
}

func (l *link) Cancel(id, reason string) {
	l.wg.Go(func() {
		ctx, cancel := context.WithTimeout(l.ctx, time.Second)
		defer cancel()
		_, _ = l.agent.Cancel(ctx, &gp.CancelRequest{Id: id, Reason: reason})
	})
}

func (l *link) Ping(ctx context.Context) error {
	rep, err := grpc_health_v1.NewHealthClient(l.conn).Check(ctx, &grpc_health_v1.HealthCheckRequest{Service: plugin.GRPCServiceName})
	if err != nil {
		return err
	}
	if rep.Status != grpc_health_v1.HealthCheckResponse_SERVING {
		return fmt.Errorf("the plugin's health is %s", rep.Status)
	}
	return nil
}

// Shutdown asks the plugin to exit: go-plugin's controller Shutdown,
// which stops its gRPC server, and the connection closed. Not go-plugin's
// Kill, which stops the plugin 2 s later: as for a worker, the pool stops
// the process group once the grace (pool.shutdown_grace) is over. Calls
// in flight are cut, which is why the pool drains first.
func (l *link) Shutdown(string, time.Duration) {
	// Close returns once the plugin answered or exited.
	l.wg.Go(func() { _ = l.gc.Close() })
}

func (l *link) Close() {
	l.cancel()
	l.client.Kill()
	l.wg.Wait()
}

// agentPlugin is the go-plugin plugin on the host's side.
type agentPlugin struct {
	plugin.NetRPCUnsupportedPlugin
}

func (agentPlugin) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error {
	return errors.New("runner/grpcplugin: the host does not serve the plugin")
}

func (agentPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return gp.NewAgentClient(c), nil
}

// handshakeLine is what is taken for go-plugin's handshake line:
// CORE|APP|NETWORK|ADDR|PROTOCOL[|...]. Other lines before it are stray
// output; parseHandshake then checks it.
var handshakeLine = regexp.MustCompile(`^[0-9]+\|[0-9]+\|(unix|tcp)\|[^|]+\|[a-z]+`)

// parseHandshake checks a handshake line and returns the app version and
// the socket's address. go-plugin is only ever given the line rebuilt
// from them: its optional fields (a server certificate for AutoMTLS,
// which the host does not use, would make go-plugin v1.8.0 panic) and
// other networks and sockets elsewhere never reach it.
func parseHandshake(line, socketDir string) (version int, addr string, refused *pool.HandshakeError) {
	refuse := func(giveUp bool, format string, args ...any) (int, string, *pool.HandshakeError) {
		return 0, "", &pool.HandshakeError{GiveUp: giveUp, Msg: fmt.Sprintf(format, args...)}
	}
	f := strings.Split(line, "|")
	// go-plugin's Serve writes a sixth field, empty without AutoMTLS.
	if len(f) == 6 && f[5] == "" {
		f = f[:5]
	}
	if len(f) != 5 {
		return refuse(false, "the plugin's go-plugin handshake line has %d fields, want the 5 of CORE|APP|unix|ADDR|grpc (and no certificate: the host does not use AutoMTLS)", len(f))
	}
	if f[0] != strconv.Itoa(plugin.CoreProtocolVersion) {
		return refuse(true, "the plugin's go-plugin handshake line has core version %q, want %d: the plugin or the host needs upgrading", f[0], plugin.CoreProtocolVersion)
	}
	version, err := strconv.Atoi(f[1])
	if err != nil {
		return refuse(false, "the plugin's go-plugin handshake line has version %q, not a number", f[1])
	}
	if f[2] != "unix" {
		return refuse(false, "the plugin's go-plugin handshake line names network %q, want unix", f[2])
	}
	// The socket must be one the plugin made where go-plugin told it to:
	// the host dials nothing else on the plugin's word.
	if socketDir == "" || !filepath.IsAbs(f[3]) || filepath.Dir(filepath.Clean(f[3])) != filepath.Clean(socketDir) {
		return refuse(false, "the plugin's go-plugin handshake line names socket %q, not one in the directory the host made for it (%s)", f[3], socketDir)
	}
	if f[4] != string(plugin.ProtocolGRPC) {
		return refuse(true, "unsupported plugin protocol %q: agent-host speaks only go-plugin's grpc", f[4])
	}
	return version, f[3], nil
}

// procRunner runs the plugin for go-plugin's client as a runner/proc
// process. Its stdout is go-plugin's only up to the handshake line.
type procRunner struct {
	ctx       context.Context
	spec      pool.LaunchSpec
	log       *slog.Logger
	versions  []int
	env       []string // go-plugin's: the cookie, the versions, the socket directory
	socketDir string   // go-plugin's, made for this plugin

	stdoutR *io.PipeReader
	stdoutW *io.PipeWriter

	mu         sync.Mutex
	p          *proc.Process
	handshook  bool
	picked     int                  // the version in the handshake line
	refused    *pool.HandshakeError // why the handshake line was not given to go-plugin
	stray      int
	stdinW     *os.File
	closeStdin sync.Once
	started    chan struct{} // closed once Start is over
	startOnce  sync.Once
}

func (r *procRunner) process() *proc.Process {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.p
}

// Start starts the process under the pool's context, not ctx, which only
// bounds the start.
func (r *procRunner) Start(context.Context) error {
	// stdin is a pipe only the host holds: it ends when the host does.
	defer r.startOnce.Do(func() { close(r.started) })
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		return err
	}
	env := append(slices.Clone(r.spec.Env), r.env...)
	p, err := proc.Start(r.ctx, proc.Spec{
		Path: r.spec.Executable, Args: []string{r.spec.Executable}, Env: env, Dir: r.spec.Dir,
		Stdin: stdinR, MaxLineBytes: r.spec.MaxLineBytes, MaxLogBytes: r.spec.MaxLogBytes,
		KillGrace: r.spec.KillGrace, LeaveLeftovers: r.spec.LeaveLeftovers,
	}, proc.WithLogger(r.log), proc.WithStdout(r.stdout))
	stdinR.Close()
	if err != nil {
		stdinW.Close()
		r.stdoutW.Close()
		return fmt.Errorf("starting plugin: %w", err)
	}
	r.mu.Lock()
	r.p, r.stdinW = p, stdinW
	r.mu.Unlock()
	go func() {
		// go-plugin reads stdout until it ends: it ends with the process.
		p.Wait()
		r.stdoutW.Close()
		r.closeStdin.Do(func() { stdinW.Close() })
	}()
	return nil
}

// stdout passes go-plugin its handshake line and logs every other line.
func (r *procRunner) stdout(line []byte, truncated bool) {
	r.mu.Lock()
	done := r.handshook
	if !done && !truncated && handshakeLine.Match(line) {
		r.handshook = true
		v, addr, refused := parseHandshake(string(line), r.socketDir)
		r.picked, r.refused = v, refused
		stray := r.stray
		r.mu.Unlock()
		if stray > maxStrayLogged {
			r.log.Warn("the plugin wrote more lines to stdout before its handshake", "lines", stray-maxStrayLogged)
		}
		if refused == nil {
			_, _ = fmt.Fprintf(r.stdoutW, "%d|%d|unix|%s|%s\n", plugin.CoreProtocolVersion, v, addr, plugin.ProtocolGRPC)
		}
		// go-plugin reads nothing more that matters from stdout; without
		// a line its start fails at once.
		r.stdoutW.Close()
		return
	}
	if !done {
		r.stray++
		n := r.stray
		r.mu.Unlock()
		if n <= maxStrayLogged {
			r.log.Warn("the plugin wrote to stdout before its go-plugin handshake; skipped", "line", clip(line), "truncated", truncated)
		}
		return
	}
	r.mu.Unlock()
	r.logLine(slog.LevelInfo, "stdout")(line, truncated)
}

// logLine logs lines of the plugin's output within its process's log
// budget. Lines can come before Start has the process: they wait for it.
func (r *procRunner) logLine(level slog.Level, stream string) proc.LineFunc {
	return func(line []byte, truncated bool) {
		<-r.started
		if p := r.process(); p != nil {
			p.LogLine(level, stream)(line, truncated)
		}
	}
}

// startError explains why go-plugin's start failed.
func (r *procRunner) startError(err error, versions []int) error {
	r.mu.Lock()
	handshook, picked, stray, refused := r.handshook, r.picked, r.stray, r.refused
	p := r.p
	r.mu.Unlock()
	switch {
	case refused != nil:
		return refused
	case handshook && !slices.Contains(versions, picked):
		return &pool.HandshakeError{GiveUp: true, Msg: fmt.Sprintf("the plugin picked version %d of the Agent service, which the host did not offer (%v): the plugin or the host needs upgrading", picked, versions)}
	case p == nil:
		return fmt.Errorf("starting the plugin: %w", err)
	}
	select {
	case <-p.Exited():
		res, _ := p.WaitExit()
		how := "exit status " + strconv.Itoa(res.ExitCode)
		if res.Signal != 0 {
			how = "killed by signal " + res.Signal.String()
		}
		p.Wait()
		if handshook {
			return &pool.HandshakeError{Msg: fmt.Sprintf("the plugin's go-plugin handshake failed: %v (it exited: %s); its stderr ended with: %s", err, how, tail(p))}
		}
		return &pool.HandshakeError{Msg: fmt.Sprintf("the plugin exited before its go-plugin handshake (%s; %d other lines on stdout): %v; its stderr ended with: %s", how, stray, err, tail(p))}
	default:
	}
	return &pool.HandshakeError{Msg: fmt.Sprintf("the plugin's go-plugin handshake failed: %v; its stderr ended with: %s", err, tail(p))}
}

func (r *procRunner) Diagnose(context.Context) string {
	return "its stderr ended with: " + tail(r.process())
}

func (r *procRunner) Stdout() io.ReadCloser { return r.stdoutR }

// Stderr is empty: runner/proc logs the plugin's stderr itself.
func (r *procRunner) Stderr() io.ReadCloser { return io.NopCloser(strings.NewReader("")) }

func (r *procRunner) Name() string { return r.spec.Executable }

func (r *procRunner) Wait(context.Context) error {
	p := r.process()
	if p == nil {
		return nil
	}
	res, err := p.Wait()
	if err != nil {
		return err
	}
	if res.ExitCode != 0 {
		return fmt.Errorf("plugin exited: status %d, signal %v", res.ExitCode, res.Signal)
	}
	return nil
}

// Kill stops the process group at once.
func (r *procRunner) Kill(context.Context) error {
	if p := r.process(); p != nil {
		p.Kill()
		p.Wait()
	}
	return nil
}

func (r *procRunner) ID() string {
	if p := r.process(); p != nil {
		return strconv.Itoa(p.Pid())
	}
	return ""
}

func (r *procRunner) PluginToHost(network, addr string) (string, string, error) {
	return network, addr, nil
}

func (r *procRunner) HostToPlugin(network, addr string) (string, string, error) {
	return network, addr, nil
}

// lineLog hands what is written to it to emit line by line, at most
// maxLine bytes a line, the rest of a longer line dropped.
type lineLog struct {
	emit proc.LineFunc

	mu   sync.Mutex
	buf  []byte
	long bool // buf holds the start of a longer line
}

const maxLine = 64 << 10

func (w *lineLog) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(b)
	for len(b) > 0 {
		i := slices.Index(b, '\n')
		seg := b
		if i >= 0 {
			seg = b[:i]
		}
		room := max(maxLine-len(w.buf), 0)
		w.long = w.long || len(seg) > room
		w.buf = append(w.buf, seg[:min(room, len(seg))]...)
		if i < 0 {
			break
		}
		w.emit(bytes.TrimRight(w.buf, "\r"), w.long)
		w.buf, w.long = w.buf[:0], false
		b = b[i+1:]
	}
	return n, nil
}

func tail(p *proc.Process) string {
	if p == nil {
		return "nothing"
	}
	lines := p.StderrTail()
	if len(lines) == 0 {
		return "nothing"
	}
	return strings.Join(lines, " | ")
}

func clip(b []byte) string {
	const max = 200
	if len(b) <= max {
		return string(b)
	}
	return string(b[:max]) + "…"
}

// Interface guards
var (
	_ pool.Transport  = (*Transport)(nil)
	_ pool.Link       = (*link)(nil)
	_ gprunner.Runner = (*procRunner)(nil)
)
