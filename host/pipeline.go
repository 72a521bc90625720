package host

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/agent-host/agent-host/host/builtin"
	"github.com/agent-host/agent-host/policy"
	"github.com/agent-host/agent-host/protocol"
	"github.com/agent-host/agent-host/protocol/filter"
	"github.com/agent-host/agent-host/protocol/security"
	v1 "github.com/agent-host/agent-host/protocol/v1"
	"github.com/agent-host/agent-host/runner"
)

// request is one decoded request on its way to an agent.
type request struct {
	transport *v1.Transport
	req       *v1.Request
	rpc       *protocol.RPCRequest
	agent     *agentEntry
	table     *agentTable // the agents served when it arrived
	size      int         // bytes it arrived as, counted against the queue
	queued    time.Time
	log       *slog.Logger
}

// handle runs every check of a received message, in Choria's order, on a
// decoder goroutine: decode, verify, filter, TTL, find the agent, parse
// the body. Built-in agents are answered here and then; requests for other
// agents are queued for a slot, or refused at once when the queue is full.
// It never waits for an agent.
func (h *Host) handle(msg *nats.Msg) {
	h.counters.total.Add(1)
	t, sreq, req, err := decodeRequest(msg.Data)
	if err != nil {
		h.counters.unvalidated.Add(1)
		if errors.Is(err, protocol.ErrTooDeep) {
			h.counters.tooDeep.Add(1)
		}
		if ok, suppressed := h.refusals.allow(time.Now()); ok {
			h.log.Warn("discarding a message that is not a Choria v1 request", "subject", msg.Subject, "bytes", len(msg.Data), "error", err, "suppressed_since_last", suppressed)
		}
		return
	}
	e := &req.Envelope
	log := h.log.With("requestid", e.RequestID, "agent", e.Agent, "callerid", e.CallerID)
	if err := h.verifier.Verify(sreq, req); err != nil {
		h.counters.unvalidated.Add(1)
		if ok, suppressed := h.refusals.allow(time.Now()); ok {
			log.Error("request failed security verification; not executed", "subject", msg.Subject, "error", err, "suppressed_since_last", suppressed)
		}
		return
	}

	table := h.agents.Load()
	matched, err := h.matcher.Match(e.Filter, h.node(table))
	if err != nil {
		h.counters.filterRefused.Add(1)
		if ok, suppressed := h.refusals.allow(time.Now()); ok {
			log.Warn("refusing a filter beyond the limits any Choria client stays within; the request selects nothing", "error", err, "suppressed_since_last", suppressed)
		}
	}
	if !matched {
		h.counters.filtered.Add(1)
		log.Debug("request does not match this node")
		return
	}
	h.counters.passed.Add(1)
	if err := h.checkTTL(e); err != nil {
		h.counters.ttlExpired.Add(1)
		if ok, suppressed := h.refusals.allow(time.Now()); ok {
			log.Warn("discarding expired request", "time", e.Time, "ttl", e.TTL, "error", err, "suppressed_since_last", suppressed)
		}
		return
	}
	h.counters.validated.Add(1)
	h.counters.lastMessage.Store(h.now().Unix())

	if t.Headers.ReplyTo == "" {
		log.Warn("request has no reply-to header; it will run but nobody can be answered")
	}
	if e.Agent == builtin.Discovery {
		if body, ok := builtin.DiscoveryReply(req.Body()); ok {
			h.reply(t, req, body, log)
			return
		}
		log.Debug("discovery request without ping; not answering")
		return
	}
	agent := table.get(e.Agent)
	if agent == nil {
		h.counters.unknownAgent.Add(1)
		if ok, suppressed := h.refusals.allow(time.Now()); ok {
			log.Error("request for an agent this node does not serve; discarding", "suppressed_since_last", suppressed)
		}
		return
	}
	// Only the headers of the transport are needed from here on, and the
	// filter has done its work.
	t.Data, e.Filter = nil, nil
	// A waiting request holds its parts decoded, about what it arrived as.
	r := &request{transport: t, req: req, agent: agent, table: table, size: msg.Size(), log: log}
	rpc, err := protocol.DecodeRPCRequest(req.Body())
	if err != nil {
		log.Warn("refusing a request whose body cannot be read", "error", err)
		h.replyRPC(r, protocol.NewRPCReply("").Fail(protocol.InvalidData, "Could not process request: "+err.Error()))
		return
	}
	r.rpc = rpc
	r.log = log.With("action", rpc.Action)

	// Built-in agents answer in microseconds and must keep answering
	// however busy the agents are, or the node would vanish from
	// discovery and monitoring under load.
	if agent.builtin {
		h.respond(h.reqCtx, r)
		return
	}
	if h.stopping.Load() {
		h.refuse(r, h.shuttingDownMessage())
		return
	}
	r.queued = h.now()
	if err := h.queue.push(r); err != nil {
		if errors.Is(err, errQueueClosed) {
			h.refuse(r, h.shuttingDownMessage())
			return
		}
		h.counters.busy.Add(1)
		if ok, suppressed := h.refusals.allow(time.Now()); ok {
			r.log.Warn("node is busy: refusing a request", "reason", err, "suppressed_since_last", suppressed)
		}
		h.refuse(r, fmt.Sprintf("%s is busy: %s; try again later", h.cfg.Identity, err))
	}
}

