// Package host is agent-host's request pipeline. A request travels
//
//	NATS subscription → intake (bounded) → decoder: decode, verify, filter,
//	TTL, built-in agents answered at once → agent queue (bounded, fair) →
//	in-flight slot: authorize, audit, validate, run the agent → reply
//
// rpcutil takes the same steps as any agent, authorization included, on
// the decoder; discovery is answered without them, as in Choria.
//
// host.go composes the parts and owns the start-up and shutdown order,
// subscribe.go holds the NATS side, intake.go and queue.go the two bounded
// buffers, pipeline.go the checks in Choria's order, audit.go rpcaudit,
// reply.go what goes back on the wire, and metrics.go and status.go what
// the node tells Prometheus and Choria's status checks.
//
// The host wires the other packages explicitly: protocol/security and
// protocol/filter for the checks, host/builtin for discovery and rpcutil,
// host/inventory for facts and classes, runner (and runner/spawn) for the
// agents, policy for authorization. Nothing imports host but cmd.
//
// Unless plugin.agent_host.stop_leftovers is off, Run makes the process
// a child subreaper (runner/proc.BecomeSubreaper) for good, so that what
// agents leave behind can be stopped: a program embedding the host must
// start other processes in their own session through runner/proc, or in
// its own session, or they may be taken for agents' orphans.
package host

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/agent-host/agent-host/host/builtin"
	"github.com/agent-host/agent-host/host/config"
	"github.com/agent-host/agent-host/host/inventory"
	"github.com/agent-host/agent-host/policy"
	"github.com/agent-host/agent-host/protocol/filter"
	"github.com/agent-host/agent-host/protocol/security"
	"github.com/agent-host/agent-host/runner"
	"github.com/agent-host/agent-host/runner/proc"
	"github.com/agent-host/agent-host/runner/spawn"
)

// Version is agent-host's version, reported by rpcutil and `agent-host version`.
var Version = "0.1.0-dev"

// Authorizer decides whether a request whose action is known may run.
// Errors deny. It is asked on the request path, for built-in agents on
// the decoders that read every message, so it should answer in
// microseconds; its context ends with the agent's DDL timeout, as
// Choria's authorization runs within the agent's time.
type Authorizer interface {
	Authorize(ctx context.Context, in *policy.Input) (policy.Decision, error)
}

// Events is told about the host's lifecycle. Calls must not block for long:
// they happen on the start-up, shutdown and reload paths.
type Events interface {
	Startup(ctx context.Context, identity string, agents []string)
	Shutdown(ctx context.Context, identity string)
	AgentsChanged(ctx context.Context, identity string, change runner.Change)
	// WorkerChanged is called as a pooled agent's worker starts, is
	// recycled or exits, from the pool, which it must not hold up.
	WorkerChanged(ctx context.Context, identity string, ev runner.WorkerEvent)
}

// Option configures a Host with injected code; settings live in config.Config.
type Option func(*Host)

// WithLogger sets the logger; the default discards.
func WithLogger(l *slog.Logger) Option { return func(h *Host) { h.log = l } }

// WithAuthorizer replaces the authorizer the configuration selects
// (rpcauthorization, rpcauthprovider); the caller keeps it and closes it.
// policy.AllowAll turns authorization off, as rpcauthorization = false does.
func WithAuthorizer(a Authorizer) Option { return func(h *Host) { h.authz = a } }

// WithEvents sets the lifecycle hook; the default does nothing.
func WithEvents(e Events) Option { return func(h *Host) { h.events = e } }

// WithBrokerURL overrides the configured middleware hosts, for an
// embedded broker the caller started.
func WithBrokerURL(url string) Option { return func(h *Host) { h.brokerURL = url } }

// WithClock replaces time.Now, for TTL tests.
func WithClock(now func() time.Time) Option { return func(h *Host) { h.now = now } }

