package host

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/agent-host/agent-host/protocol"
	"github.com/agent-host/agent-host/protocol/ddl"
	"github.com/agent-host/agent-host/runner"
)

//go:embed rpcutil.json
var rpcutilDDL []byte

// newRPCUtil builds the rpcutil agent Choria clients rely on for ping,
// inventory and facts. It answers with Choria's field names.
func newRPCUtil(h *Host) (*agentEntry, error) {
	d, err := ddl.Parse(rpcutilDDL)
	if err != nil {
		return nil, fmt.Errorf("host: built-in rpcutil DDL: %w", err)
	}
	d.Metadata.Version = Version
	return &agentEntry{name: "rpcutil", ddl: d, run: runner.RunnerFunc(h.rpcutilAction), builtin: true}, nil
}

func (h *Host) rpcutilAction(_ context.Context, req *protocol.AgentRequest) (*protocol.AgentReply, error) {
	var data any
	var input struct {
		Fact  string `json:"fact"`
		Facts string `json:"facts"`
		Item  string `json:"item"`
	}
	if err := json.Unmarshal(req.Data, &input); err != nil {
		return failReply(protocol.InvalidData, "Could not parse request data: "+err.Error()), nil
	}
	table := h.agents.Load()
	facts, classes := h.inv.snapshot()

	switch req.Action {
	case "ping":
		data = map[string]int64{"pong": h.now().Unix()}
	case "collective_info":
		data = map[string]any{"main_collective": h.cfg.MainCollective, "collectives": h.cfg.Collectives}
	case "get_fact":
		data = map[string]any{"fact": input.Fact, "value": factValue(facts, input.Fact)}
	case "get_facts":
		values := map[string]any{}
		for _, f := range strings.Split(input.Facts, ",") {
			f = strings.TrimSpace(f)
			values[f] = factValue(facts, f)
		}
		data = map[string]any{"values": values}
	case "inventory":
		data = map[string]any{
			"agents":          table.names,
			"classes":         classes,
			"collectives":     h.cfg.Collectives,
			"data_plugins":    []string{},
			"facts":           facts,
			"machines":        []any{},
			"main_collective": h.cfg.MainCollective,
			"version":         Version,
			"upgradable":      false,
		}
	case "agent_inventory":
		data = map[string]any{"agents": agentInventory(table)}
	case "daemon_stats":
		data = h.daemonStats(table)
	case "get_config_item":
		value, ok := h.cfg.Lookup(input.Item)
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

// agentInventory lists the metadata of every RPC agent, in Choria's shape:
// {"agent": name, ...metadata}.
func agentInventory(table *agentTable) []map[string]any {
	out := []map[string]any{}
	for _, name := range table.names {
		var m ddl.Metadata
		if a := table.get(name); a != nil {
			m = a.ddl.Metadata
		} else {
			m = discoveryMetadata
		}
		entry := map[string]any{
			"agent": name, "license": m.License, "author": m.Author, "timeout": m.Timeout,
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

// discoveryMetadata describes the discovery agent, which has no DDL; Choria
// lists it in agent_inventory too.
var discoveryMetadata = ddl.Metadata{
	Name: discoveryAgent, Description: "Answers discovery pings", Author: "agent-host",
	License: "Apache-2.0", Version: Version, URL: "https://choria.io", Timeout: 2,
}

func (h *Host) daemonStats(table *agentTable) map[string]any {
	s := h.Stats()
	return map[string]any{
		"agents":      table.names,
		"configfile":  h.cfg.ConfigFile,
		"filtered":    s.Filtered,
		"passed":      s.Passed,
		"pid":         os.Getpid(),
		"replies":     s.Replies,
		"starttime":   h.started.Unix(),
		"threads":     []string{fmt.Sprintf("Go %s with %d go procs on %d cores", runtime.Version(), runtime.NumGoroutine(), runtime.NumCPU())},
		"times":       map[string]int{"cstime": 0, "cutime": 0, "stime": 0, "utime": 0},
		"total":       s.Total,
		"ttlexpired":  s.TTLExpired,
		"events":      0, // lifecycle events are not published yet
		"unvalidated": s.Unvalidated,
		"validated":   s.Validated,
		"dropped":     s.Dropped,
		"version":     Version,
	}
}

// BuiltinDDL returns the DDL of a built-in RPC agent, for clients that
// need it to type their inputs.
func BuiltinDDL(name string) (*ddl.DDL, bool) {
	if name != "rpcutil" {
		return nil, false
	}
	d, err := ddl.Parse(rpcutilDDL)
	return d, err == nil
}
