package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/nats-io/nats.go"

	"github.com/agent-host/agent-host/host/builtin"
	"github.com/agent-host/agent-host/host/config"
	"github.com/agent-host/agent-host/protocol"
	"github.com/agent-host/agent-host/protocol/client"
	"github.com/agent-host/agent-host/protocol/ddl"
	"github.com/agent-host/agent-host/protocol/filter"
	"github.com/agent-host/agent-host/protocol/security"
	v1 "github.com/agent-host/agent-host/protocol/v1"
)

type reqCommand struct {
	configFile   string
	plugins      []string
	agent        string
	action       string
	args         []string
	identities   []string
	facts        []string
	classes      []string
	agents       []string
	compound     string
	jsonOut      bool
	identity     string
	discoveryFor time.Duration
	timeout      time.Duration
}

func newReqCommand(app *kingpin.Application) *reqCommand {
	c := &reqCommand{}
	cmd := app.Command("req", "Call an agent action on every matching node, as `choria req` does.")
	cmd.Arg("agent", "The agent to call.").Required().StringVar(&c.agent)
	cmd.Arg("action", "The action to call.").Required().StringVar(&c.action)
	cmd.Arg("inputs", "Inputs as key=value; typed by the agent's DDL when it is found locally.").StringsVar(&c.args)
	cmd.Flag("config", "Client configuration (same format as the server's); broker, identity and certificates.").Short('c').PlaceHolder("FILE").StringVar(&c.configFile)
	cmd.Flag("plugins", "Where to look for the agent's DDL; repeatable.").PlaceHolder("DIR").StringsVar(&c.plugins)
	cmd.Flag("wi", "Match nodes by identity (exact or /regex/); repeatable.").Short('I').StringsVar(&c.identities)
	cmd.Flag("wf", "Match nodes by fact, e.g. os=linux or cpus>2; repeatable.").Short('F').StringsVar(&c.facts)
	cmd.Flag("wc", "Match nodes by configuration class; repeatable.").Short('C').StringsVar(&c.classes)
	cmd.Flag("wa", "Match nodes by agent; repeatable.").Short('A').StringsVar(&c.agents)
	cmd.Flag("select", "Match nodes by a compound expression.").Short('S').StringVar(&c.compound)
	cmd.Flag("json", "Print the replies as JSON.").BoolVar(&c.jsonOut)
	cmd.Flag("identity", "Caller identity (certname); default from the configuration, else <user>.mcollective.").StringVar(&c.identity)
	cmd.Flag("dt", "How long to wait for discovery replies.").Default("2s").DurationVar(&c.discoveryFor)
	cmd.Flag("timeout", "How long to wait for replies; default the agent's DDL timeout plus 2s.").DurationVar(&c.timeout)
	return c
}

