package host

import (
	"fmt"
	"sync"
)

// queueLimits bound the agent queue.
type queueLimits struct {
	// count and bytes bound every waiting request together.
	count, bytes int
	// perAgent bounds the requests of one agent waiting, so that a flood
	// for one agent leaves room in the queue for the others.
	perAgent int
	// inFlightPerAgent bounds the slots one agent holds, so that one slow
	// agent leaves slots for the others.
	inFlightPerAgent int
}

// agentQueue holds requests for agents until an in-flight slot is free.
// Slots are handed out round-robin among the agents with requests waiting,
// first come first served within an agent. A request that does not fit
// is refused at once with a queueFullError: never silently dropped.
type agentQueue struct {
	limits queueLimits

	mu     sync.Mutex
	cond   *sync.Cond
	lanes  map[string]*lane
	ready  []*lane // lanes with requests waiting, in round-robin order
	next   int     // where the round-robin goes on in ready
	count  int
	bytes  int
	active int // requests holding a slot
	closed bool
}

// lane is one agent's share of the queue.
type lane struct {
	waiting  []*request
	inFlight int
	listed   bool // in agentQueue.ready
}

func newAgentQueue(l queueLimits) *agentQueue {
	q := &agentQueue{limits: l, lanes: map[string]*lane{}}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// queueFullError says which limit refused a request, in the words the
// caller sees.
type queueFullError struct {
	waiting int    // requests, or bytes when key is queue_bytes
	agent   string // set when the agent's share was the limit
	key     string
}

func (e *queueFullError) Error() string {
	switch {
	case e.agent != "":
		return fmt.Sprintf("%d requests for %s are already waiting, the most one agent may queue (half of plugin.agent_host.%s)", e.waiting, e.agent, e.key)
	case e.key == "queue_bytes":
		return fmt.Sprintf("%d bytes of requests are already waiting (plugin.agent_host.%s)", e.waiting, e.key)
	default:
		return fmt.Sprintf("%d requests are already waiting (plugin.agent_host.%s)", e.waiting, e.key)
	}
}

// errQueueClosed refuses requests once the host is shutting down.
var errQueueClosed = fmt.Errorf("host: shutting down")

// push queues r, or says why it cannot be.
func (q *agentQueue) push(r *request) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return errQueueClosed
	}
	name := r.agent.name
	l := q.lanes[name]
	if l == nil {
		l = &lane{}
		q.lanes[name] = l
	}
	switch {
	case len(l.waiting) >= q.limits.perAgent:
		return &queueFullError{waiting: len(l.waiting), agent: name, key: "queue_limit"}
	case q.count >= q.limits.count:
		return &queueFullError{waiting: q.count, key: "queue_limit"}
	case q.bytes+r.size > q.limits.bytes:
		return &queueFullError{waiting: q.bytes, key: "queue_bytes"}
	}
	l.waiting = append(l.waiting, r)
	q.count++
	q.bytes += r.size
	if !l.listed {
		l.listed = true
		q.ready = append(q.ready, l)
	}
	q.cond.Signal()
	return nil
}

// pop waits for the next request to run and takes a slot for it; ok is
// false once the queue is closed.
func (q *agentQueue) pop() (r *request, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for {
		if q.closed {
			return nil, false
		}
		if r := q.takeLocked(); r != nil {
			return r, true
		}
		q.cond.Wait()
	}
}

// takeLocked takes the head of the next lane, in round-robin order, whose
// agent has a slot left.
func (q *agentQueue) takeLocked() *request {
	for i := range len(q.ready) {
		at := (q.next + i) % len(q.ready)
		l := q.ready[at]
		if l.inFlight >= q.inFlightLimit(l.waiting[0].agent) {
			continue
		}
		r := l.waiting[0]
		l.waiting[0] = nil
		l.waiting = l.waiting[1:]
		l.inFlight++
		q.count--
		q.bytes -= r.size
		q.active++
		if len(l.waiting) == 0 {
			l.waiting = nil
			l.listed = false
			q.ready = append(q.ready[:at], q.ready[at+1:]...)
			q.next = at
		} else {
			q.next = at + 1
		}
		if len(q.ready) > 0 {
			q.next %= len(q.ready)
		} else {
			q.next = 0
		}
		return r
	}
	return nil
}

// inFlightLimit is how many slots an agent's requests may hold: what its
// pool runs at once, when it has one, within the per-agent limit.
func (q *agentQueue) inFlightLimit(a *agentEntry) int {
	if a.capacity != nil {
		if c := a.capacity(); c > 0 {
			return min(c, q.limits.inFlightPerAgent)
		}
	}
	return q.limits.inFlightPerAgent
}

// limitsChanged is told that an agent may now hold more slots (its pool
// learnt what a worker runs at once): requests waiting for one look again.
func (q *agentQueue) limitsChanged() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.cond.Broadcast()
}

// done gives back the slot r held.
func (q *agentQueue) done(r *request) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.lanes[r.agent.name].inFlight--
	q.active--
	// The freed slot may suit a waiter another agent's slot did not.
	q.cond.Broadcast()
}

// close refuses further requests, wakes the slots so they end, and
// returns the requests still waiting, oldest first within each agent.
func (q *agentQueue) close() []*request {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	var out []*request
	for _, l := range q.ready {
		out = append(out, l.waiting...)
		l.waiting, l.listed = nil, false
	}
	q.ready, q.count, q.bytes = nil, 0, 0
	q.cond.Broadcast()
	return out
}

// waiting and running report how many requests wait for and hold slots.
func (q *agentQueue) waiting() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.count
}

func (q *agentQueue) running() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.active
}
