package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/agent-host/agent-host/cmd/internal/loadreport"
	gp "github.com/agent-host/agent-host/protocol/grpcplugin"
)

// The node every server is, and the caller the load comes from.
const (
	nodeIdentity = "bench.example.net"
	callerName   = "load.mcollective"
)

// benchAgent is one agent action measured on every server.
type benchAgent struct {
	Label         string `json:"label"` // agent action, as in the report
	Agent, Action string `json:"-"`
	Data          string `json:"-"`
	// Kind says what it is written in; Pooled that agent-host pools it in
	// its pool set-up (the others are spawned per request there too).
	Kind   string `json:"kind"`
	Short  string `json:"short"` // Kind in a few words, for the plot
	Pooled bool   `json:"pooled"`
	// Plugin says the agent is also measured in the go-plugin set-up,
	// which runs it as go-plugin plugins (the others are not measured
	// there: it would run them as the pool set-up does).
	Plugin bool `json:"plugin,omitempty"`
	// Builtin agents are not external agents on any server.
	Builtin bool `json:"builtin"`
	// Pending, when set, is a row that cannot be measured yet, and why.
	Pending string `json:"pending,omitempty"`
	// Spawned, when set, qualifies its spawned rows (what runs it).
	Spawned string `json:"spawned,omitempty"`
}

// The agents of the side-by-side table, in its order.
var benchAgents = []benchAgent{
	{Label: "rpcutil ping", Agent: "rpcutil", Action: "ping", Data: `{}`, Kind: "built-in (Go, in the server)", Short: "built-in", Builtin: true},
	{Label: "nodeinfo uptime", Agent: "nodeinfo", Action: "uptime", Data: `{}`, Kind: "POSIX sh, forks sed, cut, uname", Short: "POSIX sh"},
	{Label: "parrot echo", Agent: "parrot", Action: "echo", Data: `{"message":"hello"}`, Kind: "Python, py-mco-agent 0.4.0", Short: "py-mco-agent"},
	// The same parrot file run with agent-host's Python SDK (sdk-python,
	// in .venv-sdk) instead of py-mco-agent: pooled by agent-host pool,
	// spawned per request by the others.
	{Label: "parrot echo (Python SDK)", Agent: "parrot_sdk", Action: "echo", Data: `{"message":"hello"}`, Kind: "Python, the same parrot file with agent-host's Python SDK (sdk-python) in place of py-mco-agent", Short: "Python SDK",
		Pooled: true, Spawned: "Python SDK"},
	{Label: "greeter hello", Agent: "greeter", Action: "hello", Data: `{"name":"load"}`, Kind: "Go, sdk-go", Short: "sdk-go", Pooled: true, Plugin: true},
}

// serverKind is one of the three set-ups compared.
type serverKind struct {
	Key   string `json:"key"`   // ref, exec, pool, plugin
	Label string `json:"label"` // as in the report
}

var (
	serverRef  = serverKind{"ref", "go-choria v0.30.2"}
	serverExec = serverKind{"exec", "agent-host exec"}
	serverPool = serverKind{"pool", "agent-host pool"}
	// serverPlugin runs the sdk-go agents as go-plugin plugins, as
	// agent-host does with no configuration; serverPool keeps them on the
	// worker protocol's streams.
	serverPlugin = serverKind{"plugin", "agent-host go-plugin"}
)

// Row is one measured row.
type Row struct {
	Agent       string  `json:"agent"`
	Server      string  `json:"server"`
	Mode        string  `json:"mode"`
	Concurrency int     `json:"concurrency"`
	Seconds     float64 `json:"seconds"`
	PerSecond   float64 `json:"per_second"`
	// Counts and the latencies are agent-host-load's for the row's kind.
	loadreport.Counts
	P50ms     float64 `json:"p50_ms"`
	P95ms     float64 `json:"p95_ms"`
	P99ms     float64 `json:"p99_ms"`
	MaxMs     float64 `json:"max_ms"`
	ServerCPU float64 `json:"server_cpu_s"`
	AgentsCPU float64 `json:"agents_cpu_s"`
	Workers   int     `json:"workers"`
	// LogSlowConsumer and LogTimeouts count the server's log lines during
	// the row that say NATS dropped messages for a slow consumer, and
	// that a request timed out.
	LogSlowConsumer int    `json:"log_slow_consumer,omitempty"`
	LogTimeouts     int    `json:"log_timeouts,omitempty"`
	Error           string `json:"error,omitempty"`
}

