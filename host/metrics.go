package host

import (
	"runtime/debug"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/agent-host/agent-host/protocol"
)

// metrics are what the host tells Prometheus. Choria's counters and the
// other counts the host keeps anyway are read at scrape time
// (hostCollector); only what needs labels or buckets is recorded on the
// request path. Each host has its own registry, so that several hosts in
// one process do not share metrics.
type metrics struct {
	reg *prometheus.Registry

	requests  *prometheus.CounterVec   // agent, action, statuscode
	duration  *prometheus.HistogramVec // agent, action
	queueWait *prometheus.HistogramVec // agent
	denied    *prometheus.CounterVec   // agent, action
	failures  *prometheus.CounterVec   // agent, cause
}

// unknownAction is the action label of a request for an action its
// agent's DDL does not declare: the name comes from the network, and
// every new one would be a new series. DDL action names cannot hold
// parentheses, so it stands for no real action.
const unknownAction = "(unknown)"

// The causes of agent failures, the cause label of agent_host_agent_failures_total.
const (
	causeTimeout       = "timeout"         // killed at the DDL timeout
	causeExit          = "exit"            // exited unsuccessfully or was killed by a signal
	causeReplyTooLarge = "reply_too_large" // wrote more than plugin.agent_host.reply_max_bytes
	causeReplyFormat   = "reply_format"    // a reply whose data is not an object
	causeReplyDefaults = "reply_defaults"  // a reply the DDL's output defaults do not fit
	causeNoExecutable  = "no_executable"   // the executable is gone
	causeShutdown      = "shutdown"        // killed because the node is shutting down
	causeWorkerDied    = "worker_died"     // the pooled worker running it died
	causeOther         = "other"           // anything else: files that could not be written, say
)

// latencyBuckets reach from a pooled worker's sub-millisecond answer to
// agents that run for minutes.
var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}

func newMetrics(h *Host) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agent_host_requests_total",
			Help: "SimpleRPC requests answered, by agent, action and the statuscode of the reply",
		}, []string{"agent", "action", "statuscode"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "agent_host_request_duration_seconds",
			Help:    "How long requests took from leaving the queue to their reply: authorization, validation and the agent's run",
			Buckets: latencyBuckets,
		}, []string{"agent", "action"}),
		queueWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "agent_host_queue_wait_seconds",
			Help:    "How long requests waited for a free slot",
			Buckets: latencyBuckets,
		}, []string{"agent"}),
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agent_host_authorization_denials_total",
			Help: "Requests the authorizer denied, by agent and action",
		}, []string{"agent", "action"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agent_host_agent_failures_total",
			Help: "Requests whose agent failed, by agent and cause: timeout, exit, reply_too_large, reply_format, reply_defaults, no_executable, shutdown or other",
		}, []string{"agent", "cause"}),
	}
	// Every metric of the host carries its identity, as Choria's do; the
	// process's are the process's.
	own := prometheus.WrapRegistererWith(prometheus.Labels{"identity": h.cfg.Identity}, m.reg)
	own.MustRegister(&hostCollector{h: h}, m.requests, m.duration, m.queueWait, m.denied, m.failures)
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// answered counts a SimpleRPC reply to r.
func (m *metrics) answered(r *request, code protocol.StatusCode) {
	m.requests.WithLabelValues(r.agent.name, actionLabel(r), strconv.Itoa(int(code))).Inc()
}

// actionLabel is r's action when its agent declares it.
func actionLabel(r *request) string {
	if r.rpc == nil || r.agent.ddl.Action(r.rpc.Action) == nil {
		return unknownAction
	}
	return r.rpc.Action
}

// hostCollector reads the host's counters when Prometheus scrapes.
type hostCollector struct{ h *Host }

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

// Choria's names, labels and help texts (go-choria server/stats.go and
// statistics/stats.go), so that dashboards made for Choria work.
var (
	choriaTotal       = desc("choria_server_total", "Total number of messages received from the network")
	choriaValidated   = desc("choria_server_validated", "Number of messages that were received and validated successfully")
	choriaUnvalidated = desc("choria_server_unvalidated", "Number of messages that were received but did not pass validation")
	choriaPassed      = desc("choria_server_passed", "Number of messages where this instance matched the filter expression")
	choriaFiltered    = desc("choria_server_filtered", "Number of messages where this instance did not match the filter expression")
	choriaReplies     = desc("choria_server_replies", "Number of reply messages that were produced")
	choriaTTLExpired  = desc("choria_server_ttlexpired", "Number of messages received that were too old and dropped")
	choriaEvents      = desc("choria_server_events", "Number of lifecycle events that were published by this instance")
	choriaBuildInfo   = desc("choria_build_info", "Build information about the running server", "version", "sha")
)

