// Package v1 implements Choria's protocol version 1, the one every Choria
// client speaks with x509 security providers (file, puppet, ...). A request
// travels as four nested JSON documents:
//
//	Transport{data: base64(SecureRequest{message: Request{message: body}})}
//
// and a reply as Transport{data: base64(SecureReply{message: Reply{message: body}})}.
package v1

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"

	"github.com/agent-host/agent-host/protocol"
)

// Protocol identifiers, exactly as Choria writes them.
const (
	TransportProtocol     = "choria:transport:1"
	SecureRequestProtocol = "choria:secure:request:1"
	RequestProtocol       = "choria:request:1"
	SecureReplyProtocol   = "choria:secure:reply:1"
	ReplyProtocol         = "choria:reply:1"
)

// Sentinel errors; each decoding failure wraps one of them.
var (
	ErrInvalidTransport     = errors.New("v1: invalid transport message")
	ErrInvalidSecureRequest = errors.New("v1: invalid secure request")
	ErrInvalidRequest       = errors.New("v1: invalid request")
	ErrInvalidSecureReply   = errors.New("v1: invalid secure reply")
	ErrInvalidReply         = errors.New("v1: invalid reply")
	ErrHashMismatch         = errors.New("v1: reply hash does not match its message")
)

// Transport is the outermost document, the NATS payload.
type Transport struct {
	Protocol string           `json:"protocol" jsonschema:"enum=choria:transport:1"`
	Data     []byte           `json:"data"`
	Headers  TransportHeaders `json:"headers"`
}

// TransportHeaders carry routing information outside the signed request.
type TransportHeaders struct {
	// ReplyTo is the subject a server publishes its reply on, verbatim.
	ReplyTo string `json:"reply-to,omitempty"`
	// MCSender is the identity of the publisher; discovery counts replies by it.
	MCSender   string            `json:"mc_sender"`
	SeenBy     [][3]string       `json:"seen-by,omitempty"`
	Federation *FederationHeader `json:"federation,omitempty"`
}

// FederationHeader is set by Choria federation brokers, which route the
// replies of federated requests by it.
type FederationHeader struct {
	RequestID string   `json:"req,omitempty"`
	ReplyTo   string   `json:"reply-to,omitempty"`
	Targets   []string `json:"target,omitempty"`
}

// SecureRequest carries the request JSON as text, its signature and the
// caller's certificate.
type SecureRequest struct {
	Protocol string `json:"protocol" jsonschema:"enum=choria:secure:request:1"`
	// Message is the Request JSON; the signature covers exactly these bytes.
	Message string `json:"message"`
	// Signature is base64 RSA PKCS#1 v1.5 over SHA-256 of Message.
	Signature string `json:"signature"`
	// PubCert is the PEM of the caller's certificate.
	PubCert string `json:"pubcert"`
}

// Request is the signed request.
type Request struct {
	Protocol string `json:"protocol" jsonschema:"enum=choria:request:1"`
	// Message is the body: raw SimpleRPC JSON for mcorpc, base64 for discovery.
	Message  string          `json:"message"`
	Envelope RequestEnvelope `json:"envelope"`
}

// RequestEnvelope holds the request's metadata.
type RequestEnvelope struct {
	// RequestID is 32 lowercase hex characters.
	RequestID  string `json:"requestid" jsonschema:"minLength=32,maxLength=32"`
	SenderID   string `json:"senderid"`
	CallerID   string `json:"callerid"`
	Collective string `json:"collective"`
	Agent      string `json:"agent"`
	// TTL is how long, in seconds, the request is valid either side of Time.
	TTL int `json:"ttl"`
	// Time is the Unix time, in seconds, the client created the request.
	Time   int64            `json:"time"`
	Filter *protocol.Filter `json:"filter"`
}

// Reply is the server's reply.
type Reply struct {
	Protocol string        `json:"protocol" jsonschema:"enum=choria:reply:1"`
	Message  string        `json:"message"`
	Envelope ReplyEnvelope `json:"envelope"`
}

// ReplyEnvelope holds the reply's metadata.
type ReplyEnvelope struct {
	RequestID string `json:"requestid"`
	SenderID  string `json:"senderid"`
	Agent     string `json:"agent"`
	Time      int64  `json:"time"`
}