// cpuPerRequest is host and agents CPU milliseconds per answered request.
func (r *Row) cpuPerRequest() (host, agents float64) {
	n := r.Answered()
	if n == 0 {
		return 0, 0
	}
	return 1000 * r.ServerCPU / float64(n), 1000 * r.AgentsCPU / float64(n)
}

// Idle is a server's memory with many agents loaded and no requests.
type Idle struct {
	Server        string `json:"server"`
	Agents        int    `json:"agents"`
	RSSKiB        int64  `json:"rss_kib"`
	Workers       int    `json:"workers"`
	WorkersRSSKiB int64  `json:"workers_rss_kib"`
	Error         string `json:"error,omitempty"`
}

// Results is everything a run measured, saved as JSON beside the report.
type Results struct {
	Date         string       `json:"date"`
	Commit       string       `json:"commit"`
	Uncommitted  int          `json:"uncommitted_files,omitempty"`
	GoVersion    string       `json:"go_version"`
	Python       string       `json:"python"`
	Platform     string       `json:"platform"`
	CPUs         int          `json:"cpus"`
	CPUModel     string       `json:"cpu_model"`
	Duration     string       `json:"duration"`
	Ramp         string       `json:"ramp"`
	Concurrency  []int        `json:"concurrency"`
	Agents       []benchAgent `json:"agents"`
	Servers      []serverKind `json:"servers"`
	Rows         []Row        `json:"rows"`
	SlowAgent    string       `json:"slow_agent"`
	SlowDuration string       `json:"slow_duration"`
	Slow         []Row        `json:"slow"`
	Idle         []Idle       `json:"idle"`
	Startup      *Startup     `json:"startup,omitempty"`
	Notes        []string     `json:"notes"`
	Elapsed      float64      `json:"elapsed_s"`
}

// Startup is the exec start-up of the Python parrot, with the SDK and with
// py-mco-agent, as sdk-python/tools/startup.py measures it.
type Startup struct {
	Runs  int            `json:"runs"`
	Envs  []StartupTimes `json:"envs"`
	Error string         `json:"error,omitempty"`
}

// StartupTimes are one virtual environment's times.
type StartupTimes struct {
	Venv     string  `json:"venv"`
	Packages string  `json:"packages"`
	MeanMS   float64 `json:"mean_ms"`
	MedianMS float64 `json:"median_ms"`
	MinMS    float64 `json:"min_ms"`
}

// startup runs the start-up comparison: the SDK's environment first, then
// py-mco-agent's, runs alternating between them.
func startup(ctx context.Context, o options) *Startup {
	logf("exec start-up of the Python parrot: %s against %s", o.sdkVenv, o.pymcoVenv)
	cmd := exec.CommandContext(ctx, "python3", o.startupTool, "--json", "--runs", itoa(o.startupRuns), o.sdkVenv, o.pymcoVenv)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return &Startup{Error: fmt.Sprintf("%s: %v: %s", o.startupTool, err, oneLine(stderr.String()))}
	}
	var s Startup
	if err := json.Unmarshal(out, &s); err != nil || len(s.Envs) != 2 {
		return &Startup{Error: fmt.Sprintf("%s printed %q", o.startupTool, out)}
	}
	return &s
}

// env is what every server of a run shares.
type env struct {
	o        options
	dir      string
	pki      *pki
	broker   *server.Server
	url      string
	load     loadArgs
	caller   *caller
	facts    string
	classes  string
	nodeCert string
	nodeKey  string
}

