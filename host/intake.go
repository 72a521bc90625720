package host

import (
	"sync"

	"github.com/nats-io/nats.go"
)

// handoffSize is the capacity of the channel every subscription delivers
// into. The mover empties it in constant time per message, so it only
// absorbs scheduling hiccups; if it does fill, NATS drops the message as a
// slow consumer and counts it. NATS never waits for room, so it must hold
// a burst that arrives while the mover waits for a CPU busy with
// decoding or agents: 64 dropped bursts of 100 on two loaded cores.
const handoffSize = 512

// intake holds received messages until a decoder takes them, within a
// limit on their number and one on their bytes, both across every
// subscription. With the hand-off channel, what the host buffers before
// decoding is at most maxBytes plus handoffSize messages, whatever the
// number of subscriptions.
type intake struct {
	handoff chan *nats.Msg

	maxMsgs, maxBytes int

	mu     sync.Mutex
	cond   *sync.Cond
	msgs   []pending // msgs[head:] are waiting
	head   int
	bytes  int
	closed bool
}

// pending is a buffered message and the bytes it is counted as.
type pending struct {
	msg  *nats.Msg
	size int
}

func newIntake(maxMsgs, maxBytes int) *intake {
	q := &intake{handoff: make(chan *nats.Msg, handoffSize), maxMsgs: max(maxMsgs, 1), maxBytes: max(maxBytes, 1)}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// move takes messages from the hand-off channel into the buffer, handing
// those that do not fit to drop, until stop is closed; then it moves what
// is left in the channel and closes the buffer.
func (q *intake) move(stop <-chan struct{}, drop func(*nats.Msg)) {
	add := func(m *nats.Msg) {
		if !q.push(m) {
			drop(m)
		}
	}
	for {
		select {
		case m := <-q.handoff:
			add(m)
		case <-stop:
			for {
				select {
				case m := <-q.handoff:
					add(m)
				default:
					q.mu.Lock()
					q.closed = true
					q.cond.Broadcast()
					q.mu.Unlock()
					return
				}
			}
		}
	}
}

// push buffers m, or reports false when that would exceed a limit. A
// message counts with everything it came with, headers included, though
// Choria sends none; they are dropped, as nothing reads them.
func (q *intake) push(m *nats.Msg) bool {
	size := m.Size()
	m.Header = nil
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.msgs)-q.head >= q.maxMsgs || q.bytes+size > q.maxBytes {
		return false
	}
	q.msgs = append(q.msgs, pending{m, size})
	q.bytes += size
	q.cond.Signal()
	return true
}

// pop waits for a message; ok is false once the buffer is closed and empty.
func (q *intake) pop() (m *nats.Msg, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.head == len(q.msgs) {
		if q.closed {
			return nil, false
		}
		q.cond.Wait()
	}
	p := q.msgs[q.head]
	q.msgs[q.head] = pending{}
	q.head++
	q.bytes -= p.size
	// Reuse the slice from the start once it is empty, or move the waiting
	// messages down once most of it is spent, so it does not grow forever.
	switch {
	case q.head == len(q.msgs):
		q.msgs, q.head = q.msgs[:0], 0
	case q.head > 1024 && q.head > len(q.msgs)/2:
		n := copy(q.msgs, q.msgs[q.head:])
		clear(q.msgs[n:])
		q.msgs, q.head = q.msgs[:n], 0
	}
	return p.msg, true
}