// Host serves Choria requests. Create it with New and run it with Run.
type Host struct {
	cfg   *config.Config
	log   *slog.Logger
	authz Authorizer
	// authzOff skips authorization, as Choria does with rpcauthorization
	// off; authzSummary says at start-up which authorizer decides, and
	// closeAuthz closes the one the host selected itself.
	authzOff     bool
	authzSummary string
	closeAuthz   func() error
	audit        *auditLog

	events    Events
	brokerURL string
	now       func() time.Time
	started   time.Time

	verifier security.Verifier
	// tlsFiles are what an x509 provider presents to the broker; empty
	// for insecure.
	tlsFiles security.Files
	matcher  *filter.Matcher
	inv      *inventory.Inventory
	spawner  *spawn.Spawner
	catalog  *runner.Catalog
	runners  *agentRunners
	rpcutil  *agentEntry
	choria   *agentEntry
	agents   atomic.Pointer[agentTable]

	// refusals limits the log lines about refused messages: anyone on the
	// broker can send them, and a flood must not flood the log.
	refusals *logLimit
	counters counters
	metrics  *metrics

	nc *nats.Conn
	// conn is nc for Publish, which may be called from other goroutines
	// at any time.
	conn   atomic.Pointer[nats.Conn]
	subMu  sync.Mutex
	subs   map[string]*nats.Subscription
	intake *intake
	queue  *agentQueue

	// changeMu serialises changes to the agents (the watcher's, Reload's,
	// which the catalog hands over in order) with the shutdown, which
	// sets changesOver; reloadMu serialises whole reloads.
	changeMu    sync.Mutex
	changesOver bool
	reloadMu    sync.Mutex

	// stopping is set once the host stops taking requests: what is still
	// buffered is answered that the node is shutting down.
	stopping atomic.Bool

	// reqCtx outlives Run's context during the shutdown drain so in-flight
	// agents can finish; cancelling it kills them.
	reqCtx    context.Context
	reqCancel context.CancelFunc

	ready    chan struct{}
	abort    chan struct{}
	abortOne sync.Once
}

// New prepares a host: it loads the security material and compiles what
// can be compiled, so configuration errors surface before connecting.
func New(cfg *config.Config, opts ...Option) (*Host, error) {
	h := &Host{
		cfg:      cfg,
		log:      slog.New(slog.DiscardHandler),
		events:   nopEvents{},
		now:      time.Now,
		subs:     map[string]*nats.Subscription{},
		ready:    make(chan struct{}),
		abort:    make(chan struct{}),
		refusals: newLogLimit(20, time.Second),
	}
	for _, o := range opts {
		o(h)
	}
	if cfg.Identity == "" {
		return nil, errors.New("host: identity is empty: set identity in the configuration")
	}
	h.started = h.now()

	v, files, err := newVerifier(context.Background(), cfg, h.log)
	if err != nil {
		return nil, err
	}
	h.verifier, h.tlsFiles = v, files
	// Filters come from the network: what the matcher says about bad ones
	// is rate-limited like every other line about refused messages.
	h.matcher = filter.NewMatcher(filter.WithLogger(slog.New(newLimitedHandler(h.log.Handler(), h.refusals)).With("component", "filter")))
	h.inv = inventory.New(cfg.FactsFiles, cfg.ClassesFile, h.log.With("component", "inventory"))
	h.spawner, h.catalog = newAgentSource(cfg, h.inv, h.log)
	h.queue = newAgentQueue(queueLimits{
		count:            cfg.QueueLimit,
		bytes:            cfg.QueueBytes,
		perAgent:         max(cfg.QueueLimit/2, 1),
		inFlightPerAgent: inFlightPerAgent(cfg),
	})
	h.runners = newAgentRunners(cfg, h.spawner, h.inv, h.log, h.queue.limitsChanged, func(ev runner.WorkerEvent) {
		h.events.WorkerChanged(context.Background(), cfg.Identity, ev)
	})
	if h.rpcutil, err = h.newRPCUtil(); err != nil {
		return nil, err
	}
	if h.choria, err = h.newChoriaUtil(); err != nil {
		return nil, err
	}
	h.intake = newIntake(cfg.PendingLimit, cfg.PendingBytes)
	h.metrics = newMetrics(h)
	// Last, as nothing after it can fail: Run closes what it selects.
	h.selectAuthorizer()
	if cfg.RPCAudit && cfg.RPCAuditLogfile != "" {
		h.audit = newAuditLog(cfg.RPCAuditLogfile, h.now)
	}
	return h, nil
}

// inFlightPerAgent is how many slots one agent may hold: the configured
// number, or half of them so that one slow agent leaves room for others.
func inFlightPerAgent(cfg *config.Config) int {
	if cfg.MaxInFlightPerAgent > 0 {
		return min(cfg.MaxInFlightPerAgent, cfg.MaxInFlight)
	}
	return max(cfg.MaxInFlight/2, 1)
}

