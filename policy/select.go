package policy

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
)

// Config is what selects and configures an authorizer: Choria's settings,
// read by the host's configuration.
type Config struct {
	// Enabled is rpcauthorization (Choria's default: true).
	Enabled bool
	// Provider is rpcauthprovider (Choria's default: action_policy),
	// compared case-insensitively.
	Provider string
	// ConfigFile is the server's configuration file: policies are found
	// in the policies directory beside it, as Choria finds them.
	ConfigFile string
	// RegoTrace is plugin.regopolicy.tracing: OPA's trace in the log.
	RegoTrace bool
	// RegoV0 accepts policies in OPA's pre-1.0 syntax (agent-host's
	// plugin.agent_host.rego_v0_compatible; Choria has no such switch).
	RegoV0 bool
	// ActionPolicy are the plugin.actionpolicy.* settings.
	ActionPolicy ActionPolicyOptions
	Logger       *slog.Logger
}

// PoliciesDir is Choria's policies directory: beside the configuration file.
func (c Config) PoliciesDir() string {
	return filepath.Join(filepath.Dir(c.ConfigFile), "policies")
}

// Closer is an authorizer holding resources (a file watcher).
type Closer interface {
	Authorizer
	Close() error
}

// New returns the authorizer c names, and a sentence for the start-up log
// saying which it is and where it reads its policies. An unknown provider
// is not an error: as in Choria, every request is then denied, and logged.
func New(c Config) (Closer, string) {
	log := c.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if !c.Enabled {
		return nopCloser{AllowAll{}}, "authorization is off (rpcauthorization = false): every verified request may run any action"
	}
	switch p := strings.ToLower(strings.TrimSpace(c.Provider)); p {
	case "rego_policy":
		dir := filepath.Join(c.PoliciesDir(), "rego")
		return NewRego(RegoOptions{Dir: dir, Trace: c.RegoTrace, V0Compatible: c.RegoV0, Logger: log}),
			fmt.Sprintf("authorizing with Rego policies from %s (<agent>.rego, then default.rego)", dir)
	case "action_policy", "":
		o := c.ActionPolicy
		o.Dir, o.Logger = c.PoliciesDir(), log
		return nopCloser{NewActionPolicy(o)},
			fmt.Sprintf("authorizing with actionpolicy files from %s (<agent>.policy)", o.Dir)
	default:
		return nopCloser{unsupported(c.Provider)}, fmt.Sprintf("unsupported authorization provider %q: every request will be denied", c.Provider)
	}
}

type nopCloser struct{ Authorizer }

func (nopCloser) Close() error { return nil }

// Reload reloads the wrapped authorizer's policies when it can.
func (n nopCloser) Reload() {
	if r, ok := n.Authorizer.(Reloader); ok {
		r.Reload()
	}
}

// unsupported denies everything, as Choria does for a provider it does not know.
type unsupported string

func (u unsupported) Authorize(context.Context, *Input) (Decision, error) {
	return Decision{}, fmt.Errorf("unsupported authorization provider: %s", string(u))
}
