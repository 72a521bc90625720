// Package host is agent-host's request pipeline. It connects to NATS,
// subscribes to every collective's node and agent subjects and, for each
// message: decodes the Choria v1 envelopes, verifies the caller, checks
// the TTL window, matches the filter, authorizes, validates the inputs
// against the agent's DDL, runs the agent and publishes the reply.
//
// The host composes the other packages explicitly: host/security and
// host/filter for the checks, runner (and runner/spawn) for the agents,
// policy for authorization. Nothing imports host but cmd.
package host

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/agent-host/agent-host/host/config"
	"github.com/agent-host/agent-host/host/filter"
	"github.com/agent-host/agent-host/host/security"
	"github.com/agent-host/agent-host/policy"
	"github.com/agent-host/agent-host/runner"
	"github.com/agent-host/agent-host/runner/spawn"
)

// Version is agent-host's version, reported by rpcutil and `agent-host version`.
var Version = "0.1.0-dev"

// Authorizer decides whether a validated request may run. Errors deny.
type Authorizer interface {
	Authorize(ctx context.Context, in *policy.Input) (policy.Decision, error)
}

// Events is told about the host's lifecycle. Calls must not block for long:
// they happen on the start-up, shutdown and reload paths.
type Events interface {
	Startup(ctx context.Context, identity string, agents []string)
	Shutdown(ctx context.Context, identity string)
	AgentsChanged(ctx context.Context, identity string, change runner.Change)
}

// Option configures a Host with injected code; settings live in config.Config.
type Option func(*Host)

// WithLogger sets the logger; the default discards.
func WithLogger(l *slog.Logger) Option { return func(h *Host) { h.log = l } }

// WithAuthorizer sets the authorizer; the default allows every request.
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
	cfg       *config.Config
	log       *slog.Logger
	authz     Authorizer
	events    Events
	brokerURL string
	now       func() time.Time

	verifier security.Verifier
	// refusals limits the log lines about messages refused before they are
	// authenticated, which anyone on the broker can send.
	refusals *logLimit
	matcher  *filter.Matcher
	spawner  *spawn.Spawner
	catalog  *runner.Catalog
	inv      *inventory
	rpcutil  *agentEntry

	counters counters
	started  time.Time

	agents atomic.Pointer[agentTable]
	slots  chan struct{}
	wg     sync.WaitGroup

	// reqCtx outlives Run's context during the shutdown drain so in-flight
	// agents can finish; cancelling it kills them.
	reqCtx    context.Context
	reqCancel context.CancelFunc

	nc               *nats.Conn
	lastReconnectLog atomic.Int64
	subMu            sync.Mutex
	subs             map[string]*nats.Subscription

	ready    chan struct{}
	stopping chan struct{}
	abort    chan struct{}
	abortOne sync.Once
}

// shutdownGrace is how long in-flight requests may finish after Run's
// context ends before their agents are killed.
const shutdownGrace = 10 * time.Second

// New prepares a host: it loads the security material and compiles what
// can be compiled, so configuration errors surface before connecting.
func New(cfg *config.Config, opts ...Option) (*Host, error) {
	h := &Host{
		cfg:      cfg,
		log:      slog.New(slog.DiscardHandler),
		authz:    policy.AllowAll{},
		events:   nopEvents{},
		now:      time.Now,
		subs:     map[string]*nats.Subscription{},
		ready:    make(chan struct{}),
		stopping: make(chan struct{}),
		abort:    make(chan struct{}),
		refusals: newLogLimit(20, time.Second),
	}
	for _, o := range opts {
		o(h)
	}
	if cfg.Identity == "" {
		return nil, errors.New("host: identity is empty: set identity in the configuration")
	}

	v, err := newVerifier(cfg, h.log)
	if err != nil {
		return nil, err
	}
	h.verifier = v
	h.matcher = filter.NewMatcher(filter.WithLogger(h.log.With("component", "filter")))
	h.inv = newInventory(cfg.FactsFiles, cfg.ClassesFile, h.log.With("component", "inventory"))
	h.spawner, h.catalog = newAgentSource(cfg, h.inv, h.log)
	if h.rpcutil, err = newRPCUtil(h); err != nil {
		return nil, err
	}
	h.slots = make(chan struct{}, max(cfg.MaxInFlight, 1))
	return h, nil
}

