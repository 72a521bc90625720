// Package spawn runs external agents the way Choria does: one process
// per request, speaking the io.choria.mcorpc.external.v1 file protocol.
//
// For every request the spawner writes the request, an empty reply and
// the node's facts to temporary files, runs the agent with
//
//	argv: <exe> <request file> <reply file> io.choria.mcorpc.external.v1.rpc_request
//	env:  CHORIA_EXTERNAL_REQUEST, CHORIA_EXTERNAL_REPLY, CHORIA_EXTERNAL_PROTOCOL,
//	      CHORIA_EXTERNAL_CONFIG, CHORIA_EXTERNAL_FACTS and PATH, nothing else
//	cwd:  the temporary directory
//
// logs its stdout at INFO and its stderr at ERROR, and reads the reply
// file once it exited 0. The temporary files are removed on every path.
//
// Where Choria's behaviour is a quirk that agents may rely on, it is kept:
// the third argument names the rpc_request protocol even for activation
// checks, activation checks get an empty facts file, and
// CHORIA_EXTERNAL_CONFIG names <plugin.d>/<agent> without ".cfg". Where
// Choria can hang or leak it is not followed: the agent runs in a session
// and process group of its own, which is killed as a whole on timeout and
// after the agent exits (see runner/proc), and output lines are bounded
// and always drained.
package spawn

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/agent-host/agent-host/protocol"
	"github.com/agent-host/agent-host/protocol/worker"
	"github.com/agent-host/agent-host/runner"
	"github.com/agent-host/agent-host/runner/proc"
)

// Defaults for the zero values of Config.
const (
	DefaultMaxReplyBytes     = 1 << 20
	DefaultActivationTimeout = 2 * time.Second
)

// Config holds the spawner's settings. Every field may be left empty.
type Config struct {
	// PluginConfigDir is where agents' configuration lives; an agent is
	// told CHORIA_EXTERNAL_CONFIG=<PluginConfigDir>/<agent>, made absolute
	// and without a ".cfg" suffix, as Choria does. Choria uses the plugin.d
	// directory beside its server configuration file. Empty means
	// runner.DefaultPluginConfigDir.
	PluginConfigDir string
	// Facts returns the node's facts as a JSON object, written to the
	// facts file of every RPC request. Nil means {}. Activation checks get
	// an empty facts file whatever Facts says, as in Choria.
	Facts func() []byte
	// TempDir holds the request, reply and facts files and is the agents'
	// working directory. Empty means os.TempDir() when New is called.
	TempDir string
	// Path is the PATH agents get. Empty means this process's PATH when
	// New is called.
	Path string
	// MaxReplyBytes caps the reply file; a larger one fails with
	// runner.ErrReplyTooLarge without being read. Zero means
	// DefaultMaxReplyBytes.
	MaxReplyBytes int64
	// MaxLineBytes caps one logged line of an agent's stdout or stderr;
	// longer lines are logged truncated. Zero means proc.DefaultMaxLineBytes.
	MaxLineBytes int
	// MaxLogBytes caps how much of one agent run's output is logged.
	// Zero means proc.DefaultMaxLogBytes; negative means no limit.
	MaxLogBytes int64
	// KillGrace is how long an agent's process group has between SIGTERM
	// and SIGKILL once its deadline passed. Zero means
	// proc.DefaultKillGrace.
	KillGrace time.Duration
	// ActivationTimeout bounds an activation check. Zero means
	// DefaultActivationTimeout.
	ActivationTimeout time.Duration
	// LeaveLeftovers lets what an agent leaves running when it exits live
	// on, as Choria does (see proc.Spec.LeaveLeftovers).
	LeaveLeftovers bool
}

// Option changes a Spawner.
type Option func(*Spawner)

// WithLogger sets the logger agents' output goes to, with agent=<name>.
// The default discards it.
func WithLogger(l *slog.Logger) Option {
	return func(s *Spawner) {
		if l != nil {
			s.log = l
		}
	}
}

// Spawner runs agents, one process per request. It is safe for
// concurrent use. A run returns as soon as the agent has exited and its
// reply is read; what the agent left running is stopped afterwards, and
// Close waits for that.
type Spawner struct {
	cfg     Config
	pathEnv string // "PATH=..." handed to every agent
	log     *slog.Logger

	// mu guards closed: starts hold it for reading, so they run at once,
	// and Close for writing, so no start adds to procs once it waits.
	mu     sync.RWMutex
	closed bool
	procs  sync.WaitGroup
}

// ErrClosed is returned by runs after Close.
var ErrClosed = errors.New("spawn: the spawner is closed")

// Close refuses further runs and waits until every agent started and
// everything it left running are gone. Running agents are not stopped:
// their contexts do that.
func (s *Spawner) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.procs.Wait()
}

