package host

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/agent-host/agent-host/host/config"
	"github.com/agent-host/agent-host/host/inventory"
	"github.com/agent-host/agent-host/protocol"
	wp "github.com/agent-host/agent-host/protocol/worker"
	"github.com/agent-host/agent-host/runner"
	"github.com/agent-host/agent-host/runner/grpcplugin"
	"github.com/agent-host/agent-host/runner/pool"
	"github.com/agent-host/agent-host/runner/spawn"
)

// agentRunners chooses how each external agent runs, spawned per request
// or in a pool of workers, and owns the pools: an agent's pool lives as
// long as the catalog publishes the same agent, and is drained and closed
// when the agent changes, goes, or the host stops.
type agentRunners struct {
	cfg     *config.Config
	spawner *spawn.Spawner
	inv     *inventory.Inventory
	log     *slog.Logger
	// capacityChanged is called when a pool may run more at once.
	capacityChanged func()
	// workerEvent hears of the pools' workers starting and exiting.
	workerEvent func(runner.WorkerEvent)

	mu      sync.Mutex
	pools   map[string]*pooledAgent // by agent name
	closing sync.WaitGroup          // pools being closed
	// retiring are the pools being closed, and gone what the closed ones
	// counted, by agent, so that the counts of an agent's pools never go
	// back when a pool is replaced.
	retiring map[*pooledAgent]bool
	gone     map[string]pool.Stats
}

func newAgentRunners(cfg *config.Config, sp *spawn.Spawner, inv *inventory.Inventory, log *slog.Logger, capacityChanged func(), workerEvent func(runner.WorkerEvent)) *agentRunners {
	return &agentRunners{cfg: cfg, spawner: sp, inv: inv, log: log, capacityChanged: capacityChanged, workerEvent: workerEvent, pools: map[string]*pooledAgent{},
		retiring: map[*pooledAgent]bool{}, gone: map[string]pool.Stats{}}
}

// runnerFor returns the runner for a, reusing its pool when a is the agent
// the pool was made for.
func (r *agentRunners) runnerFor(a *runner.Agent) (runner.Runner, func() int) {
	exec := r.spawner.Runner(a.Executable)
	cfg := r.cfg.ForAgent(a.Name)
	mode := Mode(r.cfg, a)
	if mode == ModeExec {
		return exec, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.pools[a.Name]
	if p == nil || p.agent != a {
		old := p
		pcfg := poolConfig(a, cfg, r.inv, r.capacityChanged)
		what := "a pool of workers"
		if mode == ModePlugin {
			pcfg.Transport = grpcplugin.New(grpcplugin.Config{})
			what = "a pool of go-plugin plugins"
		}
		p = &pooledAgent{agent: a, exec: exec, pool: pool.New(pcfg, pool.WithLogger(r.log.With("component", "pool")), pool.WithWorkerEvents(r.workerEvent))}
		if old != nil {
			old.next.Store(p)
			r.retireLocked(old, "the agent changed on disk", wp.ReasonReload)
		}
		r.pools[a.Name] = p
		r.log.Info("serving the agent with "+what, "agent", a.Name, "max_workers", cfg.PoolMaxWorkers, "min_workers", cfg.PoolMinWorkers)
	}
	return p, p.capacity
}

// The ways an agent runs.
const (
	ModeExec   = "exec"   // spawned per request, as Choria does
	ModePool   = "pool"   // on a pool of workers
	ModePlugin = "plugin" // on a pool of go-plugin plugins
)

// Mode says how agent a runs under cfg: as go-plugin plugins when the
// agent says it serves them, in a pool of workers when it says it speaks
// the worker protocol, unless the operator chose otherwise for every
// agent or for this one.
func Mode(cfg *config.Config, a *runner.Agent) string {
	switch m := cfg.ForAgent(a.Name).PoolMode; m {
	case ModeExec, ModePool, ModePlugin:
		return m
	default:
		switch {
		case slices.Contains(a.PluginVersions, protocol.PluginV1):
			return ModePlugin
		case slices.Contains(a.WorkerVersions, wp.V1):
			return ModePool
		}
		return ModeExec
	}
}

// retired closes the pools of the agents no longer in table.
func (r *agentRunners) retired(table *agentTable) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, p := range r.pools {
		if e := table.get(name); e == nil || e.run != runner.Runner(p) {
			r.retireLocked(p, "the agent is no longer served", wp.ReasonStop)
		}
	}
}

// retireLocked closes p in the background: the requests that picked it
// still finish on its workers.
func (r *agentRunners) retireLocked(p *pooledAgent, why, reason string) {
	if r.pools[p.agent.Name] == p {
		delete(r.pools, p.agent.Name)
	}
	r.log.Info("retiring the agent's pool of workers", "agent", p.agent.Name, "why", why)
	r.retiring[p] = true
	r.closing.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), r.cfg.ForAgent(p.agent.Name).PoolShutdownGrace+r.cfg.ShutdownGrace)
		defer cancel()
		_ = p.pool.CloseFor(ctx, reason)
		r.mu.Lock()
		defer r.mu.Unlock()
		delete(r.retiring, p)
		r.gone[p.agent.Name] = addPoolCounts(r.gone[p.agent.Name], p.pool.Stats())
	})
}

