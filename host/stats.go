package host

import "sync/atomic"

// Stats counts what happened to requests, with the names rpcutil
// daemon_stats reports plus the refusals Choria does not count.
type Stats struct {
	// Total is every message received.
	Total atomic.Int64
	// Validated passed security verification; Unvalidated failed it or did not decode.
	Validated   atomic.Int64
	Unvalidated atomic.Int64
	// Filtered did not match this node; Passed did and were dispatched.
	Filtered atomic.Int64
	Passed   atomic.Int64
	// TTLExpired were too old or from the future.
	TTLExpired atomic.Int64
	// Replies is the number of replies published.
	Replies atomic.Int64
	// Events is the number of lifecycle events published.
	Events atomic.Int64
	// UnknownAgent were addressed to an agent this node does not serve.
	UnknownAgent atomic.Int64
	// Dropped were discarded by the NATS client because the host could not
	// keep up (slow consumer); they are logged, never silent.
	Dropped atomic.Int64
	// ReplyFailed replies could not be published.
	ReplyFailed atomic.Int64
}