// New returns a Spawner with cfg's empty fields set to their defaults.
func New(cfg Config, opts ...Option) *Spawner {
	if cfg.PluginConfigDir == "" {
		cfg.PluginConfigDir = runner.DefaultPluginConfigDir
	}
	if abs, err := filepath.Abs(cfg.PluginConfigDir); err == nil {
		cfg.PluginConfigDir = abs
	}
	if cfg.TempDir == "" {
		cfg.TempDir = os.TempDir()
	}
	if cfg.Path == "" {
		cfg.Path = os.Getenv("PATH")
	}
	if cfg.MaxReplyBytes <= 0 {
		cfg.MaxReplyBytes = DefaultMaxReplyBytes
	}
	if cfg.ActivationTimeout <= 0 {
		cfg.ActivationTimeout = DefaultActivationTimeout
	}
	s := &Spawner{cfg: cfg, pathEnv: "PATH=" + cfg.Path, log: slog.New(slog.DiscardHandler)}
	for _, opt := range opts {
		if opt != nil {
			opt(s)
		}
	}
	return s
}

// Runner binds the spawner to the agent executable exe.
func (s *Spawner) Runner(exe string) runner.Runner {
	return runner.RunnerFunc(func(ctx context.Context, req *protocol.AgentRequest) (*protocol.AgentReply, error) {
		return s.Run(ctx, exe, req)
	})
}

// Run runs the agent executable exe for one request and returns its
// reply, decoded with protocol.DecodeAgentReply. The context's deadline
// is the agent's timeout: when it passes, the agent's process group is
// killed and the error matches runner.ErrTimeout. A non-zero exit is a
// *runner.ExitError, a missing executable runner.ErrNoExecutable. The
// reply's data is passed on as the agent wrote it: output defaults are
// the caller's to apply.
func (s *Spawner) Run(ctx context.Context, exe string, req *protocol.AgentRequest) (*protocol.AgentReply, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("json request creation failed: %w", err)
	}
	facts := []byte("{}")
	if s.cfg.Facts != nil {
		facts = s.cfg.Facts()
	}
	b, err := s.execute(ctx, exe, req.Agent, protocol.AgentRequestProtocol, body, facts)
	if err != nil {
		return nil, err
	}
	return protocol.DecodeAgentReply(b)
}

// Activate asks the agent executable exe whether agent should be loaded
// on this node, within Config.ActivationTimeout. A reply without the
// "activate" key means false. Any failure, a missing executable
// included, returns false with the error; Choria treats a missing
// executable as "not active" without a warning.
//
// The check also asks, in AGENT_HOST_WORKER_PROTOCOLS and
// AGENT_HOST_PLUGIN_PROTOCOLS, whether the agent can run as a pool worker
// or as a go-plugin plugin (PROTOCOL.md); the versions it answers with
// are returned.
func (s *Spawner) Activate(ctx context.Context, exe, agent string) (runner.Activation, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ActivationTimeout)
	defer cancel()
	body, err := json.Marshal(protocol.NewActivationRequest(agent))
	if err != nil {
		return runner.Activation{}, fmt.Errorf("could not json encode activation message: %w", err)
	}
	b, err := s.execute(ctx, exe, agent, protocol.ActivationRequestProtocol, body, nil,
		worker.EnvVersions+"="+strconv.Itoa(worker.V1), protocol.PluginVersionsEnv+"="+strconv.Itoa(protocol.PluginV1))
	if err != nil {
		return runner.Activation{}, err
	}
	var rep protocol.ActivationReply
	if err := json.Unmarshal(b, &rep); err != nil {
		return runner.Activation{}, fmt.Errorf("%w: failed to decode reply json: %v", protocol.ErrInvalidAgentReply, err)
	}
	act := runner.Activation{Active: rep.Activate}
	if rep.Worker != nil {
		act.WorkerVersions = rep.Worker.Versions
	}
	if rep.Plugin != nil {
		act.PluginVersions = rep.Plugin.Versions
	}
	return act, nil
}