// poolStats are the counts of an agent's pools.
type poolStats struct {
	pool.Stats
	// Failed is set while the agent's pool has given up on its workers.
	Failed bool
}

// stats reports the pools' counts by agent: the workers of the pools
// serving or still closing, and what every pool of the agent counted
// since the host started.
func (r *agentRunners) stats() map[string]poolStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]poolStats, len(r.pools)+len(r.gone))
	for name, s := range r.gone {
		out[name] = poolStats{Stats: addPoolCounts(pool.Stats{}, s)}
	}
	add := func(p *pooledAgent, serving bool) {
		s := p.pool.Stats()
		got := out[p.agent.Name]
		got.Stats = addPoolCounts(got.Stats, s)
		got.Workers += s.Workers
		got.Busy += s.Busy
		got.Running += s.Running
		if serving && p.pool.Failed() != nil {
			got.Failed = true
		}
		out[p.agent.Name] = got
	}
	for _, p := range r.pools {
		add(p, true)
	}
	for p := range r.retiring {
		add(p, false)
	}
	return out
}

// addPoolCounts adds the counters of b to a: the workers started, failed
// and retired, not those running now.
func addPoolCounts(a, b pool.Stats) pool.Stats {
	a.Started += b.Started
	a.Failures += b.Failures
	retired := make(map[string]int, len(a.Retired)+len(b.Retired))
	for _, m := range []map[string]int{a.Retired, b.Retired} {
		for reason, n := range m {
			retired[reason] += n
		}
	}
	a.Retired = retired
	return a
}

// close closes every pool, once no request runs any more, and waits for
// their workers to be gone.
func (r *agentRunners) close() {
	r.mu.Lock()
	for _, p := range r.pools {
		r.retireLocked(p, "the host is stopping", wp.ReasonStop)
	}
	r.mu.Unlock()
	r.closing.Wait()
}

// pooledAgent runs an agent on its pool, and spawned per request once the
// pool gave up on the agent's workers.
type pooledAgent struct {
	agent *runner.Agent
	pool  *pool.Pool
	exec  runner.Runner
	// next is the pool that replaced this one, for the requests that
	// found this one closing.
	next atomic.Pointer[pooledAgent]
}

func (p *pooledAgent) Run(ctx context.Context, req *protocol.AgentRequest) (*protocol.AgentReply, error) {
	reply, err := p.pool.Run(ctx, req)
	switch {
	case errors.Is(err, pool.ErrFailed):
		return p.exec.Run(ctx, req)
	case errors.Is(err, pool.ErrInactive):
		return nil, &runner.Failure{Message: fmt.Sprintf("%s is not active on this node", p.agent.Name), Err: err}
	case errors.Is(err, pool.ErrClosed):
		if next := p.next.Load(); next != nil {
			return next.Run(ctx, req)
		}
		return p.exec.Run(ctx, req)
	}
	return reply, err
}

// capacity is what the pool runs at once; 0 once it gave up, as spawned
// agents have no bound of their own.
func (p *pooledAgent) capacity() int {
	if p.pool.Failed() != nil {
		return 0
	}
	return p.pool.Capacity()
}

// poolConfig is the pool an agent gets from its settings.
func poolConfig(a *runner.Agent, cfg *config.Config, inv *inventory.Inventory, capacityChanged func()) pool.Config {
	return pool.Config{
		OnCapacity:        capacityChanged,
		Agent:             a.Name,
		Executable:        a.Executable,
		HostName:          "agent-host/" + Version,
		PluginConfigDir:   cfg.PluginConfigDir(),
		Facts:             inv.Facts,
		MinWorkers:        cfg.PoolMinWorkers,
		MaxWorkers:        cfg.PoolMaxWorkers,
		Concurrency:       cfg.PoolConcurrency,
		MaxRequests:       cfg.PoolMaxRequests,
		MaxRequestsJitter: cfg.PoolMaxRequestsJitter,
		MaxLifetime:       cfg.PoolMaxLifetime,
		MaxRSS:            int64(cfg.PoolMaxRSS),
		IdleTimeout:       cfg.PoolIdleTimeout,
		HandshakeTimeout:  cfg.PoolHandshakeTimeout,
		CancelGrace:       cfg.PoolCancelGrace,
		ShutdownGrace:     cfg.PoolShutdownGrace,
		RestartBackoff:    cfg.PoolRestartBackoff,
		RestartBackoffMax: cfg.PoolRestartBackoffMax,
		RestartIntensity:  cfg.PoolRestartIntensity,
		RestartPeriod:     cfg.PoolRestartPeriod,
		MaxDocumentBytes:  cfg.PoolMaxDocumentBytes,
		PingInterval:      cfg.PoolPingInterval,
		PingTimeout:       cfg.PoolPingTimeout,
		MaxReplyBytes:     int64(cfg.ReplyMaxBytes),
		LeaveLeftovers:    !cfg.StopLeftovers,
	}
}

// Interface guards
var _ runner.Runner = (*pooledAgent)(nil)