func decodeRequest(data []byte) (*v1.Transport, *v1.SecureRequest, *v1.Request, error) {
	t, err := v1.DecodeTransport(data)
	if err != nil {
		return nil, nil, nil, err
	}
	sreq, err := t.SecureRequest()
	if err != nil {
		return nil, nil, nil, err
	}
	req, err := sreq.Request()
	if err != nil {
		return nil, nil, nil, err
	}
	return t, sreq, req, nil
}

func (h *Host) node(table *agentTable) *filter.Node {
	facts, classes := h.inv.Snapshot()
	return &filter.Node{Identity: h.cfg.Identity, Facts: facts, Classes: classes, Agents: table.names}
}

// checkTTL applies Choria's TTL window, with the TTL cut to
// plugin.agent_host.max_ttl so that an ancient request with a huge TTL is
// not taken as current.
func (h *Host) checkTTL(e *v1.RequestEnvelope) error {
	clamped := *e
	clamped.TTL = int(min(int64(e.TTL), int64(h.cfg.MaxTTL/time.Second), math.MaxInt32))
	return security.CheckTTL(&clamped, h.now())
}

// runQueued runs a request that waited for a slot.
func (h *Host) runQueued(r *request) {
	// The wait may have outlasted the request's TTL; the caller has most
	// likely given up, but it is told if not.
	wait := h.now().Sub(r.queued)
	h.metrics.queueWait.WithLabelValues(r.agent.name).Observe(wait.Seconds())
	if err := h.checkTTL(&r.req.Envelope); err != nil {
		h.counters.expiredWaiting.Add(1)
		waited := wait.Round(time.Millisecond)
		r.log.Warn("a request expired while waiting for a slot; not running it", "waited", waited, "ttl", r.req.Envelope.TTL)
		h.refuse(r, fmt.Sprintf("%s is busy: the request expired after waiting %s for a free slot; try again later", h.cfg.Identity, waited))
		return
	}
	h.respond(h.reqCtx, r)
}

// respond runs the request and publishes its reply.
func (h *Host) respond(ctx context.Context, r *request) {
	start := time.Now()
	reply := h.handleRPC(ctx, r)
	elapsed := time.Since(start)
	h.metrics.duration.WithLabelValues(r.agent.name, actionLabel(r)).Observe(elapsed.Seconds())
	took := elapsed.Round(time.Microsecond)
	if reply.Statuscode == protocol.OK || reply.agentAnswered {
		r.log.Info("request handled", "statuscode", uint8(reply.Statuscode), "statusmsg", reply.Statusmsg, "duration", took)
	}
	h.replyRPC(r, reply.RPCReply)
}

// rpcOutcome is a reply and whether the agent itself chose its status
// (as opposed to the host refusing or failing the request, which
// handleRPC logs itself).
type rpcOutcome struct {
	*protocol.RPCReply
	agentAnswered bool
}

// handleRPC runs the SimpleRPC steps in Choria's order: find the action,
// authorize, audit, validate the inputs, run, apply output defaults.
// Every failure becomes a reply with Choria's status and text, and a log
// line.
func (h *Host) handleRPC(ctx context.Context, r *request) rpcOutcome {
	reply := protocol.NewRPCReply(r.rpc.Action)
	action := r.agent.ddl.Action(r.rpc.Action)
	if action == nil {
		r.log.Warn("request for an action the agent does not have")
		return rpcOutcome{RPCReply: reply.Fail(protocol.UnknownAction, fmt.Sprintf("Unknown action %s for agent %s", r.rpc.Action, r.agent.name))}
	}

	// As in Choria, authorization runs within the agent's time.
	timeout := time.Duration(r.agent.ddl.Metadata.Timeout) * time.Second
	runCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if !h.authorize(runCtx, r) {
		return rpcOutcome{RPCReply: reply.Fail(protocol.Aborted, "You are not authorized to call this agent or action")}
	}
	if h.audit != nil {
		h.audit.record(r)
	}

	if err := action.ValidateInputs(r.rpc.Data); err != nil {
		r.log.Warn("request failed input validation", "error", err)
		return rpcOutcome{RPCReply: reply.Fail(protocol.Aborted, "Validation failed: "+err.Error())}
	}

	areq := protocol.NewAgentRequest()
	areq.Agent, areq.Action, areq.Data = r.agent.name, r.rpc.Action, r.rpc.Data
	e := &r.req.Envelope
	areq.RequestID, areq.SenderID, areq.CallerID, areq.Collective, areq.TTL, areq.MsgTime = e.RequestID, e.SenderID, e.CallerID, e.Collective, e.TTL, e.Time
	areply, err := r.agent.run.Run(runCtx, areq)
	if err != nil {
		cause, msg := h.runFailure(r.agent.name, r.rpc.Action, timeout, err)
		h.metrics.failures.WithLabelValues(r.agent.name, cause).Inc()
		r.log.Error("agent failed", "error", err, "statusmsg", msg)
		return rpcOutcome{RPCReply: reply.Fail(protocol.Aborted, msg)}
	}
	data, err := action.SetOutputDefaults(areply.Data)
	if err != nil {
		h.metrics.failures.WithLabelValues(r.agent.name, causeReplyDefaults).Inc()
		r.log.Error("agent reply cannot take the DDL's output defaults", "error", err)
		return rpcOutcome{RPCReply: reply.Fail(protocol.Aborted, "Could not set reply defaults: "+err.Error())}
	}
	if areply.Action != "" {
		reply.Action = areply.Action
	}
	reply.Statuscode = areply.Statuscode
	reply.Statusmsg = areply.Statusmsg
	reply.Data = data
	return rpcOutcome{RPCReply: reply, agentAnswered: true}
}