// What Choria does not count.
var (
	replyFailures   = desc("agent_host_reply_failures_total", "Replies that could not be encoded or published")
	unknownAgents   = desc("agent_host_unknown_agent_total", "Requests for an agent this node does not serve, discarded")
	filterRefusals  = desc("agent_host_filter_refused_total", "Requests whose filter was beyond the limits any Choria client stays within; counted as filtered too")
	tooDeep         = desc("agent_host_too_deep_total", "Messages nested beyond the protocol's limits; counted as unvalidated too")
	busy            = desc("agent_host_busy_total", "Requests refused at once because the agent queue was full")
	expiredWaiting  = desc("agent_host_expired_waiting_total", "Requests whose TTL ran out while they waited for a slot")
	refused         = desc("agent_host_refused_total", "Requests answered that they were not run: busy, expired while waiting, or the node shutting down")
	dropped         = desc("agent_host_dropped_total", "Messages discarded unread because the host could not keep up, by the intake (plugin.agent_host.pending_limit, pending_bytes) or by the NATS client", "by")
	waiting         = desc("agent_host_requests_waiting", "Requests waiting for a slot now")
	running         = desc("agent_host_requests_running", "Requests holding a slot now")
	agentsServed    = desc("agent_host_agents", "Agents this node serves, rpcutil and discovery included")
	poolWorkers     = desc("agent_host_pool_workers", "Workers running in the agent's pools", "agent")
	poolBusy        = desc("agent_host_pool_busy_workers", "Workers of the agent's pools with requests in flight", "agent")
	poolStarts      = desc("agent_host_pool_worker_starts_total", "Workers started for the agent", "agent")
	poolFailures    = desc("agent_host_pool_worker_failures_total", "Workers of the agent that failed to start or ended unexpectedly, and were restarted unless the pool gave up", "agent")
	poolRetirements = desc("agent_host_pool_worker_retirements_total", "Workers of the agent shut down as told, by reason: recycle (max_requests, max_lifetime, max_rss), idle, reload, stop or failed", "agent", "reason")
	poolFailed      = desc("agent_host_pool_failed", "1 while the agent's pool has given up on its workers and the agent is spawned per request", "agent")
)

func (c *hostCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		choriaTotal, choriaValidated, choriaUnvalidated, choriaPassed, choriaFiltered, choriaReplies, choriaTTLExpired, choriaEvents, choriaBuildInfo,
		replyFailures, unknownAgents, filterRefusals, tooDeep, busy, expiredWaiting, refused, dropped, waiting, running, agentsServed,
		poolWorkers, poolBusy, poolStarts, poolFailures, poolRetirements, poolFailed,
	} {
		ch <- d
	}
}

func (c *hostCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.h.Stats()
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v int, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	counter(choriaTotal, s.Total)
	counter(choriaValidated, s.Validated)
	counter(choriaUnvalidated, s.Unvalidated)
	counter(choriaPassed, s.Passed)
	counter(choriaFiltered, s.Filtered)
	counter(choriaReplies, s.Replies)
	counter(choriaTTLExpired, s.TTLExpired)
	counter(choriaEvents, s.Events)
	counter(choriaBuildInfo, 1, Version, buildSHA)

	counter(replyFailures, s.ReplyFailed)
	counter(unknownAgents, s.UnknownAgent)
	counter(filterRefusals, s.FilterRefused)
	counter(tooDeep, s.TooDeep)
	counter(busy, s.Busy)
	counter(expiredWaiting, s.ExpiredWaiting)
	counter(refused, s.Refused)
	counter(dropped, s.IntakeDropped, "intake")
	counter(dropped, s.Dropped-s.IntakeDropped, "nats")
	gauge(waiting, s.Waiting)
	gauge(running, s.Running)
	if t := c.h.agents.Load(); t != nil {
		gauge(agentsServed, len(t.names))
	}

	for agent, p := range c.h.runners.stats() {
		gauge(poolWorkers, p.Workers, agent)
		gauge(poolBusy, p.Busy, agent)
		counter(poolStarts, int64(p.Started), agent)
		counter(poolFailures, int64(p.Failures), agent)
		for reason, n := range p.Retired {
			counter(poolRetirements, int64(n), agent, reason)
		}
		failed := 0
		if p.Failed {
			failed = 1
		}
		gauge(poolFailed, failed, agent)
	}
}

// buildSHA is the commit the binary was built from, when Go recorded it.
var buildSHA = func() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	// Choria's own default.
	return "unknown"
}()

// Interface guards
var _ prometheus.Collector = (*hostCollector)(nil)
