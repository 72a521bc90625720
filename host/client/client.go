// Package client is a small Choria v1 RPC client: the requests it sends
// are the ones the stock `choria req` sends (broadcast discovery, then one
// direct request per node), signed when a certificate is configured. The
// agent-host CLI and the tests use it; it is not a replacement for choria.
package client

import (
	"context"
	"crypto"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/agent-host/agent-host/protocol"
	v1 "github.com/agent-host/agent-host/protocol/v1"
)

// ErrNoNodes means discovery found no node matching the filter.
var ErrNoNodes = errors.New("client: did not discover any nodes")

// Config describes the caller.
type Config struct {
	// Identity is the caller's certname, e.g. rip.mcollective; the caller id
	// is "choria=<Identity>".
	Identity string
	// Collective to address; "mcollective" when empty.
	Collective string
	// TTL of requests in seconds; 60 when zero.
	TTL int
	// Signer and CertPEM sign requests; nil sends Choria's "insecure" markers,
	// which only a host in insecure mode accepts.
	Signer  crypto.Signer
	CertPEM []byte
}

// Client sends requests over one NATS connection.
type Client struct {
	nc  *nats.Conn
	cfg Config
}

// New returns a client using nc, which the caller owns.
func New(nc *nats.Conn, cfg Config) *Client {
	if cfg.Collective == "" {
		cfg.Collective = "mcollective"
	}
	if cfg.TTL == 0 {
		cfg.TTL = 60
	}
	return &Client{nc: nc, cfg: cfg}
}

// CallerID is the caller id requests carry.
func (c *Client) CallerID() string { return "choria=" + c.cfg.Identity }

// Reply is one node's answer to an RPC request.
type Reply struct {
	Sender string
	Body   protocol.RPCReply
	// RTT is the time from sending the request to receiving this reply.
	RTT time.Duration
}

// Discover broadcasts a discovery ping with the filter and returns the
// identities that answered within wait, sorted.
func (c *Client) Discover(ctx context.Context, f *protocol.Filter, wait time.Duration) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var nodes []string
	err := c.exchange(ctx, "discovery", []byte(base64.StdEncoding.EncodeToString([]byte("ping"))), f,
		[]string{c.cfg.Collective + ".broadcast.agent.discovery"}, 0,
		func(t *v1.Transport, _ time.Duration) bool {
			if !slices.Contains(nodes, t.Headers.MCSender) {
				nodes = append(nodes, t.Headers.MCSender)
			}
			return false
		})
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return nil, err
	}
	slices.Sort(nodes)
	return nodes, nil
}

// Request sends an RPC request directly to each node and collects the
// replies until every node answered or ctx ends. The filter is sent along,
// as choria does, so a node re-checks it.
func (c *Client) Request(ctx context.Context, nodes []string, agent, action string, data json.RawMessage, f *protocol.Filter) ([]Reply, error) {
	if len(nodes) == 0 {
		return nil, ErrNoNodes
	}
	if data == nil {
		data = json.RawMessage("{}")
	}
	body, err := json.Marshal(protocol.RPCRequest{Agent: agent, Action: action, Data: data})
	if err != nil {
		return nil, fmt.Errorf("encoding request body: %w", err)
	}
	subjects := make([]string, len(nodes))
	for i, n := range nodes {
		subjects[i] = c.cfg.Collective + ".node." + n
	}
	var replies []Reply
	err = c.exchange(ctx, agent, body, f, subjects, len(nodes), func(t *v1.Transport, rtt time.Duration) bool {
		r, err := decodeReply(t)
		if err != nil {
			return false
		}
		replies = append(replies, Reply{Sender: t.Headers.MCSender, Body: *r, RTT: rtt})
		return len(replies) == len(nodes)
	})
	slices.SortFunc(replies, func(a, b Reply) int {
		switch {
		case a.Sender < b.Sender:
			return -1
		case a.Sender > b.Sender:
			return 1
		}
		return 0
	})
	return replies, err
}

// exchange publishes one request to subjects and feeds every reply
// transport to onReply until it returns true, want replies arrived, or
// ctx ends.
func (c *Client) exchange(ctx context.Context, agent string, body []byte, f *protocol.Filter, subjects []string, want int, onReply func(*v1.Transport, time.Duration) bool) error {
	id, err := v1.NewRequestID()
	if err != nil {
		return err
	}
	if f == nil {
		f = protocol.NewFilter()
	}
	req := v1.NewRequest(v1.RequestEnvelope{
		RequestID: id, SenderID: c.cfg.Identity, CallerID: c.CallerID(), Collective: c.cfg.Collective,
		Agent: agent, TTL: c.cfg.TTL, Time: time.Now().Unix(), Filter: f,
	}, body)
	sreq, err := req.Seal(c.cfg.Signer, c.cfg.CertPEM)
	if err != nil {
		return err
	}
	replyTo := ReplySubject(c.cfg.Collective, c.CallerID(), id)
	payload, err := v1.EncodeRequest(sreq, replyTo, c.cfg.Identity)
	if err != nil {
		return err
	}

	sub, err := c.nc.SubscribeSync(replyTo)
	if err != nil {
		return fmt.Errorf("subscribing to replies: %w", err)
	}
	defer sub.Unsubscribe() //nolint:errcheck // best effort on the way out
	// A large fleet answers discovery in a burst; hold it rather than drop it.
	if err := sub.SetPendingLimits(maxPendingReplies, -1); err != nil {
		return fmt.Errorf("sizing the reply buffer: %w", err)
	}
	start := time.Now()
	for _, s := range subjects {
		if err := c.nc.Publish(s, payload); err != nil {
			return fmt.Errorf("publishing to %s: %w", s, err)
		}
	}
	if err := c.nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("flushing request: %w", err)
	}
	got := 0
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			if dropped, _ := sub.Dropped(); dropped > 0 {
				return fmt.Errorf("%d replies were dropped: more than %d arrived at once", dropped, maxPendingReplies)
			}
			return err
		}
		t, err := v1.DecodeTransport(m.Data)
		if err != nil {
			continue
		}
		got++
		if onReply(t, time.Since(start)) || (want > 0 && got >= want) {
			return nil
		}
	}
}

// maxPendingReplies bounds the replies buffered before they are read.
const maxPendingReplies = 1 << 20

func decodeReply(t *v1.Transport) (*protocol.RPCReply, error) {
	sr, err := t.SecureReply()
	if err != nil {
		return nil, err
	}
	r, err := sr.Reply()
	if err != nil {
		return nil, err
	}
	var body protocol.RPCReply
	if err := json.Unmarshal([]byte(r.Message), &body); err != nil {
		return nil, fmt.Errorf("decoding rpc reply: %w", err)
	}
	return &body, nil
}

// ReplySubject is where Choria clients expect replies:
// <collective>.reply.<md5 hex of caller id>.<request id>.
func ReplySubject(collective, callerID, requestID string) string {
	sum := md5.Sum([]byte(callerID))
	return collective + ".reply." + hex.EncodeToString(sum[:]) + "." + requestID
}
