// Command greeter is an example agent written with sdk-go. The same
// binary runs under Choria and under agent-host in exec mode, one process
// per request, and under agent-host as a pool of warm workers or of
// go-plugin plugins, with no configuration: its activation check tells
// agent-host it can.
//
// Install it as Choria's multi-arch layout: greeter.json beside a
// directory greeter/ holding greeter-<os>_<arch>.
package main

import (
	"context"
	"strings"

	"github.com/agent-host/agent-host/protocol"
	"github.com/agent-host/agent-host/sdk-go/agent"
)

func main() {
	a := agent.New("greeter", agent.WithConcurrency(8))

	// hello greets by name, with the "greeting" of the agent's
	// configuration file (plugin.d/greeter.cfg), and says where it runs.
	a.Action("hello", agent.Typed(func(ctx context.Context, req *agent.Request, in struct {
		Name string `json:"name"`
	}) (any, error) {
		if strings.TrimSpace(in.Name) == "" {
			return nil, agent.Fail(protocol.InvalidData, "name is empty")
		}
		cfg, err := req.Config()
		if err != nil {
			return nil, err
		}
		greeting := cfg["greeting"]
		if greeting == "" {
			greeting = "hello"
		}
		var facts struct {
			OS struct {
				Family string `json:"family"`
			} `json:"os"`
		}
		_ = req.DecodeFacts(&facts)
		return map[string]any{
			"greeting":  greeting + ", " + in.Name,
			"os_family": facts.OS.Family,
		}, nil
	}))

	a.Serve()
}
