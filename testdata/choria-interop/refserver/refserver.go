// Package refserver runs the real Choria server, go-choria v0.30.2's
// server.Instance, built from its library packages with the two agent
// providers that serve RPC agents: the Go provider (rpcutil, discovery,
// choria_util; executor only when plugin.choria.executor.enabled) and the
// external agent provider, which serves the external agents found under
// plugin.choria.agent_provider.mcorpc.libdir exactly as `choria server
// run` does, one process per request.
//
// It is the reference agent-host is compared with: cmd/reference-server
// wraps it as a program, and the interop tests start it in-process.
//
// The minimal server configuration, in Choria's format and keys:
//
//	identity = node1.example.net                   # the certificate's name; default: the host name
//	collectives = mcollective                      # the default
//	plugin.choria.middleware_hosts = nats://127.0.0.1:4222
//	plugin.security.provider = file                # Choria's default is puppet
//	plugin.security.file.certificate = /path/to/ssl/node1.example.net.pem
//	plugin.security.file.key = /path/to/ssl/node1.example.net.key
//	plugin.security.file.ca = /path/to/ssl/ca.pem
//	# external agents: <libdir>/mcollective/agent/<agent>/<agent>.json
//	plugin.choria.agent_provider.mcorpc.libdir = /path/to/lib
//	# without it Choria's default authorization (actionpolicy) denies every
//	# request, rpcutil's too, to an agent with no policy file under
//	# <config dir>/policies; plugin.actionpolicy.allow_unconfigured = 1
//	# does not help in v0.30.2
//	rpcauthorization = 0
//	plugin.yaml = /path/to/facts.yaml              # optional
//	classesfile = /path/to/classes.txt             # optional
//	logfile = /path/to/server.log                  # default: standard error
//	loglevel = info
//
// An agent's configuration file is <config dir>/plugin.d/<agent>.
//
// Only one Server runs in a process at a time: Choria's agent providers
// are process-wide.
package refserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/choria-io/go-choria/build"
	"github.com/choria-io/go-choria/choria"
	"github.com/choria-io/go-choria/config"
	"github.com/choria-io/go-choria/inter"
	"github.com/choria-io/go-choria/plugin"
	"github.com/choria-io/go-choria/providers/agent/mcorpc/external"
	golangmco "github.com/choria-io/go-choria/providers/agent/mcorpc/golang"
	"github.com/choria-io/go-choria/server"
	"github.com/sirupsen/logrus"
)

// Server is one running Choria server.
type Server struct {
	cfg    *config.Config
	inst   *server.Instance
	cancel context.CancelFunc
	wg     sync.WaitGroup

	ready  chan struct{} // closed once the server serves every agent
	failed chan struct{} // closed when start-up failed; err says why
	err    error
	stop   sync.Once
}

var (
	registerOnce sync.Once
	externals    = &externalProvider{}

	runningMu sync.Mutex
	running   bool
)

// register adds the agent providers to go-choria's server package, as the
// loaders `choria` generates from packager/plugins.yaml (golangmco,
// externalmco) do, and gives the server its version.
func register() error {
	var err error
	registerOnce.Do(func() {
		build.Version = GoChoriaVersion
		err = errors.Join(
			plugin.Register("golangmco", golangmco.ChoriaPlugin()),
			plugin.Register("externalmco", externals),
		)
	})
	return err
}

// GoChoriaVersion is the go-choria release this module requires (its
// go.mod; a test keeps the two together). The server reports it:
// go-choria's release builds set build.Version with the linker, and the
// package's own value (0.29.4 in v0.30.2) is stale.
const GoChoriaVersion = "0.30.2"