// execute runs the request and returns the exit code: 0 when every node
// answered OK, 1 otherwise. Warnings go to warn.
func (c *reqCommand) execute(ctx context.Context, out, warn io.Writer) (int, error) {
	cfg, err := loadConfig(c.configFile, c.plugins)
	if err != nil {
		return 1, err
	}
	d := findDDL(cfg, c.agent)
	data, guessed, err := parseInputs(c.args, d, c.action)
	if err != nil {
		return 1, err
	}
	if d == nil && c.agent != "discovery" && len(c.args) > 0 {
		what := "all as text"
		if len(guessed) > 0 {
			what = strings.Join(guessed, ", ") + ", the rest as text"
		}
		fmt.Fprintf(warn, "warning: no DDL found for agent %s (looked in --plugins, plugin.agent_host.plugins and the libdirs), so inputs are typed by how they look: %s\n", c.agent, what)
	}
	f, err := c.filter()
	if err != nil {
		return 1, err
	}
	ccfg, tlsOpt, err := c.clientConfig(cfg)
	if err != nil {
		return 1, err
	}
	url := "nats://" + cfg.EmbeddedBroker
	if len(cfg.MiddlewareHosts) > 0 {
		url = strings.Join(cfg.MiddlewareURLs(), ",")
	}
	opts := []nats.Option{nats.Name("agent-host req"), nats.CustomInboxPrefix(ccfg.Collective + ".reply")}
	if tlsOpt != nil {
		opts = append(opts, tlsOpt)
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return 1, fmt.Errorf("cannot connect to the broker at %s: %w", url, err)
	}
	defer nc.Close()
	cl := client.New(nc, ccfg)

	nodes, err := c.discover(ctx, cl, f)
	if err != nil {
		return 1, userError(ctx, "discovery", err)
	}
	if len(nodes) == 0 {
		return 1, c.noNodes(ctx, cl, f)
	}
	timeout := c.timeout
	if timeout == 0 {
		timeout = 12 * time.Second
		if d != nil {
			timeout = time.Duration(d.Metadata.Timeout)*time.Second + 2*time.Second
		}
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	res, err := cl.Request(rctx, nodes, c.agent, c.action, data, f)
	if err != nil {
		return 1, userError(ctx, "the request", err)
	}
	if ctx.Err() != nil {
		fmt.Fprintln(warn, "interrupted: nodes that had not answered yet are listed as no response")
	}
	return report(out, c.jsonOut, d, c.action, len(nodes), res, time.Since(start))
}

// noNodes explains an empty discovery. choria req always adds an agent
// filter for the agent called, so a misspelt agent looks like no nodes at
// all; asking again without it tells the two apart.
func (c *reqCommand) noNodes(ctx context.Context, cl *client.Client, f *protocol.Filter) error {
	without := *f
	without.Agent = slices.DeleteFunc(slices.Clone(f.Agent), func(a string) bool { return a == c.agent })
	others, err := cl.Discover(ctx, &without, c.discoveryFor)
	if err == nil && len(others) > 0 {
		return fmt.Errorf("no node serves agent %s: %d node(s) matched the filter without it, so the agent name may be wrong; `agent-host req rpcutil agent_inventory` lists the agents each node serves", c.agent, len(others))
	}
	return errors.New("no node answered discovery: check the filter, the collective and that agent-host is running and connected to this broker")
}

// userError says what failed in the user's terms: an interruption or a
// timeout rather than Go's context errors.
func userError(ctx context.Context, what string, err error) error {
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("%s was interrupted", what)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s timed out", what)
	}
	return fmt.Errorf("%s failed: %w", what, err)
}

// discover skips the network for plain identity filters, as choria does.
func (c *reqCommand) discover(ctx context.Context, cl *client.Client, f *protocol.Filter) ([]string, error) {
	plain := len(c.identities) > 0 && len(c.facts)+len(c.classes)+len(c.agents) == 0 && c.compound == ""
	for _, id := range c.identities {
		if strings.HasPrefix(id, "/") {
			plain = false
		}
	}
	if plain {
		return c.identities, nil
	}
	return cl.Discover(ctx, f, c.discoveryFor)
}

func (c *reqCommand) filter() (*protocol.Filter, error) {
	f := protocol.NewFilter()
	f.Identity = append(f.Identity, c.identities...)
	f.Class = append(f.Class, c.classes...)
	f.Agent = append(append(f.Agent, c.agent), c.agents...)
	for _, s := range c.facts {
		ff, err := filter.ParseFactFilter(s)
		if err != nil {
			return nil, fmt.Errorf("fact filter %q: %w", s, err)
		}
		f.Fact = append(f.Fact, ff)
	}
	if c.compound != "" {
		f.Compound = append(f.Compound, []map[string]string{{"expr": c.compound}})
	}
	return f, nil
}

// clientConfig signs requests when the configuration names a certificate;
// otherwise requests carry Choria's "insecure" markers, which only a host
// running with plugin.security.provider = insecure accepts.
func (c *reqCommand) clientConfig(cfg *config.Config) (client.Config, nats.Option, error) {
	cc := client.Config{Identity: callerIdentity(c.identity, cfg), Collective: cfg.MainCollective, TTL: cfg.TTL}
	if cfg.SecurityProvider != "file" || cfg.FileCertificate == "" {
		return cc, nil, nil
	}
	signer, cert, err := security.LoadSigner(cfg.FileCertificate, cfg.FileKey)
	if err != nil {
		return cc, nil, err
	}
	cc.Signer, cc.CertPEM = signer, cert
	tc, err := security.TLSConfig(cfg.FileCertificate, cfg.FileKey, cfg.FileCA)
	if err != nil {
		return cc, nil, err
	}
	return cc, nats.Secure(tc), nil
}