func setUp(o options) (*env, error) {
	dir, err := filepath.Abs(o.work)
	if err != nil {
		return nil, err
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	e := &env{o: o, dir: dir}
	if e.pki, err = newPKI(filepath.Join(dir, "ssl")); err != nil {
		return nil, err
	}
	if e.nodeCert, e.nodeKey, err = e.pki.issue(nodeIdentity); err != nil {
		return nil, err
	}
	cert, key, err := e.pki.issue(callerName)
	if err != nil {
		return nil, err
	}
	if e.broker, e.url, err = startBroker(e.pki); err != nil {
		return nil, err
	}
	loadBin, err := filepath.Abs(o.load)
	if err != nil {
		return nil, err
	}
	e.load = loadArgs{binary: loadBin, broker: e.url, identity: nodeIdentity, caller: callerName, cert: cert, key: key, ca: e.pki.caFile}
	if e.caller, err = newCaller(e.url, cert, key, e.pki.caFile, callerName); err != nil {
		e.close()
		return nil, err
	}
	e.facts, e.classes = filepath.Join(dir, "facts.yaml"), filepath.Join(dir, "classes.txt")
	if err := os.WriteFile(e.facts, []byte("os:\n  family: Debian\nrole: bench\n"), 0o644); err != nil {
		return nil, err
	}
	return e, os.WriteFile(e.classes, []byte("roles::bench\n"), 0o644)
}

func (e *env) close() {
	if e.caller != nil {
		e.caller.nc.Close()
	}
	if e.broker != nil {
		e.broker.Shutdown()
		e.broker.WaitForShutdown()
	}
}

// installAgents fills libdir with the measured agents and the slow one.
func (e *env) installAgents(libdir string) error {
	for _, name := range []string{"nodeinfo", "parrot", "greeter"} {
		if err := installAgent(libdir, filepath.Join(e.o.agents, name), name); err != nil {
			return err
		}
	}
	if err := e.installSDKParrot(libdir); err != nil {
		return err
	}
	return e.installPooltest(libdir)
}

// installSDKParrot installs parrot again as parrot_sdk, to run with
// sdk-python's interpreter: its DDL renamed, its executable a wrapper that
// execs the virtual environment's python, by absolute path, on the parrot
// file itself. The parrot's `#!/usr/bin/env python3` would find the
// agents' PATH's python3 first, py-mco-agent's, which has the same import
// names. The SDK serves the agent it is started for, whatever its class
// is called.
func (e *env) installSDKParrot(libdir string) error {
	const name = "parrot_sdk"
	python, err := filepath.Abs(filepath.Join(e.o.sdkVenv, "bin", "python"))
	if err != nil {
		return err
	}
	if _, err := os.Stat(python); err != nil {
		return fmt.Errorf("the Python SDK's interpreter (make sdk-venv makes it): %w", err)
	}
	script, err := filepath.Abs(filepath.Join(e.o.agents, "parrot", "parrot"))
	if err != nil {
		return err
	}
	if err := installAgent(libdir, filepath.Join(e.o.agents, "parrot"), name); err != nil {
		return err
	}
	wrapper := fmt.Sprintf("#!/bin/sh\nexec %s %s \"$@\"\n", shellQuote(python), shellQuote(script))
	return os.WriteFile(filepath.Join(libdir, "mcollective", "agent", name, name), []byte(wrapper), 0o755)
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// installPooltest lays out pooltest as Choria's multi-arch agent.
func (e *env) installPooltest(libdir string) error {
	staged := filepath.Join(e.dir, "pooltest-src", "pooltest")
	if err := copyFile(e.o.pooltestDDL, filepath.Join(staged, "pooltest.json"), 0o644); err != nil {
		return fmt.Errorf("the pooltest DDL: %w", err)
	}
	if err := copyFile(e.o.pooltestBin, filepath.Join(staged, "pooltest", fmt.Sprintf("pooltest-%s_%s", runtime.GOOS, runtime.GOARCH)), 0o755); err != nil {
		return fmt.Errorf("the pooltest binary (make bench builds it): %w", err)
	}
	return installAgent(libdir, staged, "pooltest")
}

// config writes the server configuration for kind k serving libdir, in
// Choria's format; both servers read the keys they know.
func (e *env) config(k serverKind, name, libdir string, extra ...string) (string, error) {
	path := filepath.Join(e.dir, name+".conf")
	kv := []string{
		"identity", nodeIdentity,
		"collectives", "mcollective",
		"main_collective", "mcollective",
		"plugin.choria.middleware_hosts", e.url,
		"plugin.choria.use_srv", "false",
		"plugin.security.provider", "file",
		"plugin.security.file.certificate", e.nodeCert,
		"plugin.security.file.key", e.nodeKey,
		"plugin.security.file.ca", e.pki.caFile,
		"plugin.choria.agent_provider.mcorpc.libdir", libdir,
		"plugin.yaml", e.facts,
		"classesfile", e.classes,
		"loglevel", "warn",
		"logfile", filepath.Join(e.dir, name+".log"),
		// Choria's default authorization (actionpolicy) denies every
		// request to an agent without a policy file, in both servers.
		"rpcauthorization", "0",
	}
	switch k.Key {
	case "exec":
		kv = append(kv, "plugin.agent_host.pool.mode", "exec")
	case "pool":
		// The sdk-go agents would run as go-plugin plugins: here they
		// stay on the worker protocol's streams.
		kv = append(kv, "plugin.agent_host.pool.mode", "auto",
			"plugin.agent_host.pool.greeter.mode", "pool", "plugin.agent_host.pool.pooltest.mode", "pool")
	case "plugin":
		kv = append(kv, "plugin.agent_host.pool.mode", "auto")
	case "ref":
		// No registration, no stats port.
		kv = append(kv, "registerinterval", "0", "plugin.choria.stats_port", "0")
	}
	return path, writeConfig(path, append(kv, extra...)...)
}

// startServer starts kind k with config conf and waits until it lists want.
func (e *env) startServer(ctx context.Context, k serverKind, name, conf string, want []string) (*process, error) {
	var argv []string
	switch k.Key {
	case "ref":
		bin, err := filepath.Abs(e.o.reference)
		if err != nil {
			return nil, err
		}
		argv = []string{bin, "--config", conf}
	default:
		bin, err := filepath.Abs(e.o.agentHost)
		if err != nil {
			return nil, err
		}
		argv = []string{bin, "run", "--config", conf}
	}
	p, err := start(k.Label, filepath.Join(e.dir, name+".out"), argv...)
	if err != nil {
		return nil, err
	}
	if err := e.caller.waitReady(ctx, p, nodeIdentity, want, 90*time.Second); err != nil {
		_ = p.stop(10 * time.Second)
		return nil, err
	}
	return p, nil
}

// mode says how kind k runs agent a.
func mode(k serverKind, a benchAgent) string {
	var m string
	switch {
	case a.Builtin:
		return "built-in"
	case k.Key == "pool" && a.Pooled:
		return "pooled"
	case k.Key == "plugin":
		return "go-plugin"
	case k.Key == "pool":
		m = "spawned (no worker protocol"
	case k.Key == "ref":
		m = "spawned (Choria"
	default:
		m = "spawned"
	}
	if a.Spawned != "" {
		if strings.HasSuffix(m, "spawned") {
			m += " ("
		} else {
			m += ", "
		}
		m += a.Spawned
	}
	if strings.Contains(m, "(") {
		m += ")"
	}
	return m
}

func rowFrom(a string, k serverKind, m string, res *loadreport.Result) Row {
	r := Row{Agent: a, Server: k.Key, Mode: m, Concurrency: res.Concurrency, Seconds: res.Seconds, PerSecond: res.PerSecond, Workers: res.Workers}
	if len(res.Kinds) > 0 {
		s := res.Kinds[0]
		r.Counts = s.Counts
		r.P50ms, r.P95ms, r.P99ms, r.MaxMs = s.P50ms, s.P95ms, s.P99ms, s.MaxMs
		// Throughput is of answered requests, up to the last reply: a
		// lost request's 30 s wait is in its own column, not in this one.
		if secs := res.ReplySeconds; secs > 0 {
			r.PerSecond = float64(r.Answered()) / secs
		}
	}
	if res.ServerCPU != nil {
		r.ServerCPU, r.AgentsCPU = *res.ServerCPU, *res.AgentsCPU
	}
	return r
}

func runBench(ctx context.Context, o options) error {
	began := time.Now()
	e, err := setUp(o)
	if err != nil {
		return err
	}
	defer e.close()
	res := &Results{
		Date: time.Now().UTC().Format("2006-01-02"), Commit: o.commit, Uncommitted: o.uncommitted, GoVersion: runtime.Version(),
		Python: pythonVersion(), Platform: runtime.GOOS + "/" + runtime.GOARCH, CPUs: runtime.NumCPU(), CPUModel: cpuModel(),
		Duration: o.duration.String(), Ramp: o.ramp.String(), Concurrency: o.concurrency, Agents: benchAgents,
		Servers:   []serverKind{serverRef, serverExec, serverPool, serverPlugin},
		SlowAgent: fmt.Sprintf("pooltest sleep ms=%d (sdk-go; pooled in the pool set-up: 4 workers × 4 requests)", o.slowMS), SlowDuration: o.slowDuration.String(),
	}
	libdir := filepath.Join(e.dir, "lib")
	if err := e.installAgents(libdir); err != nil {
		return err
	}
	want := []string{"rpcutil", "nodeinfo", "parrot", "parrot_sdk", "greeter", "pooltest"}
	for _, k := range res.Servers {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !slices.Contains(o.servers, k.Key) {
			continue
		}
		if k.Key == "ref" {
			if _, err := os.Stat(o.reference); err != nil {
				note := fmt.Sprintf("The go-choria reference server (%s) was not built, so its rows and the ratios are missing.", o.reference)
				logf("%s", note)
				res.Notes = append(res.Notes, note)
				continue
			}
		}
		conf, err := e.config(k, k.Key, libdir)
		if err != nil {
			return err
		}
		logf("starting %s", k.Label)
		p, err := e.startServer(ctx, k, k.Key, conf, want)
		if err != nil {
			res.Notes = append(res.Notes, fmt.Sprintf("%s did not start: %v", k.Label, err))
			logf("%v", err)
			continue
		}
		for _, a := range benchAgents {
			if a.Pending != "" || k.Key == "plugin" && !a.Plugin {
				continue
			}
			for _, c := range o.concurrency {
				if ctx.Err() != nil {
					_ = p.stop(10 * time.Second)
					return ctx.Err()
				}
				m := mode(k, a)
				slowBefore, timeoutsBefore := logCounts(filepath.Join(e.dir, k.Key+".log"))
				out, err := e.load.run(ctx, "--concurrency", itoa(c), "--duration", o.duration.String(), "--ramp", o.ramp.String(),
					"--timeout", "30s", "--pid", itoa(p.pid()), "--data", a.Data, a.Agent, a.Action)
				var row Row
				if err != nil {
					row = Row{Agent: a.Label, Server: k.Key, Mode: m, Concurrency: c, Error: err.Error()}
				} else {
					row = rowFrom(a.Label, k, m, out)
				}
				slowAfter, timeoutsAfter := logCounts(filepath.Join(e.dir, k.Key+".log"))
				row.LogSlowConsumer, row.LogTimeouts = slowAfter-slowBefore, timeoutsAfter-timeoutsBefore
				h, ag := row.cpuPerRequest()
				logf("%-16s %-34s c=%-3d %8.1f req/s  p50 %7.2f ms  p99 %7.2f ms  cpu %.3f+%.3f ms/req  failed %d  no reply %d %s",
					k.Label, a.Label, c, row.PerSecond, row.P50ms, row.P99ms, h, ag, row.Failed, row.NoReply, row.Error)
				res.Rows = append(res.Rows, row)
			}
		}
		if k.Key == "plugin" {
			// The rows say go-plugin only if the host did serve them so:
			// its plugins are still running, started with go-plugin's cookie.
			if !hasPluginChild(p.pid()) {
				for i := range res.Rows {
					if res.Rows[i].Server == k.Key {
						res.Rows[i].Error = "the host did not run the agent as go-plugin plugins"
					}
				}
				res.Notes = append(res.Notes, k.Label+": no child of the host was started as a go-plugin plugin; its rows are marked failed")
			}
			// Its slow row would measure the pool's queueing again.
			if err := p.stop(20 * time.Second); err != nil {
				res.Notes = append(res.Notes, err.Error())
			}
			continue
		}
		// The slow agent at high concurrency: every request answered,
		// with its reply or a busy error.
		m := "spawned"
		if k.Key == "pool" {
			m = "pooled"
		} else if k.Key == "ref" {
			m = "spawned (Choria)"
		}
		logFile := filepath.Join(e.dir, k.Key+".log")
		slowBefore, timeoutsBefore := logCounts(logFile)
		out, err := e.load.run(ctx, "--concurrency", itoa(o.slowConcurrency), "--duration", o.slowDuration.String(),
			"--timeout", "30s", "--pid", itoa(p.pid()), "--data", fmt.Sprintf(`{"ms":%d}`, o.slowMS), "pooltest", "sleep")
		row := Row{Agent: "pooltest sleep", Server: k.Key, Mode: m, Concurrency: o.slowConcurrency}
		if err != nil {
			row.Error = err.Error()
		} else {
			row = rowFrom("pooltest sleep", k, m, out)
		}
		slowAfter, timeoutsAfter := logCounts(logFile)
		row.LogSlowConsumer, row.LogTimeouts = slowAfter-slowBefore, timeoutsAfter-timeoutsBefore
		logf("%-16s slow c=%d: %d sent, %d ok, %d busy, %d other failures, %d unanswered %s",
			k.Label, o.slowConcurrency, row.Sent, row.OK, row.Busy, row.Failed-row.Busy, row.NoReply, row.Error)
		res.Slow = append(res.Slow, row)
		if err := p.stop(20 * time.Second); err != nil {
			res.Notes = append(res.Notes, err.Error())
		}
	}

	res.Idle = e.idle(ctx, o, res)
	res.Startup = startup(ctx, o)
	res.Elapsed = time.Since(began).Seconds()

	b, _ := json.MarshalIndent(res, "", "  ")
	resultsFile := filepath.Join(e.dir, "results.json")
	if err := os.WriteFile(resultsFile, b, 0o644); err != nil {
		return err
	}
	logf("results in %s", resultsFile)
	if err := writeReport(res, o); err != nil {
		return err
	}
	logf("wrote %s and %s in %.0f s", o.out, o.plot, res.Elapsed)
	return nil
}

func writeReport(res *Results, o options) error {
	if err := writeSection(o.out, "e2e", e2eMarkdown(res, o)); err != nil {
		return err
	}
	if o.plot == "" {
		return nil
	}
	return writePlot(o.plot, res)
}

// rewriteReport writes the report and plot of a saved run again.
func rewriteReport(o options) error {
	b, err := os.ReadFile(o.results)
	if err != nil {
		return err
	}
	var res Results
	if err := json.Unmarshal(b, &res); err != nil {
		return fmt.Errorf("%s: %w", o.results, err)
	}
	return writeReport(&res, o)
}

// idle starts the reference server and agent-host (pool set-up, one warm
// worker per pooled agent) with idleAgents agents and measures their
// memory with no requests.
func (e *env) idle(ctx context.Context, o options, res *Results) []Idle {
	libdir := filepath.Join(e.dir, "lib-idle")
	want := []string{"rpcutil", "greeter", "pooltest"}
	err := func() error {
		if err := installAgent(libdir, filepath.Join(o.agents, "greeter"), "greeter"); err != nil {
			return err
		}
		if err := e.installPooltest(libdir); err != nil {
			return err
		}
		for i := 1; i <= o.idleAgents-2; i++ {
			name := fmt.Sprintf("nodeinfo%02d", i)
			if err := installAgent(libdir, filepath.Join(o.agents, "nodeinfo"), name); err != nil {
				return err
			}
			want = append(want, name)
		}
		return nil
	}()
	if err != nil {
		return []Idle{{Error: err.Error()}}
	}
	var out []Idle
	for _, k := range []serverKind{serverRef, serverPool} {
		if !slices.Contains(o.servers, k.Key) {
			continue
		}
		if k.Key == "ref" {
			if _, err := os.Stat(o.reference); err != nil {
				continue
			}
		}
		idle := Idle{Server: k.Key, Agents: o.idleAgents}
		err := func() error {
			conf, err := e.config(k, k.Key+"-idle", libdir, "plugin.agent_host.pool.min_workers", "1")
			if err != nil {
				return err
			}
			logf("starting %s with %d agents", k.Label, o.idleAgents)
			p, err := e.startServer(ctx, k, k.Key+"-idle", conf, want)
			if err != nil {
				return err
			}
			defer p.stop(20 * time.Second) //nolint:errcheck
			// Let start-up settle: activation checks done, warm workers
			// started, the runtime's memory returned.
			wantWorkers := 0
			if k.Key == "pool" {
				wantWorkers = 2
			}
			deadline := time.Now().Add(30 * time.Second)
			time.Sleep(3 * time.Second)
			for {
				r, err := e.load.run(ctx, "--concurrency", "1", "--requests", "1", "--pid", itoa(p.pid()), "rpcutil", "ping")
				if err != nil {
					return err
				}
				idle.RSSKiB, idle.Workers, idle.WorkersRSSKiB = r.RSSEndKiB, r.Workers, r.WorkersRSSEndKiB
				if r.Workers >= wantWorkers || time.Now().After(deadline) {
					return nil
				}
				time.Sleep(time.Second)
			}
		}()
		if err != nil {
			idle.Error = err.Error()
		}
		logf("%s idle with %d agents: RSS %d KiB, %d workers %d KiB %s", k.Label, o.idleAgents, idle.RSSKiB, idle.Workers, idle.WorkersRSSKiB, idle.Error)
		out = append(out, idle)
	}
	return out
}

// logCounts counts the lines of a server's log that say NATS dropped
// messages for a slow consumer, and that a request timed out.
func logCounts(path string) (slowConsumer, timeouts int) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(strings.ToLower(string(b)), "\n") {
		if strings.Contains(line, "slow consumer") {
			slowConsumer++
		}
		if strings.Contains(line, "timeout") || strings.Contains(line, "timed out") {
			timeouts++
		}
	}
	return slowConsumer, timeouts
}

func execOutput(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).Output()
	return string(out), err
}

