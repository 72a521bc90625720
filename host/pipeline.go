package host

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/agent-host/agent-host/host/filter"
	"github.com/agent-host/agent-host/host/security"
	"github.com/agent-host/agent-host/policy"
	"github.com/agent-host/agent-host/protocol"
	v1 "github.com/agent-host/agent-host/protocol/v1"
	"github.com/agent-host/agent-host/runner"
)

// handle is the NATS callback for every subscription. It does the cheap
// checks inline and hands the request to a goroutine once a slot in the
// in-flight bound is free. Blocking here while every slot is busy is
// deliberate back-pressure: messages then wait in the subscription's
// bounded pending buffer, and overflow is counted and logged as dropped.
func (h *Host) handle(msg *nats.Msg) {
	h.counters.total.Add(1)
	t, sreq, req, err := decodeRequest(msg.Data)
	if err != nil {
		h.counters.unvalidated.Add(1)
		if ok, suppressed := h.refusals.allow(time.Now()); ok {
			h.log.Warn("discarding a message that is not a Choria v1 request", "subject", msg.Subject, "bytes", len(msg.Data), "error", err, "suppressed_since_last", suppressed)
		}
		return
	}
	log := h.log.With("requestid", req.Envelope.RequestID, "agent", req.Envelope.Agent, "callerid", req.Envelope.CallerID)
	if err := h.verifier.Verify(sreq, req); err != nil {
		h.counters.unvalidated.Add(1)
		if ok, suppressed := h.refusals.allow(time.Now()); ok {
			log.Error("request failed security verification; not executed", "subject", msg.Subject, "error", err, "suppressed_since_last", suppressed)
		}
		return
	}
	h.counters.validated.Add(1)
	if err := security.CheckTTL(&req.Envelope, h.now()); err != nil {
		h.counters.ttlExpired.Add(1)
		log.Warn("discarding expired request", "time", req.Envelope.Time, "ttl", req.Envelope.TTL, "error", err)
		return
	}
	table := h.agents.Load()
	matched, err := h.matcher.Match(req.Envelope.Filter, h.node(table))
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
	if req.Envelope.Agent != discoveryAgent && table.get(req.Envelope.Agent) == nil {
		h.counters.unknownAgent.Add(1)
		log.Error("request for an agent this node does not serve; discarding")
		return
	}
	replyTo := t.Headers.ReplyTo
	if replyTo == "" {
		log.Warn("request has no reply-to header; it will run but nobody can be answered")
	}
	respond := func() {
		body, ok := h.dispatch(h.reqCtx, table, req, log)
		if ok && replyTo != "" {
			h.reply(req, replyTo, body, log)
		}
	}

	// Built-in agents answer in microseconds and must keep answering when
	// every slot is busy with slow agents, or the node would vanish from
	// discovery under load; they run inline.
	if req.Envelope.Agent == discoveryAgent || table.get(req.Envelope.Agent).builtin {
		respond()
		return
	}

	select {
	case <-h.stopping:
		log.Warn("shutting down: abandoning a request not yet started")
		return
	default:
	}
	select {
	case h.slots <- struct{}{}:
	case <-h.stopping:
		log.Warn("shutting down: abandoning a request not yet started")
		return
	}
	// The wait for a slot may have outlasted the request's TTL.
	if err := security.CheckTTL(&req.Envelope, h.now()); err != nil {
		<-h.slots
		h.counters.ttlExpired.Add(1)
		log.Warn("discarding a request that expired while waiting for an in-flight slot", "ttl", req.Envelope.TTL, "error", err)
		return
	}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		defer func() { <-h.slots }()
		respond()
	}()
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
	facts, classes := h.inv.snapshot()
	return &filter.Node{Identity: h.cfg.Identity, Facts: facts, Classes: classes, Agents: table.names}
}

// dispatch produces the reply body for a request; ok is false when no
// reply is due (discovery requests other than ping).
func (h *Host) dispatch(ctx context.Context, table *agentTable, req *v1.Request, log *slog.Logger) (body []byte, ok bool) {
	if req.Envelope.Agent == discoveryAgent {
		if bytes.Contains(req.Body(), []byte("ping")) {
			return []byte("pong"), true
		}
		log.Debug("discovery request without ping; not answering")
		return nil, false
	}
	start := time.Now()
	reply := h.handleRPC(ctx, table, table.get(req.Envelope.Agent), req)
	body, err := json.Marshal(reply)
	if err != nil {
		// Only an agent's invalid data can get here; the runner decoded it, so this is a bug.
		log.Error("encoding reply", "error", err)
		body, _ = json.Marshal(protocol.NewRPCReply(reply.Action).Fail(protocol.Aborted, "Could not encode the reply"))
	}
	log.Info("request handled", "action", reply.Action, "statuscode", uint8(reply.Statuscode), "statusmsg", reply.Statusmsg, "duration", time.Since(start).Round(time.Microsecond))
	return body, true
}