func newVerifier(cfg *config.Config, log *slog.Logger) (security.Verifier, error) {
	switch cfg.SecurityProvider {
	case "insecure":
		log.Warn("SECURITY DISABLED: plugin.security.provider = insecure; requests are NOT verified and anyone who can publish to the broker can run agents")
		return security.Insecure{}, nil
	case "file":
		for _, k := range []struct{ key, value string }{
			{"plugin.security.file.certificate", cfg.FileCertificate},
			{"plugin.security.file.key", cfg.FileKey},
			{"plugin.security.file.ca", cfg.FileCA},
		} {
			if k.value == "" {
				return nil, fmt.Errorf("host: %s is not set: plugin.security.provider = file needs this node's certificate, its key and the CA", k.key)
			}
		}
		v, err := security.NewFileVerifier(security.FileConfig{
			CAFile:            cfg.FileCA,
			CertnameAllowList: cfg.CertnameWhitelist,
			PrivilegedUsers:   cfg.PrivilegedUsers,

			SupportLegacyCertificates: cfg.SupportLegacyCertificates,
		})
		if err != nil {
			return nil, fmt.Errorf("host: file security: %w", err)
		}
		return v, nil
	default:
		return nil, fmt.Errorf("host: plugin.security.provider %q is not supported; use file or insecure", cfg.SecurityProvider)
	}
}

// newAgentSource builds the spawner and the catalog that uses it for
// activation checks.
func newAgentSource(cfg *config.Config, inv *inventory, log *slog.Logger) (*spawn.Spawner, *runner.Catalog) {
	sp := spawn.New(spawn.Config{
		PluginConfigDir: cfg.PluginConfigDir(),
		Facts:           func() []byte { f, _ := inv.snapshot(); return f },
		MaxReplyBytes:   int64(cfg.ReplyMaxBytes),
	}, spawn.WithLogger(log.With("component", "spawn")))
	cat := runner.NewCatalog(runner.CatalogConfig{
		Libdirs:    cfg.AgentLibdirs,
		PluginDirs: cfg.Plugins,
		Settle:     cfg.AgentSettle,
		Activate: func(ctx context.Context, a *runner.Agent) (bool, error) {
			return sp.Activate(ctx, a.Executable, a.Name)
		},
	}, runner.WithLogger(log.With("component", "catalog")))
	return sp, cat
}

// LoadAgents finds and activation-checks the configured agents without
// serving them, for `agent-host agents`.
func LoadAgents(ctx context.Context, cfg *config.Config, log *slog.Logger) ([]*runner.Agent, error) {
	_, cat := newAgentSource(cfg, newInventory(cfg.FactsFiles, cfg.ClassesFile, log), log)
	if err := cat.Load(ctx); err != nil {
		return nil, err
	}
	return cat.Agents(), nil
}

// Subscription is one NATS subscription the host holds.
type Subscription struct{ Subject, Queue string }

// Subscriptions lists what the host is subscribed to, sorted by subject.
func (h *Host) Subscriptions() []Subscription {
	h.subMu.Lock()
	defer h.subMu.Unlock()
	out := make([]Subscription, 0, len(h.subs))
	for subj, sub := range h.subs {
		out = append(out, Subscription{subj, sub.Queue})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Subject < out[j].Subject })
	return out
}

// Ready is closed once the host is subscribed and serving.
func (h *Host) Ready() <-chan struct{} { return h.ready }