func pythonVersion() string {
	out, err := execOutput("python3", "--version")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(out), "Python"))
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// writeSection replaces the text between <!-- name:begin --> and
// <!-- name:end --> in the Markdown file at path, or appends the section.
func writeSection(path, name, body string) error {
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	begin, end := "<!-- "+name+":begin -->", "<!-- "+name+":end -->"
	doc := string(b)
	section := begin + "\n" + body + end
	i, j := strings.Index(doc, begin), strings.Index(doc, end)
	if i >= 0 && j > i {
		doc = doc[:i] + section + doc[j+len(end):]
	} else {
		doc = strings.TrimRight(doc, "\n") + "\n\n" + section + "\n"
	}
	return os.WriteFile(path, []byte(doc), 0o644)
}

// hasPluginChild reports whether a child of pid was started with
// go-plugin's magic cookie in its environment: a go-plugin plugin.
func hasPluginChild(pid int) bool {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, stat := range stats {
		b, err := os.ReadFile(stat)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(fields) < 2 || fields[1] != strconv.Itoa(pid) {
			continue
		}
		env, _ := os.ReadFile(filepath.Join(filepath.Dir(stat), "environ"))
		if bytes.Contains(env, []byte(gp.MagicCookieKey+"=")) {
			return true
		}
	}
	return false
}
