// Package pool runs an agent as a supervised pool of long-running workers
// that speak agent-host's worker protocol (protocol/worker; PROTOCOL.md at
// the root of the repository describes it). A pool starts workers as
// requests need them, between MinWorkers and MaxWorkers, each running as
// many requests at once as it announced; it replaces workers after a
// number of requests, a lifetime or a memory size, shrinks when idle,
// restarts crashed workers with backoff, and gives up on an agent whose
// workers keep failing (Run then returns ErrFailed, and the caller serves
// the agent otherwise).
//
// Every worker is a runner/proc process: a session of its own, stopped as
// a whole, its stderr logged, and dead with the host.
//
// Config.Transport reaches workers some other way than the worker
// protocol's streams (runner/grpcplugin: go-plugin plugins); the pool
// supervises them the same way.
package pool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agent-host/agent-host/protocol"
	wp "github.com/agent-host/agent-host/protocol/worker"
	"github.com/agent-host/agent-host/runner"
)

// Defaults for the zero values of Config.
const (
	DefaultMaxWorkers        = 4
	DefaultIdleTimeout       = 5 * time.Minute
	DefaultHandshakeTimeout  = 10 * time.Second
	DefaultCancelGrace       = time.Second
	DefaultShutdownGrace     = 5 * time.Second
	DefaultRestartBackoff    = 500 * time.Millisecond
	DefaultRestartBackoffMax = 30 * time.Second
	DefaultRestartIntensity  = 5
	DefaultRestartPeriod     = time.Minute
	DefaultMaxDocumentBytes  = 4 << 20
	DefaultMaxReplyBytes     = 1 << 20
	DefaultPingInterval      = 30 * time.Second
	DefaultPingTimeout       = 5 * time.Second
)

// Config says which agent a pool runs and how. Only Agent and Executable
// are required; every other field has a default.
type Config struct {
	// Agent is the agent's name.
	Agent string
	// Executable is the agent's executable, started with no arguments.
	Executable string
	// Transport, when set, starts the workers instead of the worker
	// protocol's streams: go-plugin plugins (runner/grpcplugin), say.
	Transport Transport
	// OnCapacity, when set, is called when Capacity grows: a worker
	// announced that it runs more requests at once than the pool assumed.
	// It is called without the pool's lock held.
	OnCapacity func()
	// HostName names the host and its version in the handshake, for the
	// worker's log. Empty means "agent-host".
	HostName string
	// PluginConfigDir is where the agent's configuration lives: workers get
	// CHORIA_EXTERNAL_CONFIG=<PluginConfigDir>/<agent>, as in exec mode.
	PluginConfigDir string
	// Path is the PATH workers get. Empty means this process's.
	Path string
	// TempDir is the workers' working directory. Empty means os.TempDir().
	TempDir string
	// Facts returns the node's facts, sent with every request. Nil means {}.
	Facts func() []byte

	// MinWorkers are kept running, idle or not; with none, the first
	// worker starts at the first request.
	MinWorkers int
	// MaxWorkers bounds the workers. Zero means DefaultMaxWorkers.
	MaxWorkers int
	// Concurrency caps the requests one worker runs at once, below what it
	// announces. Zero means what it announces.
	Concurrency int
	// MaxRequests recycles a worker after that many requests, plus a
	// random jitter of up to MaxRequestsJitter. Zero means never.
	MaxRequests, MaxRequestsJitter int
	// MaxLifetime recycles a worker after that long, plus a random jitter
	// of up to a tenth of it. Zero means never.
	MaxLifetime time.Duration
	// MaxRSS recycles a worker whose resident memory grows beyond it, in
	// bytes. Zero means no limit.
	MaxRSS int64
	// IdleTimeout stops a worker idle that long while more than
	// MinWorkers run. Zero means DefaultIdleTimeout.
	IdleTimeout time.Duration
	// HandshakeTimeout bounds a worker's start-up. Zero means
	// DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// CancelGrace is how long a worker has to answer a cancelled request
	// before it is stopped. Zero means DefaultCancelGrace.
	CancelGrace time.Duration
	// ShutdownGrace is how long a worker asked to shut down has to finish
	// before its process group is stopped. Zero means DefaultShutdownGrace.
	ShutdownGrace time.Duration
	// RestartBackoff is the first wait before a worker that failed is
	// replaced; it doubles with each failure up to RestartBackoffMax.
	// Zeros mean the defaults.
	RestartBackoff, RestartBackoffMax time.Duration
	// RestartIntensity failures within RestartPeriod mark the pool
	// failed. Zeros mean the defaults.
	RestartIntensity int
	RestartPeriod    time.Duration
	// MaxDocumentBytes bounds each protocol document. Zero means
	// DefaultMaxDocumentBytes.
	MaxDocumentBytes int
	// MaxReplyBytes bounds an action's reply, as in exec mode. Zero means
	// DefaultMaxReplyBytes.
	MaxReplyBytes int64
	// PingInterval is how often an idle worker is asked for a pong, and
	// PingTimeout how long it has. Zeros mean the defaults.
	PingInterval, PingTimeout time.Duration
	// MaxLineBytes, MaxLogBytes and KillGrace are the workers' proc
	// settings (see proc.Spec); zeros mean proc's defaults.
	MaxLineBytes int
	MaxLogBytes  int64
	KillGrace    time.Duration
	// LeaveLeftovers leaves running what a worker started when it exits
	// (proc.Spec.LeaveLeftovers).
	LeaveLeftovers bool
}

