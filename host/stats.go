package host

import (
	"sync/atomic"

	"github.com/agent-host/agent-host/host/builtin"
)

// counters are the live request counters.
type counters struct {
	// Choria's, in the order a request meets them.
	total, unvalidated, filtered, passed, ttlExpired, validated atomic.Int64
	replies, replyFailed                                        atomic.Int64

	unknownAgent, filterRefused, tooDeep, busy, refusedReplies atomic.Int64
	expiredWaiting                                             atomic.Int64
	pendingDropped                                             atomic.Int64
	// natsDroppedGone keeps what NATS dropped on subscriptions since removed.
	natsDroppedGone atomic.Int64
	// events are the lifecycle events published; lastMessage is when, in
	// Unix seconds, the last request was validated, 0 before any.
	events, lastMessage atomic.Int64
}

// Stats is a snapshot of what happened to requests: Choria's counters, as
// rpcutil daemon_stats reports them, plus the refusals Choria does not
// count.
type Stats struct {
	// Total is every message received.
	Total int64
	// Unvalidated did not decode or failed security verification.
	Unvalidated int64
	// Filtered did not match this node; Passed did.
	Filtered, Passed int64
	// TTLExpired passed the filter but were too old or from the future.
	TTLExpired int64
	// Validated passed every check before the agent: Choria counts them
	// after the TTL check.
	Validated int64
	// Replies were published; ReplyFailed could not be.
	Replies, ReplyFailed int64
	// UnknownAgent were addressed to an agent this node does not serve.
	UnknownAgent int64
	// FilterRefused carried a filter beyond filter.Check's limits, or one
	// whose matching went beyond the budgets filter.Match keeps; they
	// are counted as Filtered too, as Choria counts a filter it cannot
	// evaluate.
	FilterRefused int64
	// TooDeep were documents nested beyond protocol's limits; they are
	// counted as Unvalidated too.
	TooDeep int64
	// Busy were refused, with a reply saying so, because the agent queue
	// was full; ExpiredWaiting because their TTL ran out while they
	// waited in it (counted as Validated too, having passed every check).
	Busy, ExpiredWaiting int64
	// Refused got a reply saying why they were not run: busy, expired
	// while waiting, or the node shutting down.
	Refused int64
	// Waiting is how many requests wait for a slot now, Running how many
	// hold one.
	Waiting, Running int
	// Dropped were discarded unread because the host could not keep up:
	// by the intake (plugin.agent_host.pending_limit, pending_bytes),
	// counted in IntakeDropped too, or by the NATS client. Each episode is
	// also logged.
	Dropped, IntakeDropped int64
	// Events are the lifecycle events published, as Choria counts them.
	Events int64
}

// Stats returns the current counters.
func (h *Host) Stats() Stats {
	c := &h.counters
	return Stats{
		Total: c.total.Load(), Unvalidated: c.unvalidated.Load(),
		Filtered: c.filtered.Load(), Passed: c.passed.Load(), TTLExpired: c.ttlExpired.Load(), Validated: c.validated.Load(),
		Replies: c.replies.Load(), ReplyFailed: c.replyFailed.Load(),
		UnknownAgent: c.unknownAgent.Load(), FilterRefused: c.filterRefused.Load(), TooDeep: c.tooDeep.Load(),
		Busy: c.busy.Load(), ExpiredWaiting: c.expiredWaiting.Load(), Refused: c.refusedReplies.Load(),
		Waiting: h.queue.waiting(), Running: h.queue.running(),
		Dropped: c.pendingDropped.Load() + h.natsDropped(), IntakeDropped: c.pendingDropped.Load(),
		Events: c.events.Load(),
	}
}

func (s Stats) builtin() builtin.Stats {
	return builtin.Stats{
		Total: s.Total, Validated: s.Validated, Unvalidated: s.Unvalidated, Filtered: s.Filtered,
		Passed: s.Passed, TTLExpired: s.TTLExpired, Replies: s.Replies, Dropped: s.Dropped,
	}
}

// natsDropped sums what the NATS client discarded on every subscription.
func (h *Host) natsDropped() int64 {
	h.subMu.Lock()
	defer h.subMu.Unlock()
	total := h.counters.natsDroppedGone.Load()
	for _, s := range h.subs {
		total += droppedOn(s)
	}
	return total
}
