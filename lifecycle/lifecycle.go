package lifecycle

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agent-host/agent-host/runner"
)

// Publisher sends one message, without waiting for the broker: the host's
// NATS connection, for example.
type Publisher interface {
	Publish(subject string, data []byte) error
}

// PublisherFunc adapts a function to Publisher.
type PublisherFunc func(subject string, data []byte) error

// Publish calls f.
func (f PublisherFunc) Publish(subject string, data []byte) error { return f(subject, data) }

// Defaults of Config.
const (
	// DefaultComponent is the component Choria's servers report.
	DefaultComponent = "server"
	// DefaultAliveInterval is how often Choria's servers say they are alive.
	DefaultAliveInterval = 30 * time.Minute
	// DefaultQueue is how many events may wait to be published.
	DefaultQueue = 64
	// DefaultDrainTimeout is how long Shutdown waits for the queue to empty.
	DefaultDrainTimeout = 2 * time.Second
)

// Config configures Events. Every field has a default.
type Config struct {
	// Version is reported in startup and alive events; empty when unset.
	Version string
	// Component is the component the events name: DefaultComponent when empty.
	Component string
	// Legacy publishes bare data documents instead of CloudEvents, as
	// plugin.choria.legacy_lifecycle_format does.
	Legacy bool
	// AliveInterval is the time between alive events: DefaultAliveInterval
	// when zero. As in Choria, the first comes after a random delay of less
	// than one interval, so that nodes started together do not all report
	// at once. Shorter intervals are for tests; a negative one sends none.
	AliveInterval time.Duration
	// Queue is how many events may wait to be published: DefaultQueue when
	// zero. A full queue drops events.
	Queue int
	// DrainTimeout bounds how long Shutdown waits for the queued events,
	// the shutdown event last, to be handed to the publisher:
	// DefaultDrainTimeout when zero.
	DrainTimeout time.Duration
	// Logger receives publishing failures and drops; the default discards.
	Logger *slog.Logger
	// Now replaces time.Now.
	Now func() time.Time
}

// Events publishes lifecycle events; it implements the host's Events hook.
// Create it with New. Startup starts the publishing goroutine and the
// alive events, Shutdown publishes the shutdown event and stops both.
type Events struct {
	pub Publisher
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	started bool
	closed  bool
	// early holds, up to Config.Queue-1, the events that come before
	// Startup (a pool's first workers start while the host connects):
	// they follow the startup event.
	early    []message
	queue    chan message
	done     chan struct{}
	stopLive context.CancelFunc
	alive    sync.WaitGroup

	published, dropped, failed atomic.Uint64
}

type message struct {
	kind, subject string
	data          []byte
}