func (c *Config) setDefaults() {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defD := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	c.MinWorkers = max(c.MinWorkers, 0)
	def(&c.MaxWorkers, DefaultMaxWorkers)
	c.MaxWorkers = max(c.MaxWorkers, 1, c.MinWorkers)
	def(&c.RestartIntensity, DefaultRestartIntensity)
	def(&c.MaxDocumentBytes, DefaultMaxDocumentBytes)
	if c.MaxReplyBytes <= 0 {
		c.MaxReplyBytes = DefaultMaxReplyBytes
	}
	defD(&c.IdleTimeout, DefaultIdleTimeout)
	defD(&c.HandshakeTimeout, DefaultHandshakeTimeout)
	defD(&c.CancelGrace, DefaultCancelGrace)
	defD(&c.ShutdownGrace, DefaultShutdownGrace)
	defD(&c.RestartBackoff, DefaultRestartBackoff)
	defD(&c.RestartBackoffMax, DefaultRestartBackoffMax)
	defD(&c.RestartPeriod, DefaultRestartPeriod)
	defD(&c.PingInterval, DefaultPingInterval)
	defD(&c.PingTimeout, DefaultPingTimeout)
	if c.Path == "" {
		c.Path = os.Getenv("PATH")
	}
	if c.HostName == "" {
		c.HostName = "agent-host"
	}
	if c.TempDir == "" {
		c.TempDir = os.TempDir()
	}
	// Workers run in TempDir, where a relative path means something else.
	if abs, err := filepath.Abs(c.Executable); err == nil {
		c.Executable = abs
	}
	// As in exec mode: a relative or empty directory would name the
	// agent's configuration inside the shared TempDir.
	if c.PluginConfigDir == "" {
		c.PluginConfigDir = runner.DefaultPluginConfigDir
	}
	if abs, err := filepath.Abs(c.PluginConfigDir); err == nil {
		c.PluginConfigDir = abs
	}
	if c.Facts == nil {
		c.Facts = func() []byte { return []byte("{}") }
	}
}

// Option changes a Pool.
type Option func(*Pool)

// WithLogger sets the logger for the pool's events and its workers'
// output; the default discards.
func WithLogger(l *slog.Logger) Option {
	return func(p *Pool) {
		if l != nil {
			p.log = l
		}
	}
}

// WithWorkerEvents sets the hook told of each worker started, recycled
// and exited. It is called with the pool's lock held: it must not block
// or call the pool.
func WithWorkerEvents(f func(runner.WorkerEvent)) Option {
	return func(p *Pool) { p.events = f }
}

// Sentinel errors.
var (
	// ErrFailed means the pool gave up on the agent: its workers kept
	// failing, refused every protocol version, or declined activation.
	ErrFailed = errors.New("pool: the agent's workers keep failing")
	// ErrInactive means the agent's worker declined activation in its
	// handshake: the agent is not to be served on this node.
	ErrInactive = errors.New("pool: the agent does not activate")
	// ErrClosed means the pool is closing and none of its workers could
	// take the request; the caller runs it elsewhere.
	ErrClosed = errors.New("pool: closed")
)