// execute runs exe once under the file protocol and returns the content
// of its reply file.
func (s *Spawner) execute(ctx context.Context, exe, agent, proto string, body, facts []byte, env ...string) ([]byte, error) {
	if !filepath.IsAbs(exe) {
		// The agent runs in TempDir, where a relative path means something else.
		abs, err := filepath.Abs(exe)
		if err != nil {
			return nil, fmt.Errorf("resolving agent executable %s: %w", exe, err)
		}
		exe = abs
	}
	name := filepath.Base(exe)
	if err := ctx.Err(); err != nil {
		return nil, stopped(name, err)
	}

	noFiles := func(err error) error {
		return &runner.Failure{Message: fmt.Sprintf("executing %s failed: the node could not write the request files", name), Err: err}
	}
	reqFile, err := s.tempFile("request", body)
	if err != nil {
		return nil, noFiles(err)
	}
	defer os.Remove(reqFile)
	replyFile, err := s.tempFile("reply", nil)
	if err != nil {
		return nil, noFiles(err)
	}
	defer os.Remove(replyFile)
	factsFile, err := s.tempFile("facts", facts)
	if err != nil {
		return nil, noFiles(err)
	}
	defer os.Remove(factsFile)

	p, err := s.start(ctx, proc.Spec{
		Path: exe,
		// The protocol argument is rpc_request even for activation checks,
		// as in Choria; only the environment tells them apart.
		Args: []string{exe, reqFile, replyFile, protocol.AgentRequestProtocol},
		Env: append([]string{
			"CHORIA_EXTERNAL_REQUEST=" + reqFile,
			"CHORIA_EXTERNAL_REPLY=" + replyFile,
			"CHORIA_EXTERNAL_PROTOCOL=" + proto,
			"CHORIA_EXTERNAL_CONFIG=" + filepath.Join(s.cfg.PluginConfigDir, agent),
			"CHORIA_EXTERNAL_FACTS=" + factsFile,
			s.pathEnv,
		}, env...),
		Dir:            s.cfg.TempDir,
		MaxLineBytes:   s.cfg.MaxLineBytes,
		MaxLogBytes:    s.cfg.MaxLogBytes,
		KillGrace:      s.cfg.KillGrace,
		LeaveLeftovers: s.cfg.LeaveLeftovers,
	}, proc.WithLogger(s.log.With("agent", agent)))
	if errors.Is(err, ErrClosed) {
		return nil, err
	}
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			// ENOENT may also mean a missing working directory.
			if _, serr := os.Stat(exe); errors.Is(serr, fs.ErrNotExist) {
				return nil, fmt.Errorf("executing %s failed: %w", name, runner.ErrNoExecutable)
			}
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, stopped(name, ctxErr)
		}
		return nil, &runner.Failure{Message: fmt.Sprintf("executing %s failed: the agent could not be started", name), Err: err}
	}
	res, err := p.WaitExit()
	if err != nil {
		return nil, fmt.Errorf("executing %s failed: %w", name, err)
	}
	switch res.Stopped {
	case proc.TimedOut:
		return nil, stopped(name, context.DeadlineExceeded)
	case proc.Cancelled:
		return nil, stopped(name, ctx.Err())
	case proc.Killed:
		return nil, stopped(name, context.Canceled)
	}
	if res.Signal != 0 {
		return nil, &runner.ExitError{Name: name, Code: res.ExitCode, Signal: signalName(res.Signal)}
	}
	if res.ExitCode != 0 {
		return nil, &runner.ExitError{Name: name, Code: res.ExitCode}
	}
	return readReply(name, replyFile, s.cfg.MaxReplyBytes)
}

// start starts an agent process in the spawner's group, unless closed.
func (s *Spawner) start(ctx context.Context, spec proc.Spec, opts ...proc.Option) (*proc.Process, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, ErrClosed
	}
	return proc.Start(ctx, spec, append(opts, proc.WithGroup(&s.procs))...)
}

// tempFile creates a file in TempDir whose name starts with prefix and
// writes content to it in one write.
func (s *Spawner) tempFile(prefix string, content []byte) (string, error) {
	f, err := os.CreateTemp(s.cfg.TempDir, prefix)
	if err != nil {
		return "", fmt.Errorf("could not create %s temp file: %w", prefix, err)
	}
	if len(content) > 0 {
		_, err = f.Write(content)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("could not write %s temp file: %w", prefix, err)
	}
	return f.Name(), nil
}

// readReply reads the reply file by name, as Choria does, so that an
// agent may also replace it. Only a regular file of at most max bytes is
// read.
func readReply(name, path string, max int64) ([]byte, error) {
	unreadable := func(err error) error {
		return &runner.Failure{Message: fmt.Sprintf("executing %s failed: its reply file could not be read", name), Err: err}
	}
	// O_NONBLOCK keeps a FIFO put in the reply's place from blocking the open.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, unreadable(fmt.Errorf("failed to read reply json: %w", err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, unreadable(fmt.Errorf("failed to read reply json: %w", err))
	}
	if !fi.Mode().IsRegular() {
		return nil, unreadable(fmt.Errorf("failed to read reply json: %s is not a regular file", path))
	}
	if fi.Size() > max {
		return nil, &runner.ReplyTooLargeError{Size: fi.Size(), Limit: max}
	}
	var buf bytes.Buffer
	buf.Grow(int(fi.Size()) + bytes.MinRead)
	// Something left running may still be writing to it.
	if _, err := buf.ReadFrom(io.LimitReader(f, max+1)); err != nil {
		return nil, unreadable(fmt.Errorf("failed to read reply json: %w", err))
	}
	if int64(buf.Len()) > max {
		return nil, &runner.ReplyTooLargeError{Size: int64(buf.Len()), Limit: max}
	}
	return buf.Bytes(), nil
}

// signalName is a signal's conventional name, such as SIGSEGV.
func signalName(sig syscall.Signal) string {
	if name := unix.SignalName(sig); name != "" {
		return name
	}
	return fmt.Sprintf("signal %d", int(sig))
}

// stopped is the error for an agent ended by its context.
func stopped(name string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		err = runner.ErrTimeout
	}
	return fmt.Errorf("executing %s failed: %w", name, err)
}
