package host

import (
	"context"
	"errors"
	"fmt"

	"github.com/agent-host/agent-host/policy"
)

// ErrNotServing is returned by Reload before Run is ready and once it
// stops.
var ErrNotServing = errors.New("host: not serving")

// Reload brings in, at once, what a configuration-management run changes
// under a serving host, as SIGHUP asks: it re-reads the facts and classes
// files, rescans the agent directories (without waiting for new DDLs to
// settle) and recompiles the policies, then logs what changed. The
// configuration file itself is not re-read: that takes a restart.
//
// Requests are served throughout. Requests in flight finish on the agents
// they started with; those arriving meanwhile see either the old or the
// new facts, agents and policies, never a gap: subscriptions change only
// for agents that appeared or went away. Reloads are serialised with each
// other and with the watcher's changes.
func (h *Host) Reload(ctx context.Context) error {
	select {
	case <-h.ready:
	default:
		return ErrNotServing
	}
	h.reloadMu.Lock()
	defer h.reloadMu.Unlock()
	h.changeMu.Lock()
	over := h.changesOver
	h.changeMu.Unlock()
	if over {
		return ErrNotServing
	}

	factsChanged, classesChanged := h.inv.Reload()
	// Applied as the watcher's changes are, in the catalog's order.
	ch, err := h.catalog.Rescan(ctx, h.applyChange)
	if err != nil {
		return fmt.Errorf("host: reloading agents: %w", err)
	}
	policies := "none"
	if r, ok := h.authz.(policy.Reloader); ok && !h.authzOff {
		r.Reload()
		policies = "reloaded"
	}
	h.log.Info("reloaded", "facts_changed", factsChanged, "classes_changed", classesChanged,
		"agents_added", len(ch.Added), "agents_updated", len(ch.Updated), "agents_removed", len(ch.Removed),
		"policies", policies)
	return nil
}