// Pool runs one agent's requests on workers. Create it with New; Run is
// safe for concurrent use; Close it when the agent goes.
type Pool struct {
	cfg    Config
	log    *slog.Logger
	events func(runner.WorkerEvent)

	ctx    context.Context // ends the workers when cancelled
	cancel context.CancelFunc
	wg     sync.WaitGroup // the pool's goroutines

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced whenever a worker's state changes
	workers  []*worker
	starting int
	nextID   int
	closing  bool
	failed   error
	failures []time.Time // within RestartPeriod
	backoff  time.Duration
	startAt  time.Time // no worker starts before it after a failure
	waiting  int       // requests waiting for a worker

	started, failuresTotal int // for Stats
	retired                map[string]int

	// perWorker is how many requests a worker runs at once, as the last
	// handshake settled it; 1 until then.
	perWorker atomic.Int64
}

// New returns a pool for cfg and starts its supervisor, which keeps
// MinWorkers running.
func New(cfg Config, opts ...Option) *Pool {
	cfg.setDefaults()
	p := &Pool{cfg: cfg, log: slog.New(slog.DiscardHandler), changed: make(chan struct{}), backoff: cfg.RestartBackoff}
	p.perWorker.Store(1)
	for _, o := range opts {
		o(p)
	}
	p.log = p.log.With("agent", cfg.Agent)
	if p.events == nil {
		p.events = func(runner.WorkerEvent) {}
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.wg.Go(p.supervise)
	return p
}

// waitLocked waits for a change, with p.mu held on entry and return; it
// reports false when ctx ended first.
func (p *Pool) waitLocked(ctx context.Context) bool {
	changed := p.changed
	p.mu.Unlock()
	defer p.mu.Lock()
	select {
	case <-changed:
		return true
	case <-ctx.Done():
		return false
	}
}

// notifyLocked wakes everyone waiting for a change; p.mu is held.
func (p *Pool) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// Capacity is how many requests the pool runs at once when it has all its
// workers.
func (p *Pool) Capacity() int {
	return p.cfg.MaxWorkers * int(p.perWorker.Load())
}

// Failed reports the reason the pool gave up, or nil while it serves.
func (p *Pool) Failed() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failed
}

// Run sends the request to a worker and returns its reply. The context's
// deadline is the request's: when it passes the worker is told to cancel,
// and stopped if it does not answer within CancelGrace; the error then
// matches runner.ErrTimeout. A worker that dies fails the requests it was
// running with an error that says so and carries its last stderr lines.
func (p *Pool) Run(ctx context.Context, req *protocol.AgentRequest) (*protocol.AgentReply, error) {
	for attempt := 0; ; attempt++ {
		w, id, ch, err := p.acquire(ctx)
		if err != nil {
			return nil, err
		}
		reply, err := w.call(ctx, id, ch, req, p.cfg.Facts())
		p.release(w)
		// A worker that died before it was sent the request did not run
		// it: another may.
		if errors.Is(err, errNotSent) && attempt < maxAttempts {
			continue
		}
		return reply, err
	}
}

// maxAttempts bounds how often a request moves on to another worker
// because the one it was given died before it was sent.
const maxAttempts = 3

// acquire finds a ready worker with room for one more request, starting
// one when none has room and the pool may grow.
func (p *Pool) acquire(ctx context.Context) (*worker, string, chan result, error) {
	p.mu.Lock()
	p.waiting++
	defer func() {
		p.waiting--
		p.mu.Unlock()
	}()
	for {
		if p.failed != nil {
			return nil, "", nil, p.failed
		}
		var best *worker
		for _, w := range p.workers {
			if w.state == ready && len(w.calls) < w.capacity && (best == nil || len(w.calls) < len(best.calls)) {
				best = w
			}
		}
		if best != nil {
			id, ch := best.reserve()
			return best, id, ch, nil
		}
		if p.closing {
			// No worker will be started for it.
			return nil, "", nil, ErrClosed
		}
		p.growLocked()
		if !p.waitLocked(ctx) {
			return nil, "", nil, waitFailure(ctx.Err())
		}
	}
}

