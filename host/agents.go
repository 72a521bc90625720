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
	// capacity, when set, bounds the requests of the agent that may hold
	// slots: what its pool can run at once (0: no bound of its own).
	// Those beyond it wait in the queue, where a full queue answers that
	// the node is busy, rather than hold slots waiting for a worker.
	capacity func() int
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

// buildTable combines the built-ins with the catalog's active agents.
func (h *Host) buildTable() *agentTable {
	t := &agentTable{byName: map[string]*agentEntry{h.rpcutil.name: h.rpcutil, h.choria.name: h.choria}}
	for _, a := range h.catalog.Agents() {
		if !a.Active {
			continue
		}
		if _, taken := t.byName[a.Name]; taken || a.Name == builtin.Discovery {
			continue
		}
		e := &agentEntry{name: a.Name, ddl: a.DDL}
		e.run, e.capacity = h.runners.runnerFor(a)
		t.byName[a.Name] = e
	}
	t.names = append(t.names, builtin.Discovery)
	for name := range t.byName {
		t.names = append(t.names, name)
	}
	slices.Sort(t.names)
	return t
}