// findDDL looks for the agent's DDL where a server would load it from, then
// among the built-ins.
func findDDL(cfg *config.Config, agent string) *ddl.DDL {
	var dirs []string
	dirs = append(dirs, cfg.Plugins...)
	for _, l := range append(append([]string{}, cfg.AgentLibdirs...), cfg.Libdir...) {
		dirs = append(dirs, filepath.Join(l, "mcollective", "agent"), filepath.Join(l, "choria", "agent"))
	}
	for _, dir := range dirs {
		for _, p := range []string{filepath.Join(dir, agent+".json"), filepath.Join(dir, agent, agent+".json")} {
			if b, err := os.ReadFile(p); err == nil {
				if d, err := ddl.Parse(b); err == nil {
					return d
				}
			}
		}
	}
	d, _ := builtin.DDL(agent)
	return d
}

// parseInputs turns key=value arguments into request data, typed by the
// DDL's input types when there is one and by how they look otherwise;
// guessed says which inputs were sent as something other than text
// without a DDL to say so.
func parseInputs(args []string, d *ddl.DDL, action string) (data json.RawMessage, guessed []string, err error) {
	var inputs map[string]*ddl.InputItem
	if d != nil {
		if a := d.Action(action); a != nil {
			inputs = a.Input
		}
	}
	values := map[string]any{}
	for _, arg := range args {
		k, v, ok := strings.Cut(arg, "=")
		if !ok || k == "" {
			return nil, nil, fmt.Errorf("input %q is not key=value", arg)
		}
		var typed any
		if item := inputs[k]; item != nil || d != nil {
			if typed, err = typeInput(item, v); err != nil {
				return nil, nil, fmt.Errorf("input %s: %w", k, err)
			}
		} else if typed = guessInput(v); typed != any(v) {
			guessed = append(guessed, fmt.Sprintf("%s as %s", k, kindOf(typed)))
		}
		values[k] = typed
	}
	data, err = json.Marshal(values)
	return data, guessed, err
}

// kindOf names the JSON type guessInput chose.
func kindOf(v any) string {
	switch v.(type) {
	case int64:
		return "a number"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	default:
		return "an object"
	}
}

// typeInput reads v as the DDL declares item; an input the DDL does not
// declare is sent as text, and the node refuses it.
func typeInput(item *ddl.InputItem, v string) (any, error) {
	if item == nil {
		return v, nil
	}
	switch strings.ToLower(item.Type) {
	case "integer", "int":
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not an integer", v)
		}
		return n, nil
	case "number", "float":
		n, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not a number", v)
		}
		return n, nil
	case "boolean":
		b, err := config.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("%q is not a boolean: use true or false", v)
		}
		return b, nil
	case "hash", "array":
		var x any
		if err := json.Unmarshal([]byte(v), &x); err != nil {
			return nil, fmt.Errorf("%q is not JSON; a %s input is written as JSON, such as %s", v, item.Type, map[string]string{"hash": `{"a":1}`, "array": `[1,2]`}[strings.ToLower(item.Type)])
		}
		return x, nil
	}
	return v, nil
}

// guessInput types an input without a DDL: whole numbers (without a
// leading zero), true and false, and JSON objects and arrays are sent as
// such; the rest, decimals included (versions such as 1.10 are text more
// often than not), as text.
func guessInput(v string) any {
	if n, err := strconv.ParseInt(v, 10, 64); err == nil && (v == "0" || !strings.HasPrefix(strings.TrimPrefix(v, "-"), "0")) {
		return n
	}
	switch v {
	case "true":
		return true
	case "false":
		return false
	}
	if strings.HasPrefix(v, "{") || strings.HasPrefix(v, "[") {
		var x any
		if json.Unmarshal([]byte(v), &x) == nil {
			return x
		}
	}
	return v
}

