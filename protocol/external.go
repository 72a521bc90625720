package protocol

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Identifiers of the Choria external-agent protocol (io.choria.mcorpc.external.v1).
// Agents written for Choria and for py-mco-agent key their behaviour on these.
const (
	AgentRequestProtocol      = "io.choria.mcorpc.external.v1.rpc_request"
	AgentRequestSchema        = "https://choria.io/schemas/mcorpc/external/v1/rpc_request.json"
	AgentReplyProtocol        = "io.choria.mcorpc.external.v1.rpc_reply"
	ActivationRequestProtocol = "io.choria.mcorpc.external.v1.activation_request"
	ActivationRequestSchema   = "https://choria.io/schemas/mcorpc/external/v1/activation_request.json"
	ActivationReplyProtocol   = "io.choria.mcorpc.external.v1.activation_reply"
)

var (
	// ErrInvalidAgentReply wraps every reason an agent's reply cannot be
	// decoded. Its text is Choria's, without a package prefix, because it
	// reaches the caller in the reply's statusmsg.
	ErrInvalidAgentReply = errors.New("failed to decode reply json")
	// ErrReplyDataFormat means the reply decoded but its data is absent or
	// not an object, which Choria refuses when applying output defaults.
	ErrReplyDataFormat = errors.New("reply data is in the wrong format")
)

// AgentRequest is the rpc_request document an external agent reads. The
// field order is the order Choria writes them in.
type AgentRequest struct {
	Schema     string `json:"$schema"`
	Protocol   string `json:"protocol" jsonschema:"enum=io.choria.mcorpc.external.v1.rpc_request"`
	Agent      string `json:"agent" jsonschema:"minLength=1,pattern=^[a-z0-9_]*$"`
	Action     string `json:"action" jsonschema:"minLength=1,pattern=^[a-z0-9_]*$"`
	RequestID  string `json:"requestid"`
	SenderID   string `json:"senderid"`
	CallerID   string `json:"callerid"`
	Collective string `json:"collective"`
	TTL        int    `json:"ttl"`
	// MsgTime is the Unix time, in seconds, at which the client created the request.
	MsgTime int64 `json:"msgtime"`
	// Data is the request's inputs exactly as the client sent them.
	Data json.RawMessage `json:"data" jsonschema:"type=object"`
}

// NewAgentRequest fills in the schema and protocol identifiers.
func NewAgentRequest() *AgentRequest {
	return &AgentRequest{Schema: AgentRequestSchema, Protocol: AgentRequestProtocol, Data: json.RawMessage("{}")}
}

// AgentReply is what an external agent writes back: a SimpleRPC reply
// without the envelope. Action, when present, overrides the reply's action.
type AgentReply struct {
	Action     string          `json:"action,omitempty"`
	Statuscode StatusCode      `json:"statuscode" jsonschema:"minimum=0,maximum=255"`
	Statusmsg  string          `json:"statusmsg"`
	Data       json.RawMessage `json:"data" jsonschema:"type=object"`
}

// DecodeAgentReply parses an agent's reply the way Choria does: missing
// statuscode means 0 and missing statusmsg means "OK". Choria refuses a
// reply whose data is absent or not an object ("reply data is in the wrong
// format"); null is accepted as {}.
func DecodeAgentReply(b []byte) (*AgentReply, error) {
	r := AgentReply{Statusmsg: "OK"}
	if err := CheckDepth(b, MaxDataDepth); err != nil {
		return nil, fmt.Errorf("%w: it nests JSON more than %d levels deep", ErrInvalidAgentReply, MaxDataDepth)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidAgentReply, err)
	}
	if r.Data == nil {
		return nil, ErrReplyDataFormat
	}
	data, ok := DataObject(r.Data)
	if !ok {
		return nil, ErrReplyDataFormat
	}
	r.Data = data
	return &r, nil
}

// PluginVersionsEnv is set in the activation check to the versions of
// agent-host's go-plugin service (protocol/grpcplugin) the host speaks,
// comma separated; PluginV1 is the first. An agent that can run as a
// plugin answers with ActivationReply.Plugin.
const (
	PluginVersionsEnv = "AGENT_HOST_PLUGIN_PROTOCOLS"
	PluginV1          = 1
)

// ActivationRequest asks an external agent whether it should be loaded on this node.
type ActivationRequest struct {
	Schema   string `json:"$schema"`
	Protocol string `json:"protocol" jsonschema:"enum=io.choria.mcorpc.external.v1.activation_request"`
	Agent    string `json:"agent" jsonschema:"pattern=^[a-z0-9_]*$"`
}

// NewActivationRequest builds the activation check document for agent.
func NewActivationRequest(agent string) *ActivationRequest {
	return &ActivationRequest{Schema: ActivationRequestSchema, Protocol: ActivationRequestProtocol, Agent: agent}
}

// ActivationReply is the agent's answer; a missing key means false.
type ActivationReply struct {
	Activate bool `json:"activate"`
	// Worker is set by an agent that can also run as a pool worker, when
	// the host asked (see PROTOCOL.md); Choria ignores it.
	Worker *WorkerAdvert `json:"agent_host_worker,omitempty"`
	// Plugin is set by an agent that can also run as a go-plugin plugin,
	// when the host asked (see PROTOCOL.md); Choria ignores it. Its
	// versions are those of the plugin's Agent service.
	Plugin *WorkerAdvert `json:"agent_host_plugin,omitempty"`
}

// WorkerAdvert lists the versions of agent-host's worker protocol (or of
// its go-plugin service) an agent speaks.
type WorkerAdvert struct {
	Versions []int `json:"versions"`
}
