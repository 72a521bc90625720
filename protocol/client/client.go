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
	"strings"
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
	// Body is the SimpleRPC reply; for the discovery agent, whose answer
	// is the bare word pong, it is an OK reply with no data.
	Body protocol.RPCReply
	// Err says why the node's answer could not be read; Body is then empty.
	Err error
	// RTT is the time from sending the request to receiving this reply.
	RTT time.Duration
}

// Result is what came back for a request sent to a set of nodes.
type Result struct {
	// Replies holds the first answer of each node asked that answered,
	// sorted by sender.
	Replies []Reply
	// Missing lists the nodes asked that did not answer, sorted.
	Missing []string
	// Unexpected lists senders that answered without being asked, sorted;
	// Duplicates counts further answers from nodes that had answered.
	Unexpected []string
	Duplicates int
}

// Discover broadcasts a discovery ping with the filter and returns the
// identities that answered within wait, sorted.
func (c *Client) Discover(ctx context.Context, f *protocol.Filter, wait time.Duration) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var nodes []string
	err := c.exchange(ctx, "discovery", []byte(base64.StdEncoding.EncodeToString([]byte("ping"))), f,
		[]string{c.cfg.Collective + ".broadcast.agent.discovery"},
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

// Request sends an RPC request directly to each node and collects their
// replies until every node answered or ctx ends; nodes that did not are
// in the result's Missing. The filter is sent along, as choria does, so a
// node re-checks it. Only a failure to send is an error.
func (c *Client) Request(ctx context.Context, nodes []string, agent, action string, data json.RawMessage, f *protocol.Filter) (*Result, error) {
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
	res := &Result{}
	answered := map[string]bool{}
	asked := map[string]bool{}
	for _, n := range nodes {
		asked[n] = true
	}
	err = c.exchange(ctx, agent, body, f, subjects, func(t *v1.Transport, rtt time.Duration) bool {
		sender := t.Headers.MCSender
		switch {
		case !asked[sender]:
			if !slices.Contains(res.Unexpected, sender) {
				res.Unexpected = append(res.Unexpected, sender)
			}
		case answered[sender]:
			res.Duplicates++
		default:
			answered[sender] = true
			r := Reply{Sender: sender, RTT: rtt}
			if b, err := decodeBody(agent, t); err != nil {
				r.Err = err
			} else {
				r.Body = *b
			}
			res.Replies = append(res.Replies, r)
		}
		return len(answered) == len(asked)
	})
	for _, n := range nodes {
		if !answered[n] && !slices.Contains(res.Missing, n) {
			res.Missing = append(res.Missing, n)
		}
	}
	slices.SortFunc(res.Replies, func(a, b Reply) int { return strings.Compare(a.Sender, b.Sender) })
	slices.Sort(res.Missing)
	slices.Sort(res.Unexpected)
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return res, err
	}
	return res, nil
}

// exchange publishes one request to subjects and feeds every reply
// transport to onReply until it returns true or ctx ends.
func (c *Client) exchange(ctx context.Context, agent string, body []byte, f *protocol.Filter, subjects []string, onReply func(*v1.Transport, time.Duration) bool) error {
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
			// Without a transport there is no sender to account it to.
			continue
		}
		if onReply(t, time.Since(start)) {
			return nil
		}
	}
}

// maxPendingReplies bounds the replies buffered before they are read.
const maxPendingReplies = 1 << 20

// DecodeReply unwraps a node's reply payload down to its SimpleRPC body;
// the transport holds the sender and routing headers.
func DecodeReply(payload []byte) (*v1.Transport, *protocol.RPCReply, error) {
	t, err := v1.DecodeTransport(payload)
	if err != nil {
		return nil, nil, err
	}
	body, err := decodeBody("", t)
	return t, body, err
}

// decodeBody reads a node's answer to agent down to its SimpleRPC body.
func decodeBody(agent string, t *v1.Transport) (*protocol.RPCReply, error) {
	r, err := t.Reply()
	if err != nil {
		return nil, err
	}
	if agent == discoveryAgent && r.Message == "pong" {
		return protocol.NewRPCReply("ping"), nil
	}
	return protocol.DecodeRPCReply([]byte(r.Message))
}

// discoveryAgent answers with a bare word rather than a SimpleRPC reply.
const discoveryAgent = "discovery"

// ReplySubject is where Choria clients expect replies:
// <collective>.reply.<md5 hex of caller id>.<request id>.
func ReplySubject(collective, callerID, requestID string) string {
	sum := md5.Sum([]byte(callerID))
	return collective + ".reply." + hex.EncodeToString(sum[:]) + "." + requestID
}