// newAgentSource builds the spawner and the catalog that uses it for
// activation checks.
func newAgentSource(cfg *config.Config, inv *inventory.Inventory, log *slog.Logger) (*spawn.Spawner, *runner.Catalog) {
	sp := spawn.New(spawn.Config{
		PluginConfigDir: cfg.PluginConfigDir(),
		Facts:           inv.Facts,
		MaxReplyBytes:   int64(cfg.ReplyMaxBytes),
		LeaveLeftovers:  !cfg.StopLeftovers,
	}, spawn.WithLogger(log.With("component", "spawn")))
	cat := runner.NewCatalog(runner.CatalogConfig{
		Libdirs:    cfg.AgentLibdirs,
		PluginDirs: cfg.Plugins,
		Settle:     cfg.AgentSettle,
		Activate: func(ctx context.Context, a *runner.Agent) (runner.Activation, error) {
			return sp.Activate(ctx, a.Executable, a.Name)
		},
	}, runner.WithLogger(log.With("component", "catalog")))
	return sp, cat
}

// LoadAgents finds and activation-checks the configured agents without
// serving them, for `agent-host agents`.
func LoadAgents(ctx context.Context, cfg *config.Config, log *slog.Logger) ([]*runner.Agent, error) {
	sp, cat := newAgentSource(cfg, inventory.New(cfg.FactsFiles, cfg.ClassesFile, log), log)
	defer sp.Close()
	if err := cat.Load(ctx); err != nil {
		return nil, err
	}
	return cat.Agents(), nil
}

// Ready is closed once the host is subscribed and serving.
func (h *Host) Ready() <-chan struct{} { return h.ready }

// Run loads the agents, connects and serves until ctx ends. Then it stops
// taking requests, answers every request it will not run that the node is
// shutting down, lets the running ones finish (within
// plugin.agent_host.shutdown_grace) and disconnects.
func (h *Host) Run(ctx context.Context) error {
	// The authorizer goes last, once nothing can ask it any more.
	defer h.closeAuthorizer()
	h.reqCtx, h.reqCancel = context.WithCancel(context.WithoutCancel(ctx))
	defer h.reqCancel()
	defer h.spawner.Close()
	// After the requests: pools close once nothing runs on them (here
	// when Run fails; a normal stop closes them before the shutdown event).
	defer h.runners.close()
	go func() {
		select {
		case <-h.abort:
			h.reqCancel()
		case <-h.reqCtx.Done():
		}
	}()

	// Agents and workers get only the descriptors they are given, not
	// what the host inherited.
	if err := proc.CloseInheritedOnExec(); err != nil {
		h.log.Debug("descriptors the host inherited may reach its agents", "error", err)
	}
	// Agents' descendants that leave their session come back to the host
	// when their parent dies, rather than to init, so they can be stopped.
	if h.cfg.StopLeftovers {
		if err := proc.BecomeSubreaper(); err != nil {
			h.log.Warn("agents' descendants that leave their process group cannot be stopped on this system", "error", err)
		}
	}
	if err := h.catalog.Load(ctx); err != nil {
		return fmt.Errorf("host: loading agents: %w", err)
	}
	h.agents.Store(h.buildTable())

	nc, err := h.connect()
	if err != nil {
		return err
	}
	h.nc = nc
	h.conn.Store(nc)
	defer nc.Close()
	obs, err := h.startObservers(ctx)
	if err != nil {
		return err
	}
	defer obs.stop()

	workers := h.startWorkers()
	if err := h.syncSubscriptions(); err != nil {
		h.stop(workers)
		return err
	}
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		h.log.Warn("waiting for the broker; requests will be served once connected", "broker", nc.Servers(), "error", err)
	}
	names := h.agents.Load().names
	h.logAuthorization()
	h.log.Info("agent-host serving", "identity", h.cfg.Identity, "collectives", h.cfg.Collectives, "agents", names, "broker", nc.ConnectedUrlRedacted(), "connected", nc.IsConnected())
	h.events.Startup(ctx, h.cfg.Identity, names)
	close(h.ready)

	watchDone := make(chan error, 1)
	go func() {
		err := h.catalog.Watch(ctx, h.applyChange)
		if err != nil {
			h.log.Error("agent watcher failed: agents on disk will not be reloaded until restart", "error", err)
		}
		watchDone <- err
	}()

	<-ctx.Done()
	h.log.Info("agent-host stopping", "running", h.queue.running(), "waiting", h.queue.waiting())
	// The watcher and reloads go first so none re-subscribes behind the shutdown.
	<-watchDone
	h.changeMu.Lock()
	h.changesOver = true
	h.changeMu.Unlock()
	h.stop(workers)
	// The workers' exits are told before the shutdown event, the last word.
	h.runners.close()
	h.events.Shutdown(context.WithoutCancel(ctx), h.cfg.Identity)
	if err := nc.FlushTimeout(2 * time.Second); err != nil {
		h.log.Debug("flushing the last replies", "error", err)
	}
	return nil
}