// report prints the replies and returns the exit code: 0 when every
// node asked answered OK.
func report(out io.Writer, asJSON bool, d *ddl.DDL, action string, asked int, res *client.Result, took time.Duration) (int, error) {
	code := 0
	if len(res.Missing) > 0 {
		code = 1
	}
	for _, r := range res.Replies {
		if r.Err != nil || r.Body.Statuscode != protocol.OK {
			code = 1
		}
	}
	if asJSON {
		type jsonReply struct {
			Sender     string          `json:"sender"`
			Statuscode uint8           `json:"statuscode"`
			Statusmsg  string          `json:"statusmsg"`
			Data       json.RawMessage `json:"data"`
			Error      string          `json:"error,omitempty"`
		}
		list := []jsonReply{}
		for _, r := range res.Replies {
			jr := jsonReply{Sender: r.Sender, Statuscode: uint8(r.Body.Statuscode), Statusmsg: r.Body.Statusmsg, Data: r.Body.Data}
			if r.Err != nil {
				jr.Error = unreadable(r.Err)
				jr.Statuscode = uint8(protocol.UnknownError)
			}
			if jr.Data == nil {
				jr.Data = json.RawMessage("{}")
			}
			list = append(list, jr)
		}
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(map[string]any{"replies": list, "no_responses": nonNil(res.Missing), "unexpected_responses": nonNil(res.Unexpected)}); err != nil {
			return 1, err
		}
		return code, nil
	}

	var labels map[string]*ddl.OutputItem
	if d != nil {
		if a := d.Action(action); a != nil {
			labels = a.Output
		}
	}
	for _, r := range res.Replies {
		switch {
		case r.Err != nil:
			fmt.Fprintf(out, "%-40s sent a reply that could not be read: %s\n\n", r.Sender, unreadable(r.Err))
			continue
		case r.Body.Statuscode != protocol.OK:
			fmt.Fprintf(out, "%-40s %s\n\n", r.Sender, r.Body.Statusmsg)
			continue
		}
		fmt.Fprintf(out, "%s\n", r.Sender)
		var data map[string]json.RawMessage
		_ = json.Unmarshal(r.Body.Data, &data)
		keys := make([]string, 0, len(data))
		for k := range data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			label := k
			if o := labels[k]; o != nil && o.DisplayAs != "" {
				label = o.DisplayAs
			}
			fmt.Fprintf(out, "  %20s: %s\n", label, display(data[k]))
		}
		fmt.Fprintln(out)
	}
	for _, n := range res.Missing {
		fmt.Fprintf(out, "%-40s no response\n", n)
	}
	if len(res.Unexpected) > 0 {
		fmt.Fprintf(out, "Replies from %d node(s) that were not asked were ignored: %s\n", len(res.Unexpected), strings.Join(res.Unexpected, ", "))
	}
	fmt.Fprintf(out, "Finished processing %d / %d hosts in %s\n", len(res.Replies), asked, took.Round(time.Millisecond))
	return code, nil
}

// unreadable says why a reply could not be read, in the user's terms.
func unreadable(err error) string {
	switch {
	case errors.Is(err, v1.ErrHashMismatch):
		return "its hash does not match its content"
	case errors.Is(err, v1.ErrInvalidSecureReply), errors.Is(err, v1.ErrInvalidReply), errors.Is(err, v1.ErrInvalidTransport):
		return "it is not a Choria v1 reply"
	default:
		return "its body is not a SimpleRPC reply"
	}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// display shows strings bare and everything else as JSON.
func display(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(raw)
}

// callerIdentity picks the caller's certname as Choria's client does: the
// flag, then MCOLLECTIVE_CERTNAME, then <user>.mcollective for a non-root
// user, and only as root the configured identity.
func callerIdentity(flag string, cfg *config.Config) string {
	if flag != "" {
		return flag
	}
	if env := os.Getenv("MCOLLECTIVE_CERTNAME"); env != "" {
		return env
	}
	if user := os.Getenv("USER"); user != "" && os.Geteuid() != 0 {
		return user + ".mcollective"
	}
	if cfg.Identity != "" {
		return cfg.Identity
	}
	return "root.mcollective"
}
