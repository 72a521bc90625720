package host

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/agent-host/agent-host/protocol"
	v1 "github.com/agent-host/agent-host/protocol/v1"
)

// replyRPC encodes a SimpleRPC reply and publishes it.
func (h *Host) replyRPC(r *request, reply *protocol.RPCReply) {
	h.metrics.answered(r, reply.Statuscode)
	body, err := json.Marshal(reply)
	if err != nil {
		// Only an agent's invalid data can get here; the runner decoded it, so this is a bug.
		r.log.Error("encoding reply", "error", err)
		body, _ = json.Marshal(protocol.NewRPCReply(reply.Action).Fail(protocol.Aborted, "Could not encode the reply"))
	}
	h.reply(r.transport, r.req, body, r.log)
}

// refuse answers a request that will not run, with statuscode 1 and msg.
func (h *Host) refuse(r *request, msg string) {
	action := ""
	if r.rpc != nil {
		action = r.rpc.Action
	}
	h.counters.refusedReplies.Add(1)
	h.replyRPC(r, protocol.NewRPCReply(action).Fail(protocol.Aborted, msg))
}

func (h *Host) shuttingDownMessage() string {
	return h.cfg.Identity + " is shutting down; the request was not run"
}

// reply wraps a reply body and publishes it on the request's reply-to,
// with Choria's headers (federation routing included). A reply too large
// for the broker is replaced by an error reply saying so, so that the
// caller learns why.
func (h *Host) reply(t *v1.Transport, req *v1.Request, body []byte, log *slog.Logger) {
	replyTo := t.Headers.ReplyTo
	if replyTo == "" {
		return
	}
	headers := v1.ReplyHeaders(t, h.cfg.Identity, h.nc.ConnectedUrlRedacted())
	payload, err := v1.EncodeReply(req, headers, h.now().Unix(), body)
	if limit := h.nc.MaxPayload(); err == nil && int64(len(payload)) > limit {
		log.Error("reply exceeds the broker's maximum payload; sending an error instead", "bytes", len(payload), "max_payload", limit)
		var orig struct {
			Action string `json:"action"`
		}
		_ = json.Unmarshal(body, &orig)
		small, _ := json.Marshal(protocol.NewRPCReply(orig.Action).Fail(protocol.Aborted, fmt.Sprintf("The reply of %d bytes is larger than the %d bytes the broker accepts (its max_payload setting)", len(payload), limit)))
		payload, err = v1.EncodeReply(req, headers, h.now().Unix(), small)
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

// dropped is told about a message the intake had no room for. It cannot
// be answered: it has not been decoded, so it may not even be a request.
func (h *Host) dropped(msg *nats.Msg) {
	h.counters.pendingDropped.Add(1)
	if ok, suppressed := h.refusals.allow(time.Now()); ok {
		h.log.Error("requests dropped: more are waiting to be decoded than plugin.agent_host.pending_limit or pending_bytes allow", "subject", msg.Subject, "bytes", len(msg.Data), "suppressed_since_last", suppressed)
	}
}