// Publish sends data to subject on the host's broker connection without
// waiting for the broker, for the Events hook (lifecycle.Publisher). It
// fails before Run has connected and after it has disconnected; while the
// connection is down the client buffers what is published.
func (h *Host) Publish(subject string, data []byte) error {
	nc := h.conn.Load()
	if nc == nil {
		return errors.New("host: not connected to the broker")
	}
	if err := nc.Publish(subject, data); err != nil {
		return err
	}
	h.counters.events.Add(1)
	return nil
}

// Abort kills the agents of in-flight requests at once instead of letting
// them finish; Run still returns only after their process groups are gone.
// For an operator who does not want to wait for the shutdown drain.
func (h *Host) Abort() { h.abortOne.Do(func() { close(h.abort) }) }

// workers are the goroutines that move requests along the pipeline.
type workers struct {
	mover, decoders, slots sync.WaitGroup
	stopMover              chan struct{}
}

// startWorkers starts the intake mover, one decoder per CPU (at least
// two) and one goroutine per in-flight slot.
func (h *Host) startWorkers() *workers {
	w := &workers{stopMover: make(chan struct{})}
	w.mover.Go(func() { h.intake.move(w.stopMover, h.dropped) })
	for range max(runtime.GOMAXPROCS(0), 2) {
		w.decoders.Go(func() {
			for msg, ok := h.intake.pop(); ok; msg, ok = h.intake.pop() {
				h.handle(msg)
			}
		})
	}
	for range max(h.cfg.MaxInFlight, 1) {
		w.slots.Go(func() {
			for r, ok := h.queue.pop(); ok; r, ok = h.queue.pop() {
				h.runQueued(r)
				h.queue.done(r)
			}
		})
	}
	return w
}

// stop takes no more requests and winds the pipeline down in order: no
// queued request starts any more, everything the broker delivered is
// decoded, what will not run is answered that the node is shutting down,
// and running requests get the shutdown grace before their agents are
// killed.
func (h *Host) stop(w *workers) {
	h.stopping.Store(true)
	for _, r := range h.queue.close() {
		h.refuse(r, h.shuttingDownMessage())
	}
	h.drainSubscriptions()
	close(w.stopMover)
	w.mover.Wait()
	w.decoders.Wait()

	slotsDone := make(chan struct{})
	go func() { w.slots.Wait(); close(slotsDone) }()
	timer := time.NewTimer(h.cfg.ShutdownGrace)
	defer timer.Stop()
	select {
	case <-slotsDone:
	case <-timer.C:
		h.log.Warn("running requests did not finish in time; killing their agents", "grace", h.cfg.ShutdownGrace, "running", h.queue.running())
		h.reqCancel()
		<-slotsDone
	}
}

// applyChange is the catalog's hot-reload callback.
func (h *Host) applyChange(ch runner.Change) {
	h.changeMu.Lock()
	defer h.changeMu.Unlock()
	if h.changesOver {
		// A reload racing the shutdown: nothing may subscribe any more.
		return
	}
	table := h.buildTable()
	h.agents.Store(table)
	// Requests that found the old runners still finish on them.
	h.runners.retired(table)
	for _, a := range ch.Added {
		h.log.Info("agent added", "agent", a.Name, "active", a.Active, "ddl", a.DDLPath)
	}
	for _, a := range ch.Updated {
		h.log.Info("agent updated", "agent", a.Name, "active", a.Active, "ddl", a.DDLPath)
	}
	for _, a := range ch.Removed {
		h.log.Info("agent removed", "agent", a.Name)
	}
	if err := h.syncSubscriptions(); err != nil {
		h.log.Error("updating subscriptions after an agent change", "error", err)
	}
	h.events.AgentsChanged(h.reqCtx, h.cfg.Identity, ch)
}

