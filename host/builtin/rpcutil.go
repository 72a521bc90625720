// Package builtin holds the agents every Choria server provides itself:
// discovery, which answers the pings behind `choria ping`, `choria
// discover` and broadcast discovery, rpcutil, which answers ping,
// inventory, facts, configuration and statistics with Choria's field
// names, and choria_util, which says how the node is connected.
// They run inside the host and answer in microseconds.
package builtin

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/tidwall/gjson"

	"github.com/agent-host/agent-host/host/config"
	"github.com/agent-host/agent-host/protocol"
	"github.com/agent-host/agent-host/protocol/ddl"
	"github.com/agent-host/agent-host/protocol/filter"
	"github.com/agent-host/agent-host/runner"
)

// Names of the built-in agents.
const (
	Discovery = "discovery"
	RPCUtil   = "rpcutil"
)

//go:embed rpcutil.json
var rpcutilDDL []byte

// Agent is one agent the node serves, as rpcutil lists it.
type Agent struct {
	Name     string
	Metadata ddl.Metadata
}

// Stats are the request counters rpcutil daemon_stats reports.
type Stats struct {
	Total, Validated, Unvalidated, Filtered, Passed, TTLExpired, Replies, Dropped int64
}

// Node is what the built-in agents report about the node they serve.
// Every field is required.
type Node struct {
	Config  *config.Config
	Version string
	Started time.Time
	Now     func() time.Time
	// Inventory returns the node's facts (a JSON object) and sorted classes.
	Inventory func() (json.RawMessage, []string)
	// Agents returns every agent served, discovery and rpcutil included,
	// sorted by name.
	Agents func() []Agent
	Stats  func() Stats
	// Connection describes the broker connection, for choria_util.
	Connection func() Connection
}

// NewRPCUtil returns the rpcutil agent for node and its DDL, whose
// version is node.Version.
func NewRPCUtil(node Node) (runner.Runner, *ddl.DDL, error) {
	d, err := ddl.Parse(rpcutilDDL)
	if err != nil {
		return nil, nil, fmt.Errorf("builtin: rpcutil DDL: %w", err)
	}
	d.Metadata.Version = node.Version
	return runner.RunnerFunc(node.rpcutil), d, nil
}

// DDL returns the DDL of a built-in RPC agent, for clients that need it to
// type their inputs.
func DDL(name string) (*ddl.DDL, bool) {
	var b []byte
	switch name {
	case RPCUtil:
		b = rpcutilDDL
	case ChoriaUtil:
		b = choriaUtilDDL
	default:
		return nil, false
	}
	d, err := ddl.Parse(b)
	return d, err == nil
}

// DiscoveryReply answers a discovery request body: "pong" to anything
// that mentions ping, as Choria does; ok is false when no reply is due.
func DiscoveryReply(body []byte) (reply []byte, ok bool) {
	if bytes.Contains(body, []byte("ping")) {
		return []byte("pong"), true
	}
	return nil, false
}

// DiscoveryMetadata describes the discovery agent, which has no DDL;
// Choria lists it in agent_inventory too.
func DiscoveryMetadata(version string) ddl.Metadata {
	return ddl.Metadata{
		Name: Discovery, Description: "Answers discovery pings", Author: "agent-host",
		License: "Apache-2.0", Version: version, URL: "https://choria.io", Timeout: 2,
	}
}

