package lifecycle

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
)

// The event types: Choria's, then agent-host's own.
const (
	Startup      = "startup"
	Shutdown     = "shutdown"
	Alive        = "alive"
	AgentChanged = "agent_changed"
	// The worker events: a pooled agent's long-lived worker started, was
	// retired to be replaced by a fresh one, or exited.
	WorkerStarted  = "worker_started"
	WorkerRecycled = "worker_recycled"
	WorkerExited   = "worker_exited"
)

// The CloudEvents sources and the prefixes of the types and protocols.
const (
	// ChoriaSource is Choria's CloudEvents source for its lifecycle events;
	// Choria's parsers recognise an event by it.
	ChoriaSource = "io.choria.lifecycle"
	// ChoriaProtocolPrefix prefixes Choria's types: io.choria.lifecycle.v1.startup.
	ChoriaProtocolPrefix = "io.choria.lifecycle.v1."
	// ChoriaSubjectPrefix is where Choria's events are published, followed
	// by <type>.<component>; Choria's viewers subscribe to
	// choria.lifecycle.event.>.
	ChoriaSubjectPrefix = "choria.lifecycle.event."

	// Source is agent-host's CloudEvents source for its own events, which
	// Choria's parsers do not take for theirs.
	Source = "io.agent-host.lifecycle"
	// ProtocolPrefix prefixes agent-host's types: io.agent-host.lifecycle.v1.agent_changed.
	ProtocolPrefix = "io.agent-host.lifecycle.v1."
	// SubjectPrefix is where agent-host's own events are published,
	// followed by <type>.<identity>: inside choria.lifecycle.>, which
	// Choria's brokers let servers publish and its event stream keeps, and
	// outside choria.lifecycle.event.>, which Choria's tools read.
	SubjectPrefix = "choria.lifecycle.agent_host."
)

// The changes an agent_changed event reports.
const (
	ChangeAdded   = "added"
	ChangeUpdated = "updated"
	ChangeRemoved = "removed"
)

// Basic holds the fields every event's data has, Choria's and ours.
type Basic struct {
	// Protocol is the event's type: io.choria.lifecycle.v1.<type> or
	// io.agent-host.lifecycle.v1.<type>.
	Protocol string `json:"protocol"`
	// ID is a fresh UUIDv4, the CloudEvent's id too.
	ID string `json:"id"`
	// Identity is the node's identity, the CloudEvent's subject.
	Identity string `json:"identity"`
	// Component is what sent it: server, as Choria's servers say.
	Component string `json:"component"`
	// Timestamp is when the event was made, in Unix seconds.
	Timestamp int64 `json:"timestamp"`
}

// StartupData is the data of a startup event.
type StartupData struct {
	Basic
	// Version is agent-host's version.
	Version string `json:"version"`
}

// AliveData is the data of an alive event.
type AliveData struct {
	Basic
	// Version is agent-host's version.
	Version string `json:"version"`
}

// ShutdownData is the data of a shutdown event.
type ShutdownData struct {
	Basic
}

// AgentChangedData is the data of an agent_changed event: one agent
// added, updated or removed while the host runs.
type AgentChangedData struct {
	Basic
	// Agent is the agent's name.
	Agent string `json:"agent"`
	// Change is added, updated or removed.
	Change string `json:"change" jsonschema:"enum=added,enum=updated,enum=removed"`
	// AgentVersion is the version in the agent's DDL; empty when removed.
	AgentVersion string `json:"agent_version,omitempty"`
	// Active says whether the node serves the agent, from its activation
	// check; false when removed.
	Active bool `json:"active"`
}