// waitFailure is the error for a request whose deadline passed before any
// worker could take it.
func waitFailure(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("no worker was free before the deadline: %w", runner.ErrTimeout)
	}
	return err
}

// growLocked starts a worker if requests wait or fewer than MinWorkers
// run, none is starting and the pool may grow.
func (p *Pool) growLocked() {
	if p.closing || p.failed != nil || p.starting > 0 || p.aliveLocked() >= p.cfg.MaxWorkers {
		return
	}
	if p.waiting == 0 && p.aliveLocked() >= p.cfg.MinWorkers {
		return
	}
	if wait := time.Until(p.startAt); wait > 0 {
		p.starting++
		p.wg.Go(func() {
			select {
			case <-time.After(wait):
			case <-p.ctx.Done():
			}
			p.mu.Lock()
			p.starting--
			p.growLocked()
			p.notifyLocked()
			p.mu.Unlock()
		})
		return
	}
	p.starting++
	id := p.nextID
	p.nextID++
	p.wg.Go(func() { p.start(id) })
}

// aliveLocked counts the workers that take or will take requests.
func (p *Pool) aliveLocked() int {
	n := 0
	for _, w := range p.workers {
		if w.state == ready {
			n++
		}
	}
	return n
}

func (p *Pool) inFlightLocked() int {
	n := 0
	for _, w := range p.workers {
		n += len(w.calls)
	}
	return n
}

// release is told a request is over, to recycle the worker when due.
func (p *Pool) release(w *worker) {
	p.mu.Lock()
	defer p.mu.Unlock()
	w.served++
	w.lastUsed = time.Now()
	if why := w.recycleDue(); w.state == ready && why != "" {
		p.recycleLocked(w, why)
	}
	if w.state == draining && len(w.calls) == 0 {
		w.shutdown()
	}
	p.notifyLocked()
}

// recycleLocked retires w to be replaced by a fresh worker, for the
// reason why (a runner.Recycle* constant).
func (p *Pool) recycleLocked(w *worker, why string) {
	if w.state != ready {
		return
	}
	p.events(w.event(runner.WorkerRecycled, why, ""))
	p.retireLocked(w, wp.ReasonRecycle)
}

// retireLocked stops giving w requests; it shuts down once they are done.
func (p *Pool) retireLocked(w *worker, reason string) {
	if w.state != ready {
		return
	}
	w.state = draining
	w.retireReason = reason
	p.log.Info("retiring a worker", "pid", w.proc.Pid(), "reason", reason, "served", w.served)
	if len(w.calls) == 0 {
		w.shutdown()
	}
	p.growLocked()
}

// supervise keeps MinWorkers running and looks after idle workers: it
// stops those idle too long, those grown too large or too old, and those
// that no longer answer a ping.
func (p *Pool) supervise() {
	t := time.NewTicker(p.tick())
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
		}
		p.mu.Lock()
		now := time.Now()
		alive := p.aliveLocked()
		for _, w := range slices.Clone(p.workers) {
			if w.state != ready {
				continue
			}
			why := w.recycleDue()
			switch {
			case why != "":
				p.recycleLocked(w, why)
			case p.cfg.MaxRSS > 0 && rss(w.proc.Pid()) > p.cfg.MaxRSS:
				p.log.Info("a worker grew beyond max_rss", "pid", w.proc.Pid(), "max_rss", p.cfg.MaxRSS)
				p.recycleLocked(w, runner.RecycleRSS)
			case len(w.calls) == 0 && alive > p.cfg.MinWorkers && now.Sub(w.lastUsed) >= p.cfg.IdleTimeout:
				alive--
				p.retireLocked(w, wp.ReasonIdle)
			case len(w.calls) == 0 && now.Sub(w.lastPing) >= p.cfg.PingInterval:
				w.lastPing = now
				p.wg.Go(w.ping)
			}
		}
		p.growLocked()
		p.mu.Unlock()
	}
}

// tick is how often supervise looks: every second, or more often for
// shorter settings.
func (p *Pool) tick() time.Duration {
	d := min(time.Second, p.cfg.IdleTimeout/4, p.cfg.PingInterval/2)
	if p.cfg.MaxLifetime > 0 {
		d = min(d, p.cfg.MaxLifetime/4)
	}
	return max(d, 10*time.Millisecond)
}