// handleRPC runs the SimpleRPC steps in Choria's order: parse the body,
// find the action, authorize, validate the inputs, run, apply output
// defaults. Every failure becomes a reply with Choria's status and text.
func (h *Host) handleRPC(ctx context.Context, table *agentTable, agent *agentEntry, req *v1.Request) *protocol.RPCReply {
	rpc, err := protocol.DecodeRPCRequest(req.Body())
	if err != nil {
		return protocol.NewRPCReply("").Fail(protocol.InvalidData, "Could not process request: "+err.Error())
	}
	reply := protocol.NewRPCReply(rpc.Action)
	action := agent.ddl.Action(rpc.Action)
	if action == nil {
		return reply.Fail(protocol.UnknownAction, fmt.Sprintf("Unknown action %s for agent %s", rpc.Action, agent.name))
	}

	in := h.authzInput(table, req, rpc)
	decision, err := h.authz.Authorize(ctx, in)
	if err != nil || !decision.Allowed {
		h.log.Warn("denying request based on authorization policy", "callerid", req.Envelope.CallerID, "agent", agent.name, "action", rpc.Action, "requestid", req.Envelope.RequestID, "reason", decision.Reason, "error", err)
		return reply.Fail(protocol.Aborted, "You are not authorized to call this agent or action")
	}

	if err := action.ValidateInputs(rpc.Data); err != nil {
		return reply.Fail(protocol.Aborted, "Validation failed: "+err.Error())
	}

	timeout := time.Duration(agent.ddl.Metadata.Timeout) * time.Second
	runCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	areq := protocol.NewAgentRequest()
	areq.Agent, areq.Action, areq.Data = agent.name, rpc.Action, rpc.Data
	e := &req.Envelope
	areq.RequestID, areq.SenderID, areq.CallerID, areq.Collective, areq.TTL, areq.MsgTime = e.RequestID, e.SenderID, e.CallerID, e.Collective, e.TTL, e.Time
	areply, err := agent.run.Run(runCtx, areq)
	if err != nil {
		return reply.Fail(protocol.Aborted, runFailure(agent.name, rpc.Action, timeout, err))
	}
	data, err := action.SetOutputDefaults(areply.Data)
	if err != nil {
		return reply.Fail(protocol.Aborted, "Could not set reply defaults: "+err.Error())
	}
	if areply.Action != "" {
		reply.Action = areply.Action
	}
	reply.Statuscode = areply.Statuscode
	reply.Statusmsg = areply.Statusmsg
	reply.Data = data
	return reply
}

// runFailure turns a runner error into Choria's statusmsg for it.
func runFailure(agent, action string, timeout time.Duration, err error) string {
	switch {
	case errors.Is(err, protocol.ErrReplyDataFormat):
		return "Could not set reply defaults: " + protocol.ErrReplyDataFormat.Error()
	case errors.Is(err, runner.ErrNoExecutable):
		return fmt.Sprintf("Cannot call external agent %s#%s: %s", agent, action, runner.ErrNoExecutable)
	case errors.Is(err, runner.ErrTimeout):
		return fmt.Sprintf("Could not call external agent %s#%s: timed out after %s, the agent was killed", agent, action, timeout)
	case errors.Is(err, runner.ErrReplyTooLarge):
		return fmt.Sprintf("Could not call external agent %s#%s: the reply is larger than the host accepts", agent, action)
	}
	return fmt.Sprintf("Could not call external agent %s#%s: %s", agent, action, err)
}

func (h *Host) authzInput(table *agentTable, req *v1.Request, rpc *protocol.RPCRequest) *policy.Input {
	facts, classes := h.inv.snapshot()
	return &policy.Input{
		Agent:      req.Envelope.Agent,
		Action:     rpc.Action,
		CallerID:   req.Envelope.CallerID,
		Collective: req.Envelope.Collective,
		Data:       rpc.Data,
		TTL:        req.Envelope.TTL,
		Time:       time.Unix(req.Envelope.Time, 0),
		Facts:      facts,
		Classes:    classes,
		Agents:     table.names,
	}
}

// reply wraps and publishes a reply body. A body too large for the broker
// is replaced by an error reply, so the caller learns why.
func (h *Host) reply(req *v1.Request, replyTo string, body []byte, log *slog.Logger) {
	payload, err := v1.EncodeReply(req, h.cfg.Identity, h.now().Unix(), body)
	if err == nil && int64(len(payload)) > h.nc.MaxPayload() {
		log.Error("reply exceeds the broker's maximum payload; sending an error instead", "bytes", len(payload), "max", h.nc.MaxPayload())
		var orig struct {
			Action string `json:"action"`
		}
		_ = json.Unmarshal(body, &orig)
		small, _ := json.Marshal(protocol.NewRPCReply(orig.Action).Fail(protocol.Aborted, fmt.Sprintf("Reply of %d bytes exceeds the broker's limit of %d bytes", len(payload), h.nc.MaxPayload())))
		payload, err = v1.EncodeReply(req, h.cfg.Identity, h.now().Unix(), small)
	}
	if err != nil {
		h.counters.replyFailed.Add(1)
		log.Error("encoding reply", "error", err)
		return
	}
	if err := h.nc.Publish(replyTo, payload); err != nil {
		h.counters.replyFailed.Add(1)
		log.Error("publishing reply", "subject", replyTo, "error", err)
		return
	}
	h.counters.replies.Add(1)
}
