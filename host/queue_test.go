package host

import (
	"errors"
	"slices"
	"testing"
)

func queued(agent string, size int) *request {
	return &request{agent: &agentEntry{name: agent}, size: size}
}

// TestQueueRoundRobin: slots go round-robin among the agents with
// requests waiting, so a flood for one agent does not hold up another.
func TestQueueRoundRobin(t *testing.T) {
	q := newAgentQueue(queueLimits{count: 100, bytes: 1 << 20, perAgent: 50, inFlightPerAgent: 100})
	for range 10 {
		if err := q.push(queued("flood", 1)); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range []string{"b", "c"} {
		if err := q.push(queued(a, 1)); err != nil {
			t.Fatal(err)
		}
	}
	var order []string
	for range 5 {
		r, ok := q.pop()
		if !ok {
			t.Fatal("queue closed")
		}
		order = append(order, r.agent.name)
	}
	if want := []string{"flood", "b", "c", "flood", "flood"}; !slices.Equal(order, want) {
		t.Errorf("order %v, want %v", order, want)
	}
}

// TestQueueInFlightPerAgent: an agent holding its share of slots waits,
// while another agent's request is handed out.
func TestQueueInFlightPerAgent(t *testing.T) {
	q := newAgentQueue(queueLimits{count: 100, bytes: 1 << 20, perAgent: 50, inFlightPerAgent: 1})
	for _, a := range []string{"slow", "slow", "fast"} {
		if err := q.push(queued(a, 1)); err != nil {
			t.Fatal(err)
		}
	}
	first, _ := q.pop()
	second, _ := q.pop()
	if first.agent.name != "slow" || second.agent.name != "fast" {
		t.Fatalf("popped %s then %s, want slow then fast", first.agent.name, second.agent.name)
	}
	if q.waiting() != 1 || q.running() != 2 {
		t.Errorf("waiting %d running %d, want 1 and 2", q.waiting(), q.running())
	}
	q.done(first)
	third, _ := q.pop()
	if third.agent.name != "slow" {
		t.Errorf("after the slot came back, popped %s, want slow", third.agent.name)
	}
}

func TestQueueLimits(t *testing.T) {
	q := newAgentQueue(queueLimits{count: 3, bytes: 100, perAgent: 2, inFlightPerAgent: 1})
	var full *queueFullError
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(q.push(queued("a", 10)))
	must(q.push(queued("a", 10)))
	if err := q.push(queued("a", 10)); !errors.As(err, &full) || full.agent != "a" {
		t.Errorf("third request for a: %v, want the per-agent limit", err)
	}
	if err := q.push(queued("b", 90)); !errors.As(err, &full) || full.key != "queue_bytes" {
		t.Errorf("request over the byte limit: %v, want queue_bytes", err)
	}
	must(q.push(queued("b", 10)))
	if err := q.push(queued("c", 1)); !errors.As(err, &full) || full.key != "queue_limit" || full.agent != "" {
		t.Errorf("request over the count: %v, want queue_limit", err)
	}
	left := q.close()
	if len(left) != 3 || q.waiting() != 0 {
		t.Errorf("close returned %d requests, %d still waiting; want 3 and 0", len(left), q.waiting())
	}
	if _, ok := q.pop(); ok {
		t.Error("pop after close handed out a request")
	}
	if err := q.push(queued("a", 1)); !errors.Is(err, errQueueClosed) {
		t.Errorf("push after close: %v", err)
	}
}