// runFailure turns a runner error into the statusmsg the caller sees:
// Choria's text where Choria has one, and in every case what happened in
// the caller's terms, never a Go error or a path on the node. cause is
// the failure's kind, for agent_host_agent_failures_total.
func (h *Host) runFailure(agent, action string, timeout time.Duration, err error) (cause, msg string) {
	prefix := fmt.Sprintf("Could not call external agent %s#%s", agent, action)
	var exit *runner.ExitError
	var tooLarge *runner.ReplyTooLargeError
	switch {
	case errors.Is(err, protocol.ErrReplyDataFormat):
		return causeReplyFormat, "Could not set reply defaults: " + protocol.ErrReplyDataFormat.Error()
	case errors.Is(err, runner.ErrNoExecutable):
		return causeNoExecutable, fmt.Sprintf("Cannot call external agent %s#%s: %s", agent, action, runner.ErrNoExecutable)
	case errors.Is(err, runner.ErrTimeout):
		return causeTimeout, fmt.Sprintf("%s: timed out after %s, the agent was killed", prefix, timeout)
	case h.reqCtx.Err() != nil && errors.Is(err, context.Canceled):
		return causeShutdown, fmt.Sprintf("%s: %s is shutting down, the agent was killed", prefix, h.cfg.Identity)
	case errors.As(err, &tooLarge):
		return causeReplyTooLarge, fmt.Sprintf("%s: its reply of %d bytes is larger than the %d bytes allowed (plugin.agent_host.reply_max_bytes)", prefix, tooLarge.Size, tooLarge.Limit)
	case errors.As(err, &exit):
		return causeExit, fmt.Sprintf("%s: %s", prefix, exit)
	case errors.Is(err, runner.ErrWorkerDied):
		return causeWorkerDied, fmt.Sprintf("%s: %s", prefix, runner.Cause(err))
	}
	return causeOther, fmt.Sprintf("%s: %s", prefix, runner.Cause(err))
}

// authorize asks the authorizer whether r may run, unless authorization
// is off, and logs a denial as Choria does, with why and which policy
// file said so. A body naming another agent than the one addressed is
// denied, as in Choria.
func (h *Host) authorize(ctx context.Context, r *request) bool {
	if h.authzOff {
		return true
	}
	e := &r.req.Envelope
	var (
		decision policy.Decision
		err      error
	)
	if r.rpc.Agent != r.agent.name {
		err = fmt.Errorf("the request body names agent %s, not %s", r.rpc.Agent, r.agent.name)
	} else {
		decision, err = h.authz.Authorize(ctx, h.authzInput(r))
	}
	if err == nil && decision.Allowed {
		return true
	}
	reason := decision.Reason
	if err != nil {
		reason = err.Error()
	}
	h.metrics.denied.WithLabelValues(r.agent.name, r.rpc.Action).Inc()
	r.log.Warn(fmt.Sprintf("Denying %s access to %s#%s based on authorization policy for request %s", e.CallerID, r.agent.name, r.rpc.Action, e.RequestID),
		"reason", reason, "policy", decision.Policy)
	return false
}

func (h *Host) authzInput(r *request) *policy.Input {
	facts, classes := h.inv.Snapshot()
	e := &r.req.Envelope
	return &policy.Input{
		Agent:      e.Agent,
		Action:     r.rpc.Action,
		CallerID:   e.CallerID,
		Collective: e.Collective,
		Data:       r.rpc.Data,
		TTL:        e.TTL,
		Time:       time.Unix(e.Time, 0),
		Facts:      facts,
		Classes:    classes,
		Agents:     r.table.names,
	}
}
