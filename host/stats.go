package host

import "sync/atomic"

// counters are the live request counters.
type counters struct {
	total, validated, unvalidated, filtered, passed, ttlExpired atomic.Int64
	replies, replyFailed, unknownAgent, filterRefused           atomic.Int64
	// droppedGone keeps the drops of subscriptions since removed.
	droppedGone atomic.Int64
}

// Stats is a snapshot of what happened to requests, with the names rpcutil
// daemon_stats reports plus the refusals Choria does not count.
type Stats struct {
	// Total is every message received.
	Total int64
	// Validated passed security verification; Unvalidated failed it or did not decode.
	Validated, Unvalidated int64
	// Filtered did not match this node; Passed did and were dispatched.
	Filtered, Passed int64
	// TTLExpired were too old or from the future.
	TTLExpired int64
	// Replies were published; ReplyFailed could not be.
	Replies, ReplyFailed int64
	// UnknownAgent were addressed to an agent this node does not serve.
	UnknownAgent int64
	// FilterRefused carried a filter beyond filter.Check's limits; they
	// are counted as Filtered too, as Choria counts a filter it cannot
	// evaluate.
	FilterRefused int64
	// Dropped were discarded by the NATS client because the host could not
	// keep up (slow consumer); each episode is also logged.
	Dropped int64
}

// Stats returns the current counters.
func (h *Host) Stats() Stats {
	c := &h.counters
	return Stats{
		Total: c.total.Load(), Validated: c.validated.Load(), Unvalidated: c.unvalidated.Load(),
		Filtered: c.filtered.Load(), Passed: c.passed.Load(), TTLExpired: c.ttlExpired.Load(),
		Replies: c.replies.Load(), ReplyFailed: c.replyFailed.Load(),
		UnknownAgent: c.unknownAgent.Load(), FilterRefused: c.filterRefused.Load(), Dropped: h.dropped(),
	}
}

// dropped sums what the NATS client discarded on every subscription.
func (h *Host) dropped() int64 {
	h.subMu.Lock()
	defer h.subMu.Unlock()
	total := h.counters.droppedGone.Load()
	for _, s := range h.subs {
		if d, err := s.Dropped(); err == nil {
			total += int64(d)
		}
	}
	return total
}