// Stats are a pool's counts.
type Stats struct {
	// Workers are running, Busy of them with requests in flight.
	Workers, Busy int
	// Running are the requests in flight.
	Running int
	// Started counts the workers started, Failures those that failed.
	Started, Failures int
	// Retired counts the workers that were shut down and exited as told,
	// by the reason they were given (wp.ReasonRecycle, ReasonIdle, ...).
	Retired map[string]int
}

// Stats reports the pool's counts now.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := Stats{Started: p.started, Failures: p.failuresTotal, Retired: maps.Clone(p.retired)}
	for _, w := range p.workers {
		s.Workers++
		if len(w.calls) > 0 {
			s.Busy++
		}
		s.Running += len(w.calls)
	}
	return s
}

// failedLocked records a worker's failure and reports whether the pool
// must give up: RestartIntensity failures within RestartPeriod.
func (p *Pool) failedLocked(why string) {
	now := time.Now()
	p.failuresTotal++
	p.failures = slices.DeleteFunc(p.failures, func(t time.Time) bool { return now.Sub(t) > p.cfg.RestartPeriod })
	if len(p.failures) == 0 {
		// The last failure is a period ago: this one starts afresh.
		p.backoff = p.cfg.RestartBackoff
	}
	p.failures = append(p.failures, now)
	p.startAt = now.Add(p.backoff)
	p.backoff = min(2*p.backoff, p.cfg.RestartBackoffMax)
	if len(p.failures) >= p.cfg.RestartIntensity && p.failed == nil {
		p.giveUpLocked(fmt.Errorf("%w: %d failures within %s, the last: %s", ErrFailed, len(p.failures), p.cfg.RestartPeriod, why))
	}
}

// giveUpLocked marks the pool failed and stops its workers.
func (p *Pool) giveUpLocked(err error) {
	p.failed = err
	p.log.Error("giving up on the agent's workers", "error", err)
	for _, w := range p.workers {
		if w.state == ready {
			w.state = draining
			w.retireReason = wp.ReasonFailed
		}
		if w.state == draining && len(w.calls) == 0 {
			w.shutdown()
		}
	}
	p.notifyLocked()
}

// healthyLocked resets the backoff after a worker served well.
func (p *Pool) healthyLocked() {
	p.backoff = p.cfg.RestartBackoff
}

// Close stops taking requests once those running are done (within ctx),
// shuts every worker down and waits for the pool's goroutines. Requests
// that arrive meanwhile are still served: a hot reload closes the old pool
// while requests that picked it still run.
func (p *Pool) Close(ctx context.Context) error {
	return p.CloseFor(ctx, wp.ReasonStop)
}

// CloseFor is Close, telling the workers why they shut down: one of the
// protocol's reasons, such as wp.ReasonReload for an agent that changed.
func (p *Pool) CloseFor(ctx context.Context, reason string) error {
	p.mu.Lock()
	p.closing = true
	for p.inFlightLocked() > 0 {
		if !p.waitLocked(ctx) {
			p.log.Warn("closing the pool with requests still running", "running", p.inFlightLocked())
			break
		}
	}
	for _, w := range p.workers {
		if w.state == ready || w.state == draining {
			w.state = draining
			if w.retireReason == "" {
				w.retireReason = reason
			}
			w.shutdown()
		}
	}
	p.notifyLocked()
	workers := slices.Clone(p.workers)
	p.mu.Unlock()
	for _, w := range workers {
		w.proc.Wait()
	}
	p.cancel()
	p.wg.Wait()
	return nil
}

// rss reads a process's resident set size in bytes; 0 when it cannot.
func rss(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/statm", pid))
	if err != nil {
		return 0
	}
	var size, resident int64
	if _, err := fmt.Sscan(string(b), &size, &resident); err != nil {
		return 0
	}
	return resident * int64(os.Getpagesize())
}

// jitter returns a random duration up to d.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}

// tailText joins a worker's last stderr lines for a reply.
func tailText(lines []string) string {
	if len(lines) == 0 {
		return "nothing"
	}
	return strings.Join(lines, " | ")
}

// Interface guards
var _ runner.Runner = (*Pool)(nil)
