package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/user"
	"slices"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/agent-host/agent-host/host"
	"github.com/agent-host/agent-host/host/builtin"
	"github.com/agent-host/agent-host/host/config"
	"github.com/agent-host/agent-host/host/inventory"
	"github.com/agent-host/agent-host/policy"
	"github.com/agent-host/agent-host/protocol/ddl"
	"github.com/agent-host/agent-host/protocol/filter"
)

// policyEvalCommand asks the configured authorizer about a made-up
// request, the way the host would ask it, and shows why it decided.
type policyEvalCommand struct {
	configFlags
	agent, action string
	args          []string
	caller        string
	collective    string
	factsFile     string
	ttl           int
	agents        []string
	trace, asJSON bool
}

// policyTestCommand runs the Rego unit tests of a policies directory.
type policyTestCommand struct {
	dir         string
	verbose, v0 bool
}

func newPolicyCommands(app *kingpin.Application) (*policyEvalCommand, *policyTestCommand) {
	p := app.Command("policy", "Evaluate and test authorization policies.")
	e := &policyEvalCommand{}
	eval := p.Command("eval", "Ask the configured authorizer (rpcauthorization, rpcauthprovider) whether a request may run; print the decision, the policy file and the input document. Exits 0 when allowed, 1 when denied.")
	e.add(eval)
	eval.Arg("agent", "Agent name.").Required().StringVar(&e.agent)
	eval.Arg("action", "Action name.").Required().StringVar(&e.action)
	eval.Arg("inputs", "Inputs as key=value, typed by the agent's DDL when it is found (as `agent-host req` does).").StringsVar(&e.args)
	eval.Flag("caller", "The caller id (default choria=<login>.mcollective).").StringVar(&e.caller)
	eval.Flag("collective", "The request's collective (default the main collective).").StringVar(&e.collective)
	eval.Flag("facts", "A JSON or YAML facts file instead of the node's (plugin.yaml).").PlaceHolder("FILE").StringVar(&e.factsFile)
	eval.Flag("ttl", "The request's ttl, in seconds (default the configuration's ttl).").IntVar(&e.ttl)
	eval.Flag("agents", "The agents the node has, instead of those found on disk (repeatable; rpcutil and discovery are always there).").StringsVar(&e.agents)
	eval.Flag("trace", "Print OPA's trace of the evaluation on stderr (Rego).").BoolVar(&e.trace)
	eval.Flag("json", "Print one JSON document.").BoolVar(&e.asJSON)

	t := &policyTestCommand{}
	test := p.Command("test", "Run the Rego unit tests of a policies directory (test_ rules in *_test.rego, as `opa test`): X_test.rego is run with the policy agent X would get (X.rego, else default.rego). Exits 1 when a test fails.")
	test.Arg("dir", "The directory, e.g. /etc/choria/policies/rego.").Required().ExistingDirVar(&t.dir)
	test.Flag("verbose", "Print every test, not only failures.").Short('v').BoolVar(&t.verbose)
	test.Flag("v0-compatible", "Accept OPA's pre-1.0 syntax (plugin.agent_host.rego_v0_compatible).").BoolVar(&t.v0)
	return e, t
}

// evalResult is what `policy eval` reports.
type evalResult struct {
	Allowed    bool           `json:"allowed"`
	Reason     string         `json:"reason,omitempty"`
	Policy     string         `json:"policy,omitempty"`
	Error      string         `json:"error,omitempty"`
	Authorizer string         `json:"authorizer"`
	Input      map[string]any `json:"input"`
}

