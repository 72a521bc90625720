package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
)

// ErrInvalidRPCRequest matches every reason an mcorpc request body is refused.
var ErrInvalidRPCRequest = errors.New("protocol: invalid rpc request")

// RPCRequestError says why a SimpleRPC body was refused. Its text is what
// the caller sees after "Could not process request: ", so it carries no
// package prefix; it matches ErrInvalidRPCRequest.
type RPCRequestError struct {
	Reason string
	err    error // the cause, such as ErrTooDeep, when there is one
}

func (e *RPCRequestError) Error() string { return e.Reason }

// Is makes errors.Is(err, ErrInvalidRPCRequest) hold.
func (e *RPCRequestError) Is(target error) bool { return target == ErrInvalidRPCRequest }

// Unwrap returns the cause, such as ErrTooDeep.
func (e *RPCRequestError) Unwrap() error { return e.err }

// nameRe is the shape of agent and action names in Choria's schemas.
var nameRe = regexp.MustCompile(`^[a-z0-9_]+$`)

// ValidName reports whether s can name an agent or action: lowercase
// letters, digits and underscores. Agent names become NATS subject tokens
// and file names, so nothing else may pass.
func ValidName(s string) bool { return nameRe.MatchString(s) }

// RPCRequest is the SimpleRPC body a client puts in a Choria request
// message: {"agent":..,"action":..,"data":{..}}.
type RPCRequest struct {
	Agent  string          `json:"agent" jsonschema:"pattern=^[a-z0-9_]+$"`
	Action string          `json:"action" jsonschema:"pattern=^[a-z0-9_]+$"`
	Data   json.RawMessage `json:"data,omitempty" jsonschema:"type=object"`
}

// DecodeRPCRequest parses a SimpleRPC request body. Data is normalised to
// a JSON object ({} when absent or null); any other JSON type is refused.
func DecodeRPCRequest(body []byte) (*RPCRequest, error) {
	if err := CheckDepth(body, MaxDataDepth); err != nil {
		return nil, &RPCRequestError{Reason: fmt.Sprintf("the request nests JSON more than %d levels deep", MaxDataDepth), err: err}
	}
	var r RPCRequest
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, &RPCRequestError{Reason: err.Error()}
	}
	if !nameRe.MatchString(r.Agent) {
		return nil, &RPCRequestError{Reason: fmt.Sprintf("agent %q is not a valid agent name", r.Agent)}
	}
	if !nameRe.MatchString(r.Action) {
		return nil, &RPCRequestError{Reason: fmt.Sprintf("action %q is not a valid action name", r.Action)}
	}
	data, ok := DataObject(r.Data)
	if !ok {
		return nil, &RPCRequestError{Reason: "data must be a JSON object"}
	}
	r.Data = data
	return &r, nil
}

// RPCReply is the SimpleRPC reply body: exactly the four keys the Choria
// client reads, in the order the reference server writes them.
type RPCReply struct {
	Action     string          `json:"action"`
	Statuscode StatusCode      `json:"statuscode" jsonschema:"minimum=0,maximum=255"`
	Statusmsg  string          `json:"statusmsg"`
	Data       json.RawMessage `json:"data" jsonschema:"type=object"`
}

// NewRPCReply returns a successful reply with Choria's defaults.
func NewRPCReply(action string) *RPCReply {
	return &RPCReply{Action: action, Statuscode: OK, Statusmsg: "OK", Data: json.RawMessage("{}")}
}

// Fail sets a failure code and message and empties data, as Choria does
// for host-side failures.
func (r *RPCReply) Fail(code StatusCode, msg string) *RPCReply {
	r.Statuscode = code
	r.Statusmsg = msg
	r.Data = json.RawMessage("{}")
	return r
}

// DataObject normalises request or reply data the way Choria reads it:
// nothing or null is {}, an object is kept as is, and ok is false for any
// other JSON value. It does not check that the object is well formed.
func DataObject(raw json.RawMessage) (data json.RawMessage, ok bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return json.RawMessage("{}"), true
	}
	return raw, raw[0] == '{'
}

// DecodeRPCReply parses a SimpleRPC reply body, as a client reads a
// node's answer.
func DecodeRPCReply(body []byte) (*RPCReply, error) {
	if err := CheckDepth(body, MaxDataDepth); err != nil {
		return nil, err
	}
	var r RPCReply
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("protocol: decoding rpc reply: %w", err)
	}
	return &r, nil
}