// Start loads the server configuration file as `choria server run
// --config FILE` does and starts the server. It returns once the server
// is starting; Ready is closed when it serves requests, Failed when
// start-up failed.
//
// Logs go to the configuration's logfile, but "stdout" (Choria's
// default) and "stderr" both mean this process's standard error, and
// "discard" nowhere: standard output is left to the caller.
func Start(ctx context.Context, configFile string) (*Server, error) {
	runningMu.Lock()
	defer runningMu.Unlock()
	if running {
		return nil, errors.New("refserver: a server is already running in this process")
	}
	if err := register(); err != nil {
		return nil, fmt.Errorf("refserver: registering the agent providers: %w", err)
	}

	cfg, err := config.NewSystemConfig(configFile, true)
	if err != nil {
		return nil, fmt.Errorf("could not parse configuration %s: %w", configFile, err)
	}
	cfg.ApplyBuildSettings(choria.BuildInfo())
	if cfg.CustomLogger == nil {
		cfg.CustomLogger = consoleLogger(cfg)
	}

	fw, err := choria.NewWithConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("could not initialize Choria: %w", err)
	}
	fw.ConfigureProvisioning(ctx)
	if fw.ProvisionMode() {
		return nil, errors.New("refserver: the configuration puts the server in provisioning mode")
	}

	inst, err := server.NewInstance(fw)
	if err != nil {
		return nil, fmt.Errorf("could not create Choria Server instance: %w", err)
	}

	sctx, cancel := context.WithCancel(ctx)
	s := &Server{
		cfg:    cfg,
		inst:   inst,
		cancel: cancel,
		ready:  make(chan struct{}),
		failed: make(chan struct{}),
	}
	inst.RegisterReadyCallback(func(ctx context.Context) {
		if s.waitExternalAgents(ctx) == nil {
			close(s.ready)
		}
	})

	running = true
	fw.Logger("refserver").Infof("Choria Server version %s starting with config %s", choria.BuildInfo().Version(), cfg.ConfigFile)
	s.wg.Add(1)
	go func() {
		if err := inst.Run(sctx, &s.wg); err != nil {
			s.err = err
			close(s.failed)
		}
	}()
	return s, nil
}

// Ready is closed once the server is connected to the broker, subscribed
// for its node and its agents, and has loaded the external agents on disk.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Failed is closed when start-up failed; Err then says why.
func (s *Server) Failed() <-chan struct{} { return s.failed }

// Err is why start-up failed, once Failed is closed.
func (s *Server) Err() error {
	select {
	case <-s.failed:
		return s.err
	default:
		return nil
	}
}

// WaitReady waits until the server is ready, start-up fails or ctx ends.
func (s *Server) WaitReady(ctx context.Context) error {
	select {
	case <-s.ready:
		return nil
	case <-s.failed:
		return s.err
	case <-ctx.Done():
		return fmt.Errorf("waiting for the Choria server to be ready: %w", context.Cause(ctx))
	}
}

// Agents are the agents the server serves, sorted; empty before Ready.
func (s *Server) Agents() []string {
	mgr := s.inst.AgentManager()
	if mgr == nil {
		return nil
	}
	agents := mgr.KnownAgents()
	slices.Sort(agents)
	return agents
}

// ShutdownGrace is how long Choria gives a server to stop before it
// forces the exit: soft_shutdown_timeout seconds.
func (s *Server) ShutdownGrace() time.Duration {
	if s.cfg.SoftShutdownTimeout > 0 {
		return time.Duration(s.cfg.SoftShutdownTimeout) * time.Second
	}
	return 2 * time.Second
}

// Stop shuts the server down as Choria does on SIGTERM: the request
// processor stops, the connection closes and requests in flight end. It
// fails if that takes longer than grace.
func (s *Server) Stop(grace time.Duration) error {
	var err error
	s.stop.Do(func() {
		s.cancel()
		done := make(chan struct{})
		go func() {
			s.wg.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(grace):
			err = fmt.Errorf("the Choria server did not stop within %s", grace)
		}
		runningMu.Lock()
		running = false
		runningMu.Unlock()
	})
	return err
}

// waitExternalAgents waits until the external agent provider has loaded
// what is on disk; see externalRun.
func (s *Server) waitExternalAgents(ctx context.Context) error {
	externals.mu.Lock()
	run := externals.run
	externals.mu.Unlock()
	if run == nil {
		return errors.New("the external agent provider was not initialized")
	}
	return run.waitLoaded(ctx)
}

// consoleLogger is Choria's logger for logfile = stdout, stderr or
// discard, but writing to standard error (or nowhere): choria.CommonLogOpener
// in v0.30.2 points only logrus' global logger there, so its own logger
// would write to standard output whatever the setting.
func consoleLogger(cfg *config.Config) *logrus.Logger {
	var out io.Writer
	switch strings.ToLower(cfg.LogFile) {
	case "", "stdout", "stderr":
		out = os.Stderr
	case "discard":
		out = io.Discard
	default:
		return nil // a file, which Choria opens itself
	}
	l := logrus.New()
	l.SetOutput(out)
	switch cfg.LogLevel {
	case "debug":
		l.SetLevel(logrus.DebugLevel)
	case "info":
		l.SetLevel(logrus.InfoLevel)
	case "warn":
		l.SetLevel(logrus.WarnLevel)
	case "error":
		l.SetLevel(logrus.ErrorLevel)
	case "fatal":
		l.SetLevel(logrus.FatalLevel)
	default:
		l.SetLevel(logrus.WarnLevel)
	}
	return l
}

