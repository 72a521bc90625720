package runner

import "time"

// The kinds of WorkerEvent.
const (
	WorkerStarted  = "started"
	WorkerRecycled = "recycled"
	WorkerExited   = "exited"
)

// Why a worker exited, in WorkerEvent.Reason, when the host did not
// retire it; a retired worker's reason is the one its shutdown document
// gave (protocol/worker's ReasonRecycle, ReasonIdle, ReasonStop,
// ReasonReload, ReasonFailed).
const (
	ExitCrashed     = "crashed"      // it exited on its own
	ExitKilled      = "killed"       // the host killed it: Detail says why
	ExitStartFailed = "start_failed" // it never became ready: Detail says why
)

// Why a worker was recycled, in WorkerEvent.Reason.
const (
	RecycleRequests = "max_requests" // it served its requests
	RecycleLifetime = "max_lifetime" // it lived its life
	RecycleRSS      = "max_rss"      // it grew too large
)

// WorkerEvent reports a long-lived worker of an agent starting, being
// recycled or exiting, for lifecycle events and metrics. Producers call
// the hook they are given synchronously, so it must not block.
type WorkerEvent struct {
	// Kind is WorkerStarted, WorkerRecycled or WorkerExited.
	Kind string
	// Agent is the agent the worker serves.
	Agent string
	// Worker numbers the agent's workers from 0, PID is the process's
	// (0 when it did not start).
	Worker, PID int
	// Reason is an Exit* or Recycle* constant; empty when started.
	Reason string
	// Detail says more: how the process ended, why it was killed.
	Detail string
	// SDK and Protocol are what the worker announced; Concurrency is how
	// many requests it runs at once.
	SDK                   string
	Protocol, Concurrency int
	// Served counts the requests it answered; Uptime is how long it ran.
	Served int
	Uptime time.Duration
}