// SecureReply carries the reply JSON as text and its hash; v1 replies are
// not signed.
type SecureReply struct {
	Protocol string `json:"protocol" jsonschema:"enum=choria:secure:reply:1"`
	Message  string `json:"message"`
	// Hash is base64 SHA-256 of Message.
	Hash string `json:"hash"`
}

var requestIDRe = regexp.MustCompile(`^[a-zA-Z0-9]{32}$`)

// Bounds on the transport headers, which a reply copies: Choria records a
// hop per broker a message crosses, and its federation brokers address at
// most 200 nodes per message.
const (
	MaxHops              = 64
	MaxFederationTargets = 1024
)

// DecodeTransport parses a NATS payload as a v1 transport.
func DecodeTransport(b []byte) (*Transport, error) {
	if err := protocol.CheckDepth(b, protocol.MaxEnvelopeDepth); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidTransport, err)
	}
	var t Transport
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidTransport, err)
	}
	if t.Protocol != TransportProtocol {
		return nil, fmt.Errorf("%w: protocol %q is not %s", ErrInvalidTransport, t.Protocol, TransportProtocol)
	}
	if len(t.Data) == 0 {
		return nil, fmt.Errorf("%w: no data", ErrInvalidTransport)
	}
	if len(t.Headers.SeenBy) > MaxHops {
		return nil, fmt.Errorf("%w: %d seen-by hops, more than %d", ErrInvalidTransport, len(t.Headers.SeenBy), MaxHops)
	}
	if f := t.Headers.Federation; f != nil && len(f.Targets) > MaxFederationTargets {
		return nil, fmt.Errorf("%w: %d federation targets, more than %d", ErrInvalidTransport, len(f.Targets), MaxFederationTargets)
	}
	return &t, nil
}

// SecureRequest decodes the transport's data as a secure request.
func (t *Transport) SecureRequest() (*SecureRequest, error) {
	if err := protocol.CheckDepth(t.Data, protocol.MaxEnvelopeDepth); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidSecureRequest, err)
	}
	var s SecureRequest
	if err := json.Unmarshal(t.Data, &s); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidSecureRequest, err)
	}
	if s.Protocol != SecureRequestProtocol {
		return nil, fmt.Errorf("%w: protocol %q is not %s", ErrInvalidSecureRequest, s.Protocol, SecureRequestProtocol)
	}
	if s.Message == "" {
		return nil, fmt.Errorf("%w: empty message", ErrInvalidSecureRequest)
	}
	return &s, nil
}

// SecureReply decodes the transport's data as a secure reply and checks its hash.
func (t *Transport) SecureReply() (*SecureReply, error) {
	if err := protocol.CheckDepth(t.Data, protocol.MaxEnvelopeDepth); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidSecureReply, err)
	}
	var s SecureReply
	if err := json.Unmarshal(t.Data, &s); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidSecureReply, err)
	}
	if s.Protocol != SecureReplyProtocol {
		return nil, fmt.Errorf("%w: protocol %q is not %s", ErrInvalidSecureReply, s.Protocol, SecureReplyProtocol)
	}
	if s.Hash != hashOf(s.Message) {
		return nil, ErrHashMismatch
	}
	return &s, nil
}

// Request decodes the signed request text. It checks what Choria's request
// schema requires: the protocol, a 32 character request id, every envelope
// string present and a positive TTL.
func (s *SecureRequest) Request() (*Request, error) {
	if err := protocol.CheckDepth([]byte(s.Message), protocol.MaxEnvelopeDepth); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	var r Request
	if err := json.Unmarshal([]byte(s.Message), &r); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidRequest, err)
	}
	if err := r.check(); err != nil {
		return nil, err
	}
	return &r, nil
}

