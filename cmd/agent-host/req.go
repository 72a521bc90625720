package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/nats-io/nats.go"

	"github.com/agent-host/agent-host/host"
	"github.com/agent-host/agent-host/host/client"
	"github.com/agent-host/agent-host/host/config"
	"github.com/agent-host/agent-host/host/filter"
	"github.com/agent-host/agent-host/host/security"
	"github.com/agent-host/agent-host/protocol"
	"github.com/agent-host/agent-host/protocol/ddl"
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
// answered OK, 1 otherwise.
func (c *reqCommand) execute(ctx context.Context, out io.Writer) (int, error) {
	cfg, err := loadConfig(c.configFile, c.plugins)
	if err != nil {
		return 1, err
	}
	d := findDDL(cfg, c.agent)
	data, err := parseInputs(c.args, d, c.action)
	if err != nil {
		return 1, err
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
		return 1, fmt.Errorf("connecting to the broker at %s: %w", url, err)
	}
	defer nc.Close()
	cl := client.New(nc, ccfg)

	nodes, err := c.discover(ctx, cl, f)
	if err != nil {
		return 1, err
	}
	if len(nodes) == 0 {
		return 1, client.ErrNoNodes
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
	replies, err := cl.Request(rctx, nodes, c.agent, c.action, data, f)
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return 1, err
	}
	return report(out, c.jsonOut, d, c.action, nodes, replies, time.Since(start))
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
	d, _ := host.BuiltinDDL(agent)
	return d
}

// parseInputs turns key=value arguments into request data, typed by the
// DDL's input types when there is one.
func parseInputs(args []string, d *ddl.DDL, action string) (json.RawMessage, error) {
	var inputs map[string]*ddl.InputItem
	if d != nil {
		if a := d.Action(action); a != nil {
			inputs = a.Input
		}
	}
	data := map[string]any{}
	for _, arg := range args {
		k, v, ok := strings.Cut(arg, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("input %q is not key=value", arg)
		}
		typed, err := typeInput(inputs[k], v)
		if err != nil {
			return nil, fmt.Errorf("input %s: %w", k, err)
		}
		data[k] = typed
	}
	return json.Marshal(data)
}

func typeInput(item *ddl.InputItem, v string) (any, error) {
	if item == nil {
		return v, nil
	}
	switch strings.ToLower(item.Type) {
	case "integer", "int":
		return strconv.Atoi(v)
	case "number", "float":
		return strconv.ParseFloat(v, 64)
	case "boolean":
		return config.ParseBool(v)
	case "hash", "array":
		var x any
		if err := json.Unmarshal([]byte(v), &x); err != nil {
			return nil, fmt.Errorf("%q is not JSON: %w", v, err)
		}
		return x, nil
	}
	return v, nil
}

// report prints the replies and returns the exit code.
func report(out io.Writer, asJSON bool, d *ddl.DDL, action string, nodes []string, replies []client.Reply, took time.Duration) (int, error) {
	code := 0
	answered := map[string]bool{}
	for _, r := range replies {
		answered[r.Sender] = true
		if r.Body.Statuscode != protocol.OK {
			code = 1
		}
	}
	missing := []string{}
	for _, n := range nodes {
		if !answered[n] {
			missing = append(missing, n)
			code = 1
		}
	}
	if asJSON {
		type jsonReply struct {
			Sender     string          `json:"sender"`
			Statuscode uint8           `json:"statuscode"`
			Statusmsg  string          `json:"statusmsg"`
			Data       json.RawMessage `json:"data"`
		}
		list := []jsonReply{}
		for _, r := range replies {
			list = append(list, jsonReply{r.Sender, uint8(r.Body.Statuscode), r.Body.Statusmsg, r.Body.Data})
		}
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(map[string]any{"replies": list, "no_responses": missing}); err != nil {
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
	for _, r := range replies {
		if r.Body.Statuscode != protocol.OK {
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
	for _, n := range missing {
		fmt.Fprintf(out, "%-40s no response\n", n)
	}
	fmt.Fprintf(out, "Finished processing %d / %d hosts in %s\n", len(replies), len(nodes), took.Round(time.Millisecond))
	return code, nil
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