func (c *policyEvalCommand) execute(ctx context.Context, out, errOut io.Writer) (int, error) {
	cfg, err := loadConfig(c.configFile, c.plugins)
	if err != nil {
		return 1, err
	}
	level := slog.LevelWarn
	if c.trace {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(errOut, &slog.HandlerOptions{Level: level}))
	d := findDDL(cfg, c.agent)
	in, err := c.input(ctx, cfg, d, log)
	if err != nil {
		return 1, err
	}
	pc := host.PolicyConfig(cfg, log.With("component", "policy"))
	pc.RegoTrace = pc.RegoTrace || c.trace
	authz, summary := policy.New(pc)
	defer authz.Close()

	// The host gives the authorizer until the agent's timeout.
	timeout := 10 * time.Second
	if d != nil && d.Metadata.Timeout > 0 {
		timeout = time.Duration(d.Metadata.Timeout) * time.Second
	}
	if !slices.Contains(in.Agents, c.agent) {
		fmt.Fprintf(errOut, "warning: this node has no agent %s: it would not answer the request\n", c.agent)
	} else if d != nil && d.Action(c.action) == nil {
		fmt.Fprintf(errOut, "warning: agent %s has no action %s: the node would answer with statuscode 2 before authorizing\n", c.agent, c.action)
	}
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	decision, authErr := authz.Authorize(actx, in)
	res := evalResult{Allowed: authErr == nil && decision.Allowed, Reason: decision.Reason, Policy: decision.Policy, Authorizer: summary}
	if authErr != nil {
		res.Error = authErr.Error()
	}
	res.Input, _ = policy.RegoInput(in)
	if err := c.print(out, res); err != nil {
		return 1, err
	}
	if !res.Allowed {
		return 1, nil
	}
	return 0, nil
}

// input is the request the host would hand its authorizer: the node's
// facts, classes and agents, the configuration's collective and ttl.
func (c *policyEvalCommand) input(ctx context.Context, cfg *config.Config, d *ddl.DDL, log *slog.Logger) (*policy.Input, error) {
	data, _, err := parseInputs(c.args, d, c.action)
	if err != nil {
		return nil, err
	}
	facts, classes := inventory.New(cfg.FactsFiles, cfg.ClassesFile, log).Snapshot()
	if c.factsFile != "" {
		b, err := os.ReadFile(c.factsFile)
		if err != nil {
			return nil, err
		}
		if facts, err = filter.NormalizeFacts(b); err != nil {
			return nil, fmt.Errorf("%s: %w", c.factsFile, err)
		}
	}
	// The built-ins are always there, as on the host.
	agents := []string{builtin.ChoriaUtil, builtin.Discovery, builtin.RPCUtil}
	extra := c.agents
	if len(extra) == 0 {
		found, err := host.LoadAgents(ctx, cfg, log)
		if err != nil {
			return nil, err
		}
		for _, a := range found {
			if a.Active {
				extra = append(extra, a.Name)
			}
		}
	}
	for _, name := range extra {
		if !slices.Contains(agents, name) {
			agents = append(agents, name)
		}
	}
	slices.Sort(agents)
	in := &policy.Input{
		Agent: c.agent, Action: c.action, CallerID: c.caller, Collective: c.collective,
		// Whole seconds, as a request's msgtime gives them.
		Data: data, TTL: c.ttl, Time: time.Unix(time.Now().Unix(), 0), Facts: facts, Classes: classes, Agents: agents,
	}
	if in.CallerID == "" {
		name := "user"
		if u, err := user.Current(); err == nil {
			name = u.Username
		}
		in.CallerID = "choria=" + name + ".mcollective"
	}
	if in.Collective == "" {
		in.Collective = cfg.MainCollective
	}
	if in.TTL == 0 {
		in.TTL = cfg.TTL
	}
	return in, nil
}

func (c *policyEvalCommand) print(out io.Writer, res evalResult) error {
	if c.asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	verdict := "DENIED"
	if res.Allowed {
		verdict = "ALLOWED"
	}
	fmt.Fprintf(out, "%s#%s by %s: %s\n", c.agent, c.action, res.Input["callerid"], verdict)
	fmt.Fprintf(out, "  authorizer: %s\n", res.Authorizer)
	for _, kv := range [][2]string{{"policy", res.Policy}, {"reason", res.Reason}, {"error", res.Error}} {
		if kv[1] != "" {
			fmt.Fprintf(out, "  %s: %s\n", kv[0], kv[1])
		}
	}
	b, err := json.MarshalIndent(res.Input, "  ", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "  input:\n  %s\n", b)
	return err
}

func (t *policyTestCommand) execute(ctx context.Context, out io.Writer) (int, error) {
	passed, failed, err := policy.RunRegoTests(ctx, t.dir, out, t.verbose, t.v0)
	if err != nil {
		return 1, err
	}
	fmt.Fprintf(out, "%d passed, %d failed\n", passed, failed)
	if failed > 0 {
		return 1, nil
	}
	return 0, nil
}