// selectAuthorizer picks the authorizer the configuration names, unless
// one was injected.
func (h *Host) selectAuthorizer() {
	if h.authz != nil {
		_, h.authzOff = h.authz.(policy.AllowAll)
		h.authzSummary = "authorizing with the authorizer the program embedding the host gave it"
		if h.authzOff {
			h.authzSummary = "authorization is off (policy.AllowAll): every verified request may run any action"
		}
		return
	}
	c := h.cfg
	a, summary := policy.New(PolicyConfig(c, h.log.With("component", "policy")))
	h.authz, h.authzOff, h.authzSummary, h.closeAuthz = a, !c.RPCAuthorization, summary, a.Close
}

// PolicyConfig is the authorizer's configuration from the server's: the
// host's and `agent-host policy eval`'s.
func PolicyConfig(c *config.Config, log *slog.Logger) policy.Config {
	return policy.Config{
		Enabled:    c.RPCAuthorization,
		Provider:   c.RPCAuthProvider,
		ConfigFile: c.ConfigFile,
		// Choria traces every evaluation at debug level too.
		RegoTrace: c.RegoPolicyTracing || c.LogLevel == "debug",
		RegoV0:    c.RegoV0Compatible,
		ActionPolicy: policy.ActionPolicyOptions{
			EnableDefault:     c.ActionPolicyEnableDefault,
			DefaultName:       c.ActionPolicyDefaultName,
			AllowUnconfigured: c.ActionPolicyAllowUnconfigured,
		},
		Logger: log,
	}
}

// logAuthorization says at start-up who decides which request may run:
// loudly when nobody does, or when nothing will be allowed.
func (h *Host) logAuthorization() {
	switch {
	case h.authzOff:
		h.log.Warn("AUTHORIZATION DISABLED: " + h.authzSummary)
	case h.closeAuthz != nil && !knownProvider(h.cfg.RPCAuthProvider):
		h.log.Error(h.authzSummary, "rpcauthprovider", h.cfg.RPCAuthProvider, "supported", "action_policy, rego_policy")
	default:
		h.log.Info(h.authzSummary)
	}
	if h.cfg.RPCAudit {
		if h.audit == nil {
			h.log.Warn("rpcaudit is on but plugin.rpcaudit.logfile is not set: no request is audited")
		} else {
			h.log.Info("auditing every authorized request", "logfile", h.cfg.RPCAuditLogfile)
		}
	}
}

// knownProvider reports an rpcauthprovider policy.New has an authorizer
// for; it denies every request for any other.
func knownProvider(p string) bool {
	switch strings.ToLower(strings.TrimSpace(p)) {
	case "action_policy", "rego_policy", "":
		return true
	}
	return false
}

func (h *Host) closeAuthorizer() {
	if h.closeAuthz == nil {
		return
	}
	if err := h.closeAuthz(); err != nil {
		h.log.Warn("closing the authorizer", "error", err)
	}
}

// newRPCUtil builds the rpcutil agent over this host's state.
func (h *Host) newRPCUtil() (*agentEntry, error) {
	run, d, err := builtin.NewRPCUtil(h.builtinNode())
	if err != nil {
		return nil, err
	}
	return &agentEntry{name: builtin.RPCUtil, ddl: d, run: run, builtin: true}, nil
}

// newChoriaUtil builds the choria_util agent over this host's state.
func (h *Host) newChoriaUtil() (*agentEntry, error) {
	run, d, err := builtin.NewChoriaUtil(h.builtinNode())
	if err != nil {
		return nil, err
	}
	return &agentEntry{name: builtin.ChoriaUtil, ddl: d, run: run, builtin: true}, nil
}

// builtinNode is what the built-in agents report about this host.
func (h *Host) builtinNode() builtin.Node {
	return builtin.Node{
		Config:     h.cfg,
		Version:    Version,
		Started:    h.started,
		Now:        h.now,
		Inventory:  h.inv.Snapshot,
		Agents:     func() []builtin.Agent { return h.agents.Load().builtinAgents() },
		Stats:      func() builtin.Stats { return h.Stats().builtin() },
		Connection: h.connection,
	}
}

type nopEvents struct{}

func (nopEvents) Startup(context.Context, string, []string)                 {}
func (nopEvents) Shutdown(context.Context, string)                          {}
func (nopEvents) AgentsChanged(context.Context, string, runner.Change)      {}
func (nopEvents) WorkerChanged(context.Context, string, runner.WorkerEvent) {}

// Interface guards
var (
	_ Authorizer = policy.AllowAll{}
	_ Events     = nopEvents{}
)
