// Package worker holds the documents of agent-host's worker protocol,
// io.agent-host.worker: newline-delimited JSON between the host and a
// long-running agent process, on file descriptors 3 (host to worker) and 4
// (worker to host). PROTOCOL.md at the root of the repository describes
// the protocol completely; this package is its Go encoding, shared by the
// host and sdk-go. It does no I/O beyond the Reader and Writer it wraps.
package worker

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/agent-host/agent-host/protocol"
)

// Identifiers and limits of the protocol.
const (
	// Name is the protocol's name, the value of EnvWorker.
	Name = "io.agent-host.worker"
	// V1 is the first version.
	V1 = 1
	// HandshakeMaxBytes bounds each document until the handshake agreed a
	// limit.
	HandshakeMaxBytes = 64 << 10
)

// Environment variables the host sets.
const (
	// EnvWorker is set to Name when the process is started as a worker.
	EnvWorker = "AGENT_HOST_WORKER"
	// EnvVersions lists the versions the host speaks, comma separated; it
	// is also set for the activation check, to ask whether the agent can
	// run as a worker.
	EnvVersions = "AGENT_HOST_WORKER_PROTOCOLS"
	// EnvFDs names the descriptors of the streams: "3,4", read then write.
	EnvFDs = "AGENT_HOST_WORKER_FDS"
)

// The file descriptors of the streams, as the worker sees them.
const (
	HostFD   = 3 // host → worker
	WorkerFD = 4 // worker → host
)

// Document types.
const (
	TypeHello    = "hello"
	TypeReady    = "ready"
	TypeRefuse   = "refuse"
	TypeRequest  = "request"
	TypeReply    = "reply"
	TypeCancel   = "cancel"
	TypePing     = "ping"
	TypePong     = "pong"
	TypeShutdown = "shutdown"
)

// Reasons a shutdown or a cancel gives.
const (
	ReasonStop    = "stop"
	ReasonReload  = "reload"
	ReasonRecycle = "recycle"
	ReasonIdle    = "idle"
	ReasonFailed  = "failed"
	// ReasonDeadline is a cancel's at the request's deadline; a cancel for
	// any other reason gives ReasonStop.
	ReasonDeadline = "deadline"
)

// Hello opens the handshake: the host's first document. Its shape is the
// same in every version, so that every worker can read it.
type Hello struct {
	Type string `json:"type" jsonschema:"enum=hello"`
	// Versions are the protocol versions the host speaks, newest last.
	Versions []int `json:"versions"`
	// Host names the host and its version, for the worker's log.
	Host string `json:"host"`
	// Agent is the agent the worker is started for.
	Agent string `json:"agent"`
	// MaxDocumentBytes is the largest document the host sends or accepts.
	MaxDocumentBytes int `json:"max_document_bytes"`
	// HandshakeMS is how long the host waits for Ready, in milliseconds.
	HandshakeMS int64 `json:"handshake_ms"`
}

// Ready completes the handshake: the worker's answer to Hello.
type Ready struct {
	Type string `json:"type" jsonschema:"enum=ready"`
	// V is the version the worker picked from Hello.Versions.
	V int `json:"v"`
	// SDK names what the worker is written with.
	SDK string `json:"sdk"`
	// Agents are the agents the worker serves; they include Hello.Agent.
	Agents []string `json:"agents"`
	// Concurrency is how many requests the worker runs at once.
	Concurrency int `json:"concurrency" jsonschema:"minimum=1"`
	// Activate is the activation check: false means the agent is not to
	// be served on this node.
	Activate bool `json:"activate"`
	// ActivateReason may say why the agent does not activate.
	ActivateReason string `json:"activate_reason,omitempty"`
	// MaxDocumentBytes, when set, lowers the document limit.
	MaxDocumentBytes int `json:"max_document_bytes,omitempty"`
}

// Refuse is the answer of a worker that speaks none of the versions.
type Refuse struct {
	Type string `json:"type" jsonschema:"enum=refuse"`
	// Versions are the versions the worker speaks.
	Versions []int  `json:"versions"`
	Reason   string `json:"reason"`
}