func (r *Request) check() error {
	e := &r.Envelope
	switch {
	case r.Protocol != RequestProtocol:
		return fmt.Errorf("%w: protocol %q is not %s", ErrInvalidRequest, r.Protocol, RequestProtocol)
	case !requestIDRe.MatchString(e.RequestID):
		return fmt.Errorf("%w: requestid %q is not 32 alphanumeric characters", ErrInvalidRequest, e.RequestID)
	case e.SenderID == "":
		return fmt.Errorf("%w: senderid is empty", ErrInvalidRequest)
	case e.CallerID == "":
		return fmt.Errorf("%w: callerid is empty", ErrInvalidRequest)
	case e.Collective == "":
		return fmt.Errorf("%w: collective is empty", ErrInvalidRequest)
	case e.Agent == "":
		return fmt.Errorf("%w: agent is empty", ErrInvalidRequest)
	case e.TTL <= 0:
		return fmt.Errorf("%w: ttl %d is not positive", ErrInvalidRequest, e.TTL)
	case e.Time <= 0:
		return fmt.Errorf("%w: time %d is not positive", ErrInvalidRequest, e.Time)
	}
	return nil
}

// Body returns the request body the way Choria reads it: base64-decoded
// when it decodes, the text itself otherwise.
func (r *Request) Body() []byte {
	if b, err := base64.StdEncoding.DecodeString(r.Message); err == nil {
		return b
	}
	return []byte(r.Message)
}

// Reply decodes the secure reply's reply text.
func (s *SecureReply) Reply() (*Reply, error) {
	if err := protocol.CheckDepth([]byte(s.Message), protocol.MaxEnvelopeDepth); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidReply, err)
	}
	var r Reply
	if err := json.Unmarshal([]byte(s.Message), &r); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidReply, err)
	}
	if r.Protocol != ReplyProtocol {
		return nil, fmt.Errorf("%w: protocol %q is not %s", ErrInvalidReply, r.Protocol, ReplyProtocol)
	}
	return &r, nil
}

// ReplyHeaders returns the transport headers of a reply to the request
// that arrived in request, as Choria's server writes them: mc_sender is
// the replying node's identity; a federated request's federation header
// and seen-by hops are copied, so the federation broker can route the
// reply back; and the node records its own hop, [server, identity,
// server], server being the broker URL it is connected to.
func ReplyHeaders(request *Transport, identity, server string) TransportHeaders {
	h := TransportHeaders{MCSender: identity}
	if f := request.Headers.Federation; f != nil {
		h.Federation = &FederationHeader{RequestID: f.RequestID, ReplyTo: f.ReplyTo, Targets: f.Targets}
		h.SeenBy = append(h.SeenBy, request.Headers.SeenBy...)
	}
	h.SeenBy = append(h.SeenBy, [3]string{server, identity, server})
	return h
}

// EncodeReply wraps a reply body for the request in a reply, a secure
// reply and a transport with headers (see ReplyHeaders), ready to publish
// on the request's reply-to. The reply's sender is headers.MCSender and
// now its time in Unix seconds.
func EncodeReply(req *Request, headers TransportHeaders, now int64, body []byte) ([]byte, error) {
	reply, err := json.Marshal(Reply{
		Protocol: ReplyProtocol,
		Message:  string(body),
		Envelope: ReplyEnvelope{RequestID: req.Envelope.RequestID, SenderID: headers.MCSender, Agent: req.Envelope.Agent, Time: now},
	})
	if err != nil {
		return nil, fmt.Errorf("encoding reply: %w", err)
	}
	secure, err := json.Marshal(SecureReply{Protocol: SecureReplyProtocol, Message: string(reply), Hash: hashOf(string(reply))})
	if err != nil {
		return nil, fmt.Errorf("encoding secure reply: %w", err)
	}
	t, err := json.Marshal(Transport{Protocol: TransportProtocol, Data: secure, Headers: headers})
	if err != nil {
		return nil, fmt.Errorf("encoding reply transport: %w", err)
	}
	return t, nil
}

// DecodeReply unwraps a reply payload: its transport, the secure reply
// (whose hash is checked) and the reply inside, whose Message is the body.
func DecodeReply(payload []byte) (*Transport, *Reply, error) {
	t, err := DecodeTransport(payload)
	if err != nil {
		return nil, nil, err
	}
	r, err := t.Reply()
	return t, r, err
}

// Reply decodes the transport's data as a secure reply, checks its hash
// and returns the reply inside.
func (t *Transport) Reply() (*Reply, error) {
	s, err := t.SecureReply()
	if err != nil {
		return nil, err
	}
	return s.Reply()
}

func hashOf(message string) string {
	sum := sha256.Sum256([]byte(message))
	return base64.StdEncoding.EncodeToString(sum[:])
}
