package host

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/agent-host/agent-host/host/builtin"
	"github.com/agent-host/agent-host/protocol/security"
)

// Subscription is one NATS subscription the host holds.
type Subscription struct{ Subject, Queue string }

// Subscriptions lists what the host is subscribed to, sorted by subject.
func (h *Host) Subscriptions() []Subscription {
	h.subMu.Lock()
	defer h.subMu.Unlock()
	out := make([]Subscription, 0, len(h.subs))
	for subj, sub := range h.subs {
		out = append(out, Subscription{subj, sub.Queue})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Subject < out[j].Subject })
	return out
}

func (h *Host) connect() (*nats.Conn, error) {
	url := h.brokerURL
	if url == "" {
		url = strings.Join(h.cfg.MiddlewareURLs(), ",")
	}
	var lastReconnectLog atomic.Int64
	opts := []nats.Option{
		nats.Name("agent-host " + h.cfg.Identity),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.CustomReconnectDelay(reconnectDelay),
		nats.PingInterval(30 * time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				h.log.Warn("disconnected from broker", "error", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { h.log.Info("reconnected to broker", "url", c.ConnectedUrlRedacted()) }),
		// Why the broker cannot be reached (refused, TLS, credentials),
		// at most once every 30 s while it lasts.
		nats.ReconnectErrHandler(func(c *nats.Conn, err error) {
			now := time.Now().UnixNano()
			last := lastReconnectLog.Load()
			if now-last < int64(30*time.Second) || !lastReconnectLog.CompareAndSwap(last, now) {
				return
			}
			h.log.Warn("cannot reach the broker; retrying with backoff", "broker", c.Servers(), "error", err)
		}),
		nats.ErrorHandler(h.natsError),
	}
	if f := h.tlsFiles; f.CA != "" {
		tc, err := security.TLSConfig(f.Certificate, f.Key, f.CA)
		if err != nil {
			return nil, fmt.Errorf("host: broker TLS: %w", err)
		}
		opts = append(opts, nats.Secure(tc))
	}
	if h.cfg.NATSCredentials != "" {
		opts = append(opts, nats.UserCredentials(h.cfg.NATSCredentials))
	} else if h.cfg.NATSUser != "" {
		opts = append(opts, nats.UserInfo(h.cfg.NATSUser, h.cfg.NATSPass))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("host: connecting to %s: %w", url, err)
	}
	return nc, nil
}

// connection describes the broker connection for choria_util info; the
// zero Connection before Run has connected.
func (h *Host) connection() builtin.Connection {
	nc := h.conn.Load()
	if nc == nil {
		return builtin.Connection{ClientVersion: nats.Version}
	}
	st := nc.Stats()
	o := nc.Opts
	c := builtin.Connection{
		ClientVersion:  nats.Version,
		Servers:        nc.Servers(),
		Name:           o.Name,
		NoRandomize:    o.NoRandomize,
		Pedantic:       o.Pedantic,
		Secure:         o.Secure,
		AllowReconnect: o.AllowReconnect,
		MaxReconnect:   o.MaxReconnect,
		MaxPingsOut:    o.MaxPingsOut,
		ReconnectWait:  o.ReconnectWait,
		Timeout:        o.Timeout,
		PingEvery:      o.PingInterval,
		InMsgs:         st.InMsgs,
		OutMsgs:        st.OutMsgs,
		InBytes:        st.InBytes,
		OutBytes:       st.OutBytes,
		Reconnects:     st.Reconnects,
	}
	if nc.IsConnected() {
		c.ConnectedServer = nc.ConnectedUrlRedacted()
	}
	return c
}

// reconnectDelay backs off exponentially from 250ms to 30s, with jitter
// so a fleet does not reconnect in lock step after a broker restart.
func reconnectDelay(attempts int) time.Duration {
	d := 250 * time.Millisecond << min(attempts, 7)
	d = min(d, 30*time.Second)
	return d/2 + time.Duration(time.Now().UnixNano()%int64(d/2))
}

// natsError logs asynchronous NATS errors. A slow consumer means the NATS
// client dropped messages because the hand-off to the intake was full.
func (h *Host) natsError(_ *nats.Conn, sub *nats.Subscription, err error) {
	ok, suppressed := h.refusals.allow(time.Now())
	if !ok {
		return
	}
	if errors.Is(err, nats.ErrSlowConsumer) && sub != nil {
		dropped, _ := sub.Dropped()
		h.log.Error("requests dropped: the host cannot keep up reading messages", "subject", sub.Subject, "dropped_on_subject", dropped, "suppressed_since_last", suppressed)
		return
	}
	h.log.Error("broker error", "error", err, "suppressed_since_last", suppressed)
}

// syncSubscriptions makes the subscriptions match the agent table: the
// node subject and one broadcast subject per agent, in every collective.
// Service agents (DDL metadata.service) are load-balanced as in Choria: on
// <collective>.broadcast.service.<agent> in a queue group named after the
// agent. Every subscription delivers into the intake's one hand-off
// channel, so the number of subscriptions does not multiply what can be
// buffered.
func (h *Host) syncSubscriptions() error {
	if h.stopping.Load() {
		return nil
	}
	table := h.agents.Load()
	want := map[string]string{} // subject → queue group
	for _, c := range h.cfg.Collectives {
		want[c+".node."+h.cfg.Identity] = ""
		for _, name := range table.names {
			if a := table.get(name); a != nil && a.ddl.Metadata.Service {
				want[c+".broadcast.service."+name] = name
				continue
			}
			want[c+".broadcast.agent."+name] = ""
		}
	}
	h.subMu.Lock()
	defer h.subMu.Unlock()
	for subj, sub := range h.subs {
		if queue, ok := want[subj]; !ok || queue != sub.Queue {
			h.counters.natsDroppedGone.Add(droppedOn(sub))
			// Drain rather than unsubscribe, so that requests already on
			// their way are still answered.
			if err := sub.Drain(); err != nil {
				h.log.Warn("unsubscribing", "subject", subj, "error", err)
			}
			delete(h.subs, subj)
			h.log.Debug("unsubscribed", "subject", subj)
		}
	}
	subjects := make([]string, 0, len(want))
	for subj := range want {
		if _, ok := h.subs[subj]; !ok {
			subjects = append(subjects, subj)
		}
	}
	sort.Strings(subjects)
	for _, subj := range subjects {
		sub, err := h.nc.ChanQueueSubscribe(subj, want[subj], h.intake.handoff)
		if err != nil {
			return fmt.Errorf("host: subscribing to %s: %w", subj, err)
		}
		h.subs[subj] = sub
		h.log.Debug("subscribed", "subject", subj, "queue", want[subj])
	}
	return nil
}

// drainSubscriptions stops taking requests. The broker is told to stop
// sending, and the flush that follows returns once it has: everything it
// sent before is then in the intake, to be answered.
func (h *Host) drainSubscriptions() {
	h.subMu.Lock()
	for subj, sub := range h.subs {
		h.counters.natsDroppedGone.Add(droppedOn(sub))
		if err := sub.Drain(); err != nil {
			h.log.Debug("unsubscribing", "subject", subj, "error", err)
		}
		delete(h.subs, subj)
	}
	h.subMu.Unlock()
	if err := h.nc.FlushTimeout(2 * time.Second); err != nil {
		h.log.Debug("waiting for the broker to stop delivering", "error", err)
	}
}

func droppedOn(sub *nats.Subscription) int64 {
	d, err := sub.Dropped()
	if err != nil {
		return 0
	}
	return int64(d)
}
