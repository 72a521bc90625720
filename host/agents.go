package host

import (
	"slices"

	"github.com/agent-host/agent-host/host/builtin"
	"github.com/agent-host/agent-host/protocol/ddl"
	"github.com/agent-host/agent-host/runner"
)

// agentEntry is one RPC agent the host serves.
type agentEntry struct {
	name string
	ddl  *ddl.DDL
	run  runner.Runner
	// builtin agents run at once on the decoder, never queued.
	builtin bool
}

// agentTable is an immutable snapshot of the served agents, swapped
// atomically on reload so requests never take a lock to find their agent.
type agentTable struct {
	byName map[string]*agentEntry
	// names are every agent a filter or rpcutil sees, discovery included, sorted.
	names []string
}

func (t *agentTable) get(name string) *agentEntry { return t.byName[name] }

// builtinAgents lists the agents for rpcutil, discovery included.
func (t *agentTable) builtinAgents() []builtin.Agent {
	out := make([]builtin.Agent, 0, len(t.names))
	for _, name := range t.names {
		m := builtin.DiscoveryMetadata(Version)
		if a := t.get(name); a != nil {
			m = a.ddl.Metadata
		}
		out = append(out, builtin.Agent{Name: name, Metadata: m})
	}
	return out
}

// runnerFor chooses how an external agent runs. Every agent is spawned per
// request for now; pooled workers and plugin agents will be chosen here.
func (h *Host) runnerFor(a *runner.Agent) runner.Runner {
	return h.spawner.Runner(a.Executable)
}

// buildTable combines the built-ins with the catalog's active agents.
func (h *Host) buildTable() *agentTable {
	t := &agentTable{byName: map[string]*agentEntry{h.rpcutil.name: h.rpcutil}}
	for _, a := range h.catalog.Agents() {
		if !a.Active {
			continue
		}
		if _, taken := t.byName[a.Name]; taken || a.Name == builtin.Discovery {
			continue
		}
		t.byName[a.Name] = &agentEntry{name: a.Name, ddl: a.DDL, run: h.runnerFor(a)}
	}
	t.names = append(t.names, builtin.Discovery)
	for name := range t.byName {
		t.names = append(t.names, name)
	}
	slices.Sort(t.names)
	return t
}