// Request asks the worker to run one action.
type Request struct {
	Type string `json:"type" jsonschema:"enum=request"`
	V    int    `json:"v"`
	// ID is chosen by the host, unique among the worker's requests in
	// flight.
	ID string `json:"id"`
	// DeadlineMS is when the host stops waiting, in milliseconds since the
	// Unix epoch.
	DeadlineMS int64 `json:"deadline_ms"`
	// Request is the document an exec-mode agent reads from its request file.
	Request *protocol.AgentRequest `json:"request"`
	// Facts are the node's facts, a JSON object.
	Facts json.RawMessage `json:"facts" jsonschema:"type=object"`
}

// Reply answers a Request, exactly once.
type Reply struct {
	Type string `json:"type" jsonschema:"enum=reply"`
	V    int    `json:"v"`
	ID   string `json:"id"`
	// Reply is what an exec-mode agent writes to its reply file.
	Reply json.RawMessage `json:"reply" jsonschema:"type=object"`
}

// Cancel says the host no longer wants a request's result; the worker
// still replies to it.
type Cancel struct {
	Type   string `json:"type" jsonschema:"enum=cancel"`
	V      int    `json:"v"`
	ID     string `json:"id"`
	Reason string `json:"reason"`
}

// Ping asks the worker for a Pong with the same ID.
type Ping struct {
	Type string `json:"type" jsonschema:"enum=ping"`
	V    int    `json:"v"`
	ID   string `json:"id"`
}

// Pong answers a Ping.
type Pong struct {
	Type string `json:"type" jsonschema:"enum=pong"`
	V    int    `json:"v"`
	ID   string `json:"id"`
}

// Shutdown asks the worker to finish its requests and exit within the
// grace.
type Shutdown struct {
	Type    string `json:"type" jsonschema:"enum=shutdown"`
	V       int    `json:"v"`
	Reason  string `json:"reason"`
	GraceMS int64  `json:"grace_ms"`
}

// Sentinel errors.
var (
	// ErrDocument is wrapped by every reason a line is not a document.
	ErrDocument = errors.New("worker: not a protocol document")
	// ErrTooLarge means a document exceeded the agreed limit.
	ErrTooLarge = errors.New("worker: document too large")
	// ErrEncoding means a document could not be encoded; nothing was
	// written.
	ErrEncoding = errors.New("worker: encoding a document")
)

// maxDepth bounds the nesting of a document: request data and replies
// nest, under the two levels of the document itself.
const maxDepth = protocol.MaxDataDepth + 4

// Decode reads one document: a Hello, Ready, Refuse, Request, Reply,
// Cancel, Ping, Pong or Shutdown, by its type. After the handshake, v must
// be the version agreed (0 before it: Hello and Refuse carry none).
func Decode(line []byte, v int) (any, error) {
	if err := protocol.CheckDepth(line, maxDepth); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDocument, err)
	}
	var head struct {
		Type string `json:"type"`
		V    int    `json:"v"`
	}
	if err := json.Unmarshal(line, &head); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDocument, err)
	}
	var doc any
	switch head.Type {
	case TypeHello:
		doc = &Hello{}
	case TypeRefuse:
		doc = &Refuse{}
	case TypeReady:
		doc = &Ready{}
	case TypeRequest:
		doc = &Request{}
	case TypeReply:
		doc = &Reply{}
	case TypeCancel:
		doc = &Cancel{}
	case TypePing:
		doc = &Ping{}
	case TypePong:
		doc = &Pong{}
	case TypeShutdown:
		doc = &Shutdown{}
	default:
		return nil, fmt.Errorf("%w: unknown type %q", ErrDocument, head.Type)
	}
	versioned := head.Type != TypeHello && head.Type != TypeRefuse && head.Type != TypeReady
	if versioned && head.V != v {
		return nil, fmt.Errorf("%w: a %s of version %d, not %d", ErrDocument, head.Type, head.V, v)
	}
	if err := json.Unmarshal(line, doc); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrDocument, head.Type, err)
	}
	return doc, nil
}