// externalProvider is go-choria's external agent provider, a new one for
// every server started: the provider remembers the agents it registered,
// so one used by a server that has stopped would register nothing with
// the next.
type externalProvider struct {
	mu  sync.Mutex
	run *externalRun
}

// externalRun is one server's external agent provider and what its log
// says about its reconciliation passes.
//
// The provider registers agents in the background: a pass over the
// libdirs right after the server connects, then one after every 0.5 s to
// 20 s. A pass takes the provider's lock for its whole length, logs
// "Reconciling external agents ..." at its start (at debug level, which
// the provider's own logger here always has) and skips DDL files changed
// less than 5 s ago, logging each, for a later pass to load.
type externalRun struct {
	provider *external.Provider

	mu      sync.Mutex
	pass    int           // passes started
	skipped bool          // the current pass skipped a DDL for its age
	started chan struct{} // closed when the next pass starts
}

const (
	passStartMessage = "Reconciling external agents from disk with running agents"
	skipPrefix       = "Skipping updated DDL file "
)

// waitLoaded waits for the end of the first pass that skipped no DDL:
// after it, every agent on disk is registered, or refused for a reason
// the log gives (a bad DDL, a failed activation check).
func (r *externalRun) waitLoaded(ctx context.Context) error {
	seen := 0
	for {
		r.mu.Lock()
		pass, next := r.pass, r.started
		r.mu.Unlock()
		if pass == seen {
			select {
			case <-next:
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		// Pass number pass has started; taking the provider's lock waits
		// for its end.
		r.provider.Agents()
		r.mu.Lock()
		complete := r.pass == pass && !r.skipped
		r.mu.Unlock()
		if complete {
			return nil
		}
		seen = pass
	}
}

func (r *externalRun) observe(msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case msg == passStartMessage:
		r.pass++
		r.skipped = false
		close(r.started)
		r.started = make(chan struct{})
	case strings.HasPrefix(msg, skipPrefix):
		r.skipped = true
	}
}

// Initialize gives a new go-choria external provider the server's
// configuration and a logger that forwards everything to the server's.
func (p *externalProvider) Initialize(cfg *config.Config, log *logrus.Entry) {
	run := &externalRun{provider: &external.Provider{}, started: make(chan struct{})}
	tap := logrus.New()
	tap.SetOutput(io.Discard)
	tap.SetLevel(logrus.DebugLevel)
	tap.AddHook(&tapHook{run: run, to: log.Logger})
	run.provider.Initialize(cfg, logrus.NewEntry(tap).WithFields(log.Data))

	p.mu.Lock()
	p.run = run
	p.mu.Unlock()
}

// RegisterAgents starts the provider's reconciliation loop.
func (p *externalProvider) RegisterAgents(ctx context.Context, mgr server.AgentManager, connector inter.AgentConnector, log *logrus.Entry) error {
	p.mu.Lock()
	run := p.run
	p.mu.Unlock()
	return run.provider.RegisterAgents(ctx, mgr, connector, log)
}

func (p *externalProvider) Version() string { return (&external.Provider{}).Version() }

// The plugin.Pluggable methods, as go-choria's own provider has them.
func (p *externalProvider) PluginInstance() any          { return p }
func (p *externalProvider) PluginName() string           { return (&external.Provider{}).PluginName() }
func (p *externalProvider) PluginType() inter.PluginType { return inter.AgentProviderPlugin }
func (p *externalProvider) PluginVersion() string        { return (&external.Provider{}).PluginVersion() }

// tapHook hands the provider's log entries to the run, and on to the
// server's logger at the levels that logger has.
type tapHook struct {
	run *externalRun
	to  *logrus.Logger
}

func (h *tapHook) Levels() []logrus.Level { return logrus.AllLevels }

func (h *tapHook) Fire(e *logrus.Entry) error {
	h.run.observe(e.Message)
	if h.to.IsLevelEnabled(e.Level) && e.Level > logrus.PanicLevel {
		h.to.WithFields(e.Data).WithTime(e.Time).Log(e.Level, e.Message)
	}
	return nil
}