// Run loads the agents, connects and serves until ctx ends, then stops
// taking requests, lets in-flight ones finish (bounded) and disconnects.
func (h *Host) Run(ctx context.Context) error {
	h.started = h.now()
	h.reqCtx, h.reqCancel = context.WithCancel(context.WithoutCancel(ctx))
	defer h.reqCancel()
	go func() {
		select {
		case <-h.abort:
			h.reqCancel()
		case <-h.reqCtx.Done():
		}
	}()

	if err := h.catalog.Load(ctx); err != nil {
		return fmt.Errorf("host: loading agents: %w", err)
	}
	h.agents.Store(h.buildTable())

	nc, err := h.connect()
	if err != nil {
		return err
	}
	h.nc = nc
	defer nc.Close()

	if err := h.syncSubscriptions(); err != nil {
		// Some subscriptions may already have started requests.
		h.stop()
		return err
	}
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		h.log.Warn("waiting for the broker; requests will be served once connected", "broker", nc.Servers(), "error", err)
	}
	names := h.agents.Load().names
	if _, ok := h.authz.(policy.AllowAll); ok {
		h.log.Warn("authorization is not configured: every verified request may run any action of any agent")
	}
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
	h.log.Info("agent-host stopping", "in_flight", len(h.slots))
	// The watcher goes first so no reload re-subscribes behind the shutdown.
	<-watchDone
	h.stop()
	h.events.Shutdown(context.WithoutCancel(ctx), h.cfg.Identity)
	if err := nc.FlushTimeout(2 * time.Second); err != nil {
		h.log.Debug("flushing the last replies", "error", err)
	}
	return nil
}

// Abort kills the agents of in-flight requests at once instead of letting
// them finish; Run still returns only after their process groups are gone.
// For an operator who does not want to wait for the shutdown drain.
func (h *Host) Abort() { h.abortOne.Do(func() { close(h.abort) }) }

// stop takes no more requests and waits for those in flight.
func (h *Host) stop() {
	h.unsubscribeAll()
	h.drain()
}

// drain waits for in-flight requests by taking every in-flight slot, so
// no request can start behind it; after the grace period it kills the
// agents still running. Then it waits for the request goroutines to return.
func (h *Host) drain() {
	timer := time.NewTimer(shutdownGrace)
	defer timer.Stop()
	for range cap(h.slots) {
		select {
		case h.slots <- struct{}{}:
		case <-timer.C:
			h.log.Warn("in-flight requests did not finish in time; killing their agents", "grace", shutdownGrace)
			h.reqCancel()
			h.slots <- struct{}{}
		}
	}
	h.wg.Wait()
}