func (n Node) rpcutil(_ context.Context, req *protocol.AgentRequest) (*protocol.AgentReply, error) {
	var input struct {
		Fact  string `json:"fact"`
		Facts string `json:"facts"`
		Item  string `json:"item"`
	}
	if err := json.Unmarshal(req.Data, &input); err != nil {
		return failReply(protocol.InvalidData, "Could not parse request data: "+err.Error()), nil
	}

	var data any
	switch req.Action {
	case "ping":
		data = map[string]int64{"pong": n.Now().Unix()}
	case "collective_info":
		data = map[string]any{"main_collective": n.Config.MainCollective, "collectives": n.Config.Collectives}
	case "get_fact":
		if err := filter.CheckFactPath(input.Fact); err != nil {
			return failReply(protocol.Aborted, factPathRefused), nil
		}
		facts, _ := n.Inventory()
		data = map[string]any{"fact": input.Fact, "value": factValue(facts, input.Fact)}
	case "get_facts":
		names := strings.Split(input.Facts, ",")
		if len(names) > maxFacts {
			return failReply(protocol.Aborted, fmt.Sprintf("Cannot look up %d facts at once; the most is %d", len(names), maxFacts)), nil
		}
		facts, _ := n.Inventory()
		values := map[string]any{}
		for _, f := range names {
			f = strings.TrimSpace(f)
			if err := filter.CheckFactPath(f); err != nil {
				return failReply(protocol.Aborted, factPathRefused), nil
			}
			values[f] = factValue(facts, f)
		}
		data = map[string]any{"values": values}
	case "inventory":
		facts, classes := n.Inventory()
		data = map[string]any{
			"agents":          names(n.Agents()),
			"classes":         classes,
			"collectives":     n.Config.Collectives,
			"data_plugins":    []string{},
			"facts":           facts,
			"machines":        []any{},
			"main_collective": n.Config.MainCollective,
			"version":         n.Version,
			"upgradable":      false,
		}
	case "agent_inventory":
		data = map[string]any{"agents": agentInventory(n.Agents())}
	case "daemon_stats":
		data = n.daemonStats()
	case "get_config_item":
		value, ok := n.Config.Lookup(input.Item)
		if !ok {
			return failReply(protocol.Aborted, "Unknown key"), nil
		}
		data = map[string]any{"item": input.Item, "value": value}
	case "get_data":
		return failReply(protocol.Aborted, "Unknown data plugin"), nil
	default:
		return failReply(protocol.UnknownAction, fmt.Sprintf("Unknown action %s for agent rpcutil", req.Action)), nil
	}

	b, err := json.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("encoding rpcutil %s reply: %w", req.Action, err)
	}
	return &protocol.AgentReply{Statuscode: protocol.OK, Statusmsg: "OK", Data: b}, nil
}

// factPathRefused answers a fact path filter.CheckFactPath refuses.
const factPathRefused = "Cannot look up the fact: its path is longer (1 KiB), more deeply nested (8 brackets) or uses more of gjson's syntax (modifiers, pipes) than agent-host allows"

// maxFacts bounds the facts one get_facts request looks up: each lookup
// reads the whole facts document.
const maxFacts = 256

func failReply(code protocol.StatusCode, msg string) *protocol.AgentReply {
	return &protocol.AgentReply{Statuscode: code, Statusmsg: msg, Data: json.RawMessage("{}")}
}

// factValue looks a fact up by gjson path, as Choria does; nil when absent.
func factValue(facts json.RawMessage, path string) any {
	r := gjson.GetBytes(facts, path)
	if !r.Exists() {
		return nil
	}
	return r.Value()
}

func names(agents []Agent) []string {
	out := make([]string, len(agents))
	for i, a := range agents {
		out[i] = a.Name
	}
	return out
}

// agentInventory lists the metadata of every agent in Choria's shape:
// {"agent": name, ...metadata}.
func agentInventory(agents []Agent) []map[string]any {
	out := []map[string]any{}
	for _, a := range agents {
		m := a.Metadata
		entry := map[string]any{
			"agent": a.Name, "license": m.License, "author": m.Author, "timeout": m.Timeout,
			"name": m.Name, "version": m.Version, "url": m.URL, "description": m.Description,
		}
		if m.Provider != "" {
			entry["provider"] = m.Provider
		}
		if m.Service {
			entry["service"] = true
		}
		out = append(out, entry)
	}
	return out
}

func (n Node) daemonStats() map[string]any {
	s := n.Stats()
	return map[string]any{
		"agents":      names(n.Agents()),
		"configfile":  n.Config.ConfigFile,
		"filtered":    s.Filtered,
		"passed":      s.Passed,
		"pid":         os.Getpid(),
		"replies":     s.Replies,
		"starttime":   n.Started.Unix(),
		"threads":     []string{fmt.Sprintf("Go %s with %d go procs on %d cores", runtime.Version(), runtime.NumGoroutine(), runtime.NumCPU())},
		"times":       map[string]int{"cstime": 0, "cutime": 0, "stime": 0, "utime": 0},
		"total":       s.Total,
		"ttlexpired":  s.TTLExpired,
		"events":      0, // lifecycle events are not published yet
		"unvalidated": s.Unvalidated,
		"validated":   s.Validated,
		"dropped":     s.Dropped,
		"version":     n.Version,
	}
}
