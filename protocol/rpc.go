package protocol

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
)

// ErrInvalidRPCRequest wraps every reason an mcorpc request body is refused.
var ErrInvalidRPCRequest = errors.New("protocol: invalid rpc request")

// nameRe is the shape of agent and action names in Choria's schemas.
var nameRe = regexp.MustCompile(`^[a-z0-9_]+$`)

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
	var r RPCRequest
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidRPCRequest, err)
	}
	if !nameRe.MatchString(r.Agent) {
		return nil, fmt.Errorf("%w: agent %q is not a valid agent name", ErrInvalidRPCRequest, r.Agent)
	}
	if !nameRe.MatchString(r.Action) {
		return nil, fmt.Errorf("%w: action %q is not a valid action name", ErrInvalidRPCRequest, r.Action)
	}
	data, err := objectOrEmpty(r.Data)
	if err != nil {
		return nil, fmt.Errorf("%w: data: %v", ErrInvalidRPCRequest, err)
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

// objectOrEmpty accepts a JSON object, or nothing/null meaning {}.
func objectOrEmpty(raw json.RawMessage) (json.RawMessage, error) {
	raw = trimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return json.RawMessage("{}"), nil
	}
	if raw[0] != '{' {
		return nil, errors.New("must be a JSON object")
	}
	return raw, nil
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\n' || b[0] == '\r') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t' || b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
