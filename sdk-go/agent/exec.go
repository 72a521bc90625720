package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/agent-host/agent-host/protocol"
	gp "github.com/agent-host/agent-host/protocol/grpcplugin"
	wp "github.com/agent-host/agent-host/protocol/worker"
)

// serveExec runs one request under Choria's file protocol: the request
// file, the reply file and the facts file named in the environment.
func (a *Agent) serveExec(ctx context.Context) error {
	reqFile := os.Getenv("CHORIA_EXTERNAL_REQUEST")
	replyFile := os.Getenv("CHORIA_EXTERNAL_REPLY")
	if len(os.Args) >= 3 {
		// Choria passes both on the command line too.
		reqFile, replyFile = os.Args[1], os.Args[2]
	}
	switch p := os.Getenv("CHORIA_EXTERNAL_PROTOCOL"); p {
	case protocol.ActivationRequestProtocol:
		active := true
		if a.activate != nil {
			var err error
			if active, err = a.activate(ctx, json.RawMessage("{}")); err != nil {
				return fmt.Errorf("activation check: %w", err)
			}
		}
		rep := protocol.ActivationReply{Activate: active}
		if offered(wp.V1) {
			// agent-host asks: this agent can run as a pool worker.
			rep.Worker = &protocol.WorkerAdvert{Versions: []int{wp.V1}}
		}
		if pluginOffered(gp.V1) {
			// And as a go-plugin plugin, which agent-host prefers.
			rep.Plugin = &protocol.WorkerAdvert{Versions: []int{gp.V1}}
		}
		return writeJSON(replyFile, rep)
	case protocol.AgentRequestProtocol:
		b, err := os.ReadFile(reqFile)
		if err != nil {
			return fmt.Errorf("reading the request: %w", err)
		}
		var doc protocol.AgentRequest
		if err := json.Unmarshal(b, &doc); err != nil {
			return fmt.Errorf("decoding the request: %w", err)
		}
		facts, _ := os.ReadFile(os.Getenv("CHORIA_EXTERNAL_FACTS"))
		if !json.Valid(facts) {
			facts = nil
		}
		rep := a.run(ctx, requestOf(&doc, facts, os.Getenv("CHORIA_EXTERNAL_CONFIG")))
		return writeJSON(replyFile, rep)
	default:
		return fmt.Errorf("unknown protocol %q", p)
	}
}

func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}