func (h *Host) connect() (*nats.Conn, error) {
	url := h.brokerURL
	if url == "" {
		url = strings.Join(h.cfg.MiddlewareURLs(), ",")
	}
	opts := []nats.Option{
		nats.Name("agent-host " + h.cfg.Identity),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.CustomReconnectDelay(reconnectDelay),
		nats.PingInterval(30 * time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				h.log.Warn("disconnected from broker", "error", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { h.log.Info("reconnected to broker", "url", c.ConnectedUrlRedacted()) }),
		nats.ReconnectErrHandler(h.reconnectError),
		nats.ErrorHandler(h.natsError),
	}
	if h.cfg.SecurityProvider == "file" {
		tc, err := security.TLSConfig(h.cfg.FileCertificate, h.cfg.FileKey, h.cfg.FileCA)
		if err != nil {
			return nil, fmt.Errorf("host: broker TLS: %w", err)
		}
		opts = append(opts, nats.Secure(tc))
	}
	if h.cfg.NATSCredentials != "" {
		opts = append(opts, nats.UserCredentials(h.cfg.NATSCredentials))
	} else if h.cfg.NATSUser != "" {
		opts = append(opts, nats.UserInfo(h.cfg.NATSUser, h.cfg.NATSPass))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("host: connecting to %s: %w", url, err)
	}
	return nc, nil
}

// reconnectDelay backs off exponentially from 250ms to 30s, with jitter
// so a fleet does not reconnect in lock step after a broker restart.
func reconnectDelay(attempts int) time.Duration {
	d := 250 * time.Millisecond << min(attempts, 7)
	d = min(d, 30*time.Second)
	return d/2 + time.Duration(time.Now().UnixNano()%int64(d/2))
}

// reconnectError logs why the broker cannot be reached (refused, TLS,
// credentials), at most once every 30 s while it lasts.
func (h *Host) reconnectError(c *nats.Conn, err error) {
	now := time.Now().UnixNano()
	last := h.lastReconnectLog.Load()
	if now-last < int64(30*time.Second) || !h.lastReconnectLog.CompareAndSwap(last, now) {
		return
	}
	h.log.Warn("cannot reach the broker; retrying with backoff", "broker", c.Servers(), "error", err)
}

// natsError logs asynchronous NATS errors. A slow consumer means the NATS
// client dropped messages because every in-flight slot stayed busy while
// the pending buffer filled; Stats counts them.
func (h *Host) natsError(_ *nats.Conn, sub *nats.Subscription, err error) {
	if errors.Is(err, nats.ErrSlowConsumer) && sub != nil {
		dropped, _ := sub.Dropped()
		h.log.Error("requests dropped: the host cannot keep up (raise plugin.agent_host.pending_limit or max_in_flight)", "subject", sub.Subject, "dropped_on_subject", dropped)
		return
	}
	h.log.Error("broker error", "error", err)
}

// pendingBudget bounds, in bytes, what all subscriptions together may
// buffer; each gets an equal share (at least minPendingBytes), so adding
// agents does not multiply the memory a burst can take.
const (
	pendingBudget   = 256 << 20
	minPendingBytes = 4 << 20
)

// syncSubscriptions makes the subscriptions match the agent table: the
// node subject and one broadcast subject per agent, in every collective.
// Service agents (DDL metadata.service) are load-balanced as in Choria: on
// <collective>.broadcast.service.<agent> in a queue group named after the agent.
func (h *Host) syncSubscriptions() error {
	select {
	case <-h.stopping:
		return nil
	default:
	}
	table := h.agents.Load()
	want := map[string]string{} // subject → queue group
	for _, c := range h.cfg.Collectives {
		want[c+".node."+h.cfg.Identity] = ""
		for _, name := range table.names {
			if a := table.get(name); a != nil && a.ddl.Metadata.Service {
				want[c+".broadcast.service."+name] = name
				continue
			}
			want[c+".broadcast.agent."+name] = ""
		}
	}
	h.subMu.Lock()
	defer h.subMu.Unlock()
	for subj, sub := range h.subs {
		if queue, ok := want[subj]; !ok || queue != sub.Queue {
			if d, err := sub.Dropped(); err == nil {
				h.counters.droppedGone.Add(int64(d))
			}
			if err := sub.Unsubscribe(); err != nil {
				h.log.Warn("unsubscribing", "subject", subj, "error", err)
			}
			delete(h.subs, subj)
		}
	}
	subjects := make([]string, 0, len(want))
	for subj := range want {
		if _, ok := h.subs[subj]; !ok {
			subjects = append(subjects, subj)
		}
	}
	sort.Strings(subjects)
	for _, subj := range subjects {
		sub, err := h.nc.QueueSubscribe(subj, want[subj], h.handle)
		if err != nil {
			return fmt.Errorf("host: subscribing to %s: %w", subj, err)
		}
		h.subs[subj] = sub
		h.log.Debug("subscribed", "subject", subj, "queue", want[subj])
	}
	share := max(pendingBudget/max(len(h.subs), 1), minPendingBytes)
	for subj, sub := range h.subs {
		if err := sub.SetPendingLimits(max(h.cfg.PendingLimit, 1), share); err != nil {
			return fmt.Errorf("host: pending limits on %s: %w", subj, err)
		}
	}
	return nil
}

// unsubscribeAll stops taking requests. Requests still waiting in a
// subscription's buffer are abandoned, and counted in the log, rather
// than started during shutdown.
func (h *Host) unsubscribeAll() {
	close(h.stopping)
	h.subMu.Lock()
	defer h.subMu.Unlock()
	for subj, sub := range h.subs {
		if d, err := sub.Dropped(); err == nil {
			h.counters.droppedGone.Add(int64(d))
		}
		if n, _, err := sub.Pending(); err == nil && n > 0 {
			h.log.Warn("shutting down: abandoning requests not yet started", "subject", subj, "requests", n)
		}
		if err := sub.Unsubscribe(); err != nil {
			h.log.Debug("unsubscribing", "subject", subj, "error", err)
		}
		delete(h.subs, subj)
	}
}

// applyChange is the catalog's hot-reload callback.
func (h *Host) applyChange(ch runner.Change) {
	h.agents.Store(h.buildTable())
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

type nopEvents struct{}

func (nopEvents) Startup(context.Context, string, []string)            {}
func (nopEvents) Shutdown(context.Context, string)                     {}
func (nopEvents) AgentsChanged(context.Context, string, runner.Change) {}

// Interface guards
var (
	_ Authorizer = policy.AllowAll{}
	_ Events     = nopEvents{}
)
