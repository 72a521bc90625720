// Package loadreport is the result agent-host-load prints with --json:
// agent-host-load fills it in, agent-host-bench runs agent-host-load and
// decodes it. The JSON field names are the format; results saved by the
// bench rely on them.
package loadreport

// Counts are the requests of one kind and what became of them.
type Counts struct {
	Sent   int64 `json:"sent"`
	OK     int64 `json:"ok"`
	Failed int64 `json:"failed"`
	// Busy counts the failures that were the node saying it is busy.
	Busy    int64 `json:"busy"`
	NoReply int64 `json:"no_reply"`
}

// Answered counts the requests that got a reply.
func (c *Counts) Answered() int64 { return c.OK + c.Failed }

// Stats are one kind of request's counts and latency percentiles.
type Stats struct {
	Kind string `json:"kind"` // agent#action, or malformed
	Counts
	P50ms float64 `json:"p50_ms"`
	P90ms float64 `json:"p90_ms"`
	P95ms float64 `json:"p95_ms"`
	P99ms float64 `json:"p99_ms"`
	MaxMs float64 `json:"max_ms"`
}

// Result summarises a run.
type Result struct {
	Node        string  `json:"node"`
	Concurrency int     `json:"concurrency"`
	Seconds     float64 `json:"seconds"`
	Requests    int64   `json:"requests"`
	PerSecond   float64 `json:"per_second"`
	// ReplySeconds runs from the start to the last reply received: the
	// window of answered requests, without the wait for lost ones.
	ReplySeconds float64  `json:"reply_seconds"`
	Kinds        []*Stats `json:"kinds"`
	// NodeAlive, RSSWarmKiB and RSSEndKiB are set with --pid.
	NodeAlive  *bool `json:"node_alive,omitempty"`
	RSSWarmKiB int64 `json:"rss_warm_kib,omitempty"`
	RSSEndKiB  int64 `json:"rss_end_kib,omitempty"`
	// WorkersRSSWarmKiB and WorkersRSSEndKiB sum the resident memory of
	// the node's live descendants (its pool workers) at the same moments.
	WorkersRSSWarmKiB int64 `json:"workers_rss_warm_kib,omitempty"`
	WorkersRSSEndKiB  int64 `json:"workers_rss_end_kib,omitempty"`
	// ServerCPU and AgentsCPU are the CPU seconds the node's process and
	// its descendants (agents it ran and reaped, live pool workers) used
	// while requests were measured; Workers counts its live descendants
	// at the end. Set with --pid (Linux).
	ServerCPU *float64 `json:"server_cpu_s,omitempty"`
	AgentsCPU *float64 `json:"agents_cpu_s,omitempty"`
	Workers   int      `json:"workers,omitempty"`
	// DaemonStats is the node's rpcutil daemon_stats at the end.
	DaemonStats map[string]any `json:"daemon_stats,omitempty"`
	// Unexpected counts replies to no request waiting for one: to a
	// malformed message, or after a timeout. Only counted with --strays
	// (implied by --mix).
	Unexpected int64 `json:"unexpected_replies"`
}