// New returns lifecycle events published through pub.
func New(pub Publisher, cfg Config) *Events {
	if cfg.Component == "" {
		cfg.Component = DefaultComponent
	}
	if cfg.AliveInterval == 0 {
		cfg.AliveInterval = DefaultAliveInterval
	}
	if cfg.Queue <= 0 {
		cfg.Queue = DefaultQueue
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = DefaultDrainTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Events{
		pub:   pub,
		cfg:   cfg,
		log:   cfg.Logger,
		queue: make(chan message, cfg.Queue),
		done:  make(chan struct{}),
	}
}

// Stats counts events: handed to the publisher, dropped because the queue
// was full or the events were stopped, and refused by the publisher.
type Stats struct {
	Published, Dropped, Failed uint64
}

// Stats returns the counters.
func (e *Events) Stats() Stats {
	return Stats{Published: e.published.Load(), Dropped: e.dropped.Load(), Failed: e.failed.Load()}
}

// Startup publishes the startup event and starts the alive events, which
// stop at Shutdown or when ctx ends. A second call does nothing.
func (e *Events) Startup(ctx context.Context, identity string, _ []string) {
	b := newBasic(ChoriaProtocolPrefix+Startup, identity, e.cfg.Component, e.cfg.Now())
	j, err := encode(ChoriaSource, b, StartupData{Basic: b, Version: e.cfg.Version}, e.cfg.Legacy)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.started || e.closed {
		return
	}
	e.started = true
	// The startup event first, then what came before it: the queue has
	// room for both, as nothing takes from it yet.
	if err != nil {
		e.failed.Add(1)
		e.log.Error("encoding a lifecycle event", "type", Startup, "error", err)
	} else {
		e.queue <- message{kind: Startup, subject: ChoriaSubject(Startup, e.cfg.Component), data: j}
	}
	for _, m := range e.early {
		e.queue <- m
	}
	e.early = nil
	go e.run()
	aliveCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	e.stopLive = cancel
	if e.cfg.AliveInterval > 0 {
		e.alive.Go(func() { e.aliveLoop(ctx, aliveCtx, identity) })
	}
}

// Shutdown stops the alive events, publishes the shutdown event and waits,
// at most Config.DrainTimeout, until it has been handed to the publisher.
// Events after it are dropped.
func (e *Events) Shutdown(_ context.Context, identity string) {
	e.mu.Lock()
	if e.closed || !e.started {
		e.closed = true
		for _, m := range e.early {
			e.drop(m.kind, errors.New("the host stopped before it started serving"))
		}
		e.early = nil
		e.mu.Unlock()
		return
	}
	e.mu.Unlock()
	e.stopLive()
	e.alive.Wait()

	drain, cancel := context.WithTimeout(context.Background(), e.cfg.DrainTimeout)
	defer cancel()
	// The shutdown event waits for room in a full queue: it is the last
	// word on this node. Only Shutdown closes the queue, so sending
	// outside the lock is safe.
	b := newBasic(ChoriaProtocolPrefix+Shutdown, identity, e.cfg.Component, e.cfg.Now())
	if j, err := encode(ChoriaSource, b, ShutdownData{Basic: b}, e.cfg.Legacy); err != nil {
		e.failed.Add(1)
		e.log.Error("encoding a lifecycle event", "type", Shutdown, "error", err)
	} else {
		select {
		case e.queue <- message{kind: Shutdown, subject: ChoriaSubject(Shutdown, e.cfg.Component), data: j}:
		case <-drain.Done():
			e.drop(Shutdown, errors.New("the queue stayed full"))
		}
	}

	e.mu.Lock()
	e.closed = true
	close(e.queue)
	e.mu.Unlock()
	select {
	case <-e.done:
	case <-drain.Done():
		e.log.Warn("lifecycle events still queued at shutdown were not published", "waited", e.cfg.DrainTimeout)
	}
}

// AgentsChanged publishes one agent_changed event per agent added,
// updated or removed.
func (e *Events) AgentsChanged(_ context.Context, identity string, ch runner.Change) {
	send := func(a *runner.Agent, change string) {
		b := newBasic(ProtocolPrefix+AgentChanged, identity, e.cfg.Component, e.cfg.Now())
		e.enqueue(AgentChanged, AgentHostSubject(AgentChanged, identity), Source, b, agentChangedData(b, a, change))
	}
	for _, a := range ch.Added {
		send(a, ChangeAdded)
	}
	for _, a := range ch.Updated {
		send(a, ChangeUpdated)
	}
	for _, a := range ch.Removed {
		send(a, ChangeRemoved)
	}
}

func agentChangedData(b Basic, a *runner.Agent, change string) AgentChangedData {
	d := AgentChangedData{Basic: b, Agent: a.Name, Change: change}
	if change != ChangeRemoved {
		d.Active = a.Active
		if a.DDL != nil {
			d.AgentVersion = a.DDL.Metadata.Version
		}
	}
	return d
}

// workerTypes maps runner.WorkerEvent's kinds to event types.
var workerTypes = map[string]string{
	runner.WorkerStarted:  WorkerStarted,
	runner.WorkerRecycled: WorkerRecycled,
	runner.WorkerExited:   WorkerExited,
}

// WorkerChanged publishes a worker event. It does not block: pools call it
// as things happen to their workers.
func (e *Events) WorkerChanged(_ context.Context, identity string, ev runner.WorkerEvent) {
	t, ok := workerTypes[ev.Kind]
	if !ok {
		e.log.Error("a worker event of an unknown kind", "kind", ev.Kind, "agent", ev.Agent)
		return
	}
	b := newBasic(ProtocolPrefix+t, identity, e.cfg.Component, e.cfg.Now())
	e.enqueue(t, AgentHostSubject(t, identity), Source, b, workerData(b, ev))
}

func workerData(b Basic, ev runner.WorkerEvent) WorkerData {
	return WorkerData{
		Basic: b, Agent: ev.Agent, Worker: ev.Worker, PID: ev.PID, Reason: ev.Reason, Detail: ev.Detail,
		SDK: ev.SDK, Protocol: ev.Protocol, Concurrency: ev.Concurrency, Served: ev.Served, UptimeMS: ev.Uptime.Milliseconds(),
	}
}

// aliveLoop publishes an alive event after a random delay below one
// interval and then every interval, each with a fresh id and timestamp.
func (e *Events) aliveLoop(runCtx, ctx context.Context, identity string) {
	every := e.cfg.AliveInterval
	delay := time.NewTimer(rand.N(every))
	defer delay.Stop()
	var tick <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-runCtx.Done():
			return
		case <-delay.C:
			t := time.NewTicker(every)
			defer t.Stop()
			tick = t.C
		case <-tick:
		}
		b := newBasic(ChoriaProtocolPrefix+Alive, identity, e.cfg.Component, e.cfg.Now())
		e.enqueue(Alive, ChoriaSubject(Alive, e.cfg.Component), ChoriaSource, b, AliveData{Basic: b, Version: e.cfg.Version})
	}
}

// enqueue encodes an event and queues it without waiting.
func (e *Events) enqueue(kind, subject, source string, b Basic, data any) {
	j, err := encode(source, b, data, e.cfg.Legacy)
	if err != nil {
		e.failed.Add(1)
		e.log.Error("encoding a lifecycle event", "type", kind, "error", err)
		return
	}
	m := message{kind: kind, subject: subject, data: j}
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.closed:
		e.drop(kind, errors.New("lifecycle events are stopped"))
	case !e.started && len(e.early) < e.cfg.Queue-1:
		e.early = append(e.early, m)
	case !e.started:
		e.drop(kind, errors.New("the queue is full"))
	default:
		select {
		case e.queue <- m:
		default:
			e.drop(kind, errors.New("the queue is full"))
		}
	}
}

// drop counts a dropped event and logs the first and every hundredth.
func (e *Events) drop(kind string, why error) {
	n := e.dropped.Add(1)
	if n == 1 || n%100 == 0 {
		e.log.Warn("lifecycle event dropped", "type", kind, "reason", why, "dropped", n)
	}
}

func (e *Events) run() {
	defer close(e.done)
	for m := range e.queue {
		if err := e.pub.Publish(m.subject, m.data); err != nil {
			n := e.failed.Add(1)
			if n == 1 || n%100 == 0 {
				e.log.Warn("publishing a lifecycle event", "type", m.kind, "subject", m.subject, "error", err, "failed", n)
			}
			continue
		}
		e.published.Add(1)
	}
}