// WorkerData is the data of the worker events: worker_started,
// worker_recycled and worker_exited.
type WorkerData struct {
	Basic
	// Agent is the agent the worker serves.
	Agent string `json:"agent"`
	// Worker numbers the agent's workers from 0 since its pool started.
	Worker int `json:"worker"`
	// PID is the worker's process id; absent for a worker that did not start.
	PID int `json:"pid,omitempty"`
	// Reason says why a worker was recycled (max_requests, max_lifetime,
	// max_rss) or exited: the shutdown reason the host gave it (recycle,
	// idle, stop, reload, failed), or crashed, killed or start_failed.
	Reason string `json:"reason,omitempty" jsonschema:"enum=max_requests,enum=max_lifetime,enum=max_rss,enum=recycle,enum=idle,enum=stop,enum=reload,enum=failed,enum=crashed,enum=killed,enum=start_failed"`
	// Detail is how the process ended or why it was stopped, for people.
	Detail string `json:"detail,omitempty"`
	// SDK is what the worker said it was built with.
	SDK string `json:"sdk,omitempty"`
	// Protocol is the worker protocol version it speaks.
	Protocol int `json:"worker_protocol,omitempty"`
	// Concurrency is how many requests it runs at once.
	Concurrency int `json:"concurrency,omitempty"`
	// Served counts the requests it answered.
	Served int `json:"served"`
	// UptimeMS is how long it ran, in milliseconds.
	UptimeMS int64 `json:"uptime_ms"`
}

func newBasic(protocol, identity, component string, now time.Time) Basic {
	return Basic{
		Protocol:  protocol,
		ID:        uuid.NewString(),
		Identity:  identity,
		Component: component,
		Timestamp: now.Unix(),
	}
}

// encode renders data in the configured format: a CloudEvent in JSON
// structured mode whose id, subject and time repeat the data's, or the
// bare data document.
func encode(source string, b Basic, data any, legacy bool) ([]byte, error) {
	if legacy {
		return json.Marshal(data)
	}
	e := event.New(event.CloudEventsVersionV1)
	e.SetType(b.Protocol)
	e.SetSource(source)
	e.SetSubject(b.Identity)
	e.SetID(b.ID)
	e.SetTime(time.Unix(b.Timestamp, 0).UTC())
	if err := e.SetData(event.ApplicationJSON, data); err != nil {
		return nil, err
	}
	if err := e.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(e)
}

// ChoriaSubject is the subject Choria publishes an event of type t from component on.
func ChoriaSubject(t, component string) string {
	return ChoriaSubjectPrefix + t + "." + component
}

// AgentHostSubject is the subject agent-host publishes its own event of type t from identity on.
func AgentHostSubject(t, identity string) string {
	return SubjectPrefix + t + "." + identity
}

// Parsed is an event read back from the wire, either format.
type Parsed struct {
	// CloudEvent is set when the event came as a CloudEvent.
	CloudEvent *event.Event
	// Basic are the data's common fields.
	Basic
	// Data is the data document.
	Data json.RawMessage
}

// Type is the short type: startup, alive, agent_changed, ...
func (p *Parsed) Type() string {
	if t, ok := strings.CutPrefix(p.Protocol, ChoriaProtocolPrefix); ok {
		return t
	}
	if t, ok := strings.CutPrefix(p.Protocol, ProtocolPrefix); ok {
		return t
	}
	return p.Protocol
}

// Time is when the event was made.
func (p *Parsed) Time() time.Time { return time.Unix(p.Timestamp, 0) }

// Parse reads an event in either format: a CloudEvent (which it validates)
// or a bare data document with a protocol.
func Parse(b []byte) (*Parsed, error) {
	var probe struct {
		SpecVersion string `json:"specversion"`
		Protocol    string `json:"protocol"`
	}
	if err := json.Unmarshal(b, &probe); err != nil {
		return nil, fmt.Errorf("lifecycle: not a JSON event: %w", err)
	}
	p := &Parsed{Data: b}
	if probe.Protocol == "" && probe.SpecVersion != "" {
		e := event.New()
		if err := json.Unmarshal(b, &e); err != nil {
			return nil, fmt.Errorf("lifecycle: not a CloudEvent: %w", err)
		}
		if err := e.Validate(); err != nil {
			return nil, fmt.Errorf("lifecycle: invalid CloudEvent: %w", err)
		}
		p.CloudEvent, p.Data = &e, e.Data()
	}
	if err := json.Unmarshal(p.Data, &p.Basic); err != nil {
		return nil, fmt.Errorf("lifecycle: event data: %w", err)
	}
	if p.Protocol == "" {
		return nil, fmt.Errorf("lifecycle: event data has no protocol")
	}
	return p, nil
}
