// Command agent-host-bench is `make bench`'s end-to-end benchmark: the
// real go-choria server (bin/reference-server, built from go-choria's
// own packages in testdata/choria-interop), agent-host with every agent
// spawned per request (exec) and agent-host pooling the agents that speak
// its worker protocol (pool), one after the other, each serving the same
// agents on the same TLS NATS broker with file security, driven by
// agent-host-load with signed requests. It writes the results into
// BENCHMARKS.md between markers and draws them as a PNG.
//
//	agent-host-bench run  --out BENCHMARKS.md --plot BENCHMARKS.png
//	agent-host-bench long --out BENCHMARKS.md --requests 200000
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
)

type options struct {
	work, out, plot, results               string
	agentHost, load, reference             string
	agents, pooltestBin, pooltestDDL       string
	sdkVenv, pymcoVenv, startupTool        string
	startupRuns                            int
	duration, ramp, slowDuration, longRamp time.Duration
	concurrency                            []int
	servers                                []string
	slowConcurrency, slowMS, idleAgents    int
	longRequests                           int64
	longConcurrency                        int
	commit                                 string
	uncommitted                            int
}

func main() {
	var o options
	app := kingpin.New("agent-host-bench", "End-to-end benchmark of agent-host against the go-choria server.")
	runCmd := app.Command("run", "Measure every server, agent and concurrency; write the report and the plot.")
	longCmd := app.Command("long", "A long run of pooled requests against agent-host, watching its memory and its workers'.")
	reportCmd := app.Command("report", "Write the report and the plot again from a run's results.json.")
	reportCmd.Arg("results", "results.json of a run.").Required().StringVar(&o.results)
	reportCmd.Flag("out", "Markdown file whose generated section is replaced.").Default("BENCHMARKS.md").StringVar(&o.out)
	reportCmd.Flag("plot", "PNG to draw.").Default("BENCHMARKS.png").StringVar(&o.plot)
	reportCmd.Flag("slow-concurrency", "Concurrency of the slow-agent row.").Default("64").IntVar(&o.slowConcurrency)
	for _, c := range []*kingpin.CmdClause{runCmd, longCmd} {
		c.Flag("work", "Scratch directory (emptied first): PKI, configurations, agents, logs, results.").Default("bin/bench").StringVar(&o.work)
		c.Flag("out", "Markdown file whose generated sections are replaced.").Default("BENCHMARKS.md").StringVar(&o.out)
		c.Flag("agent-host", "agent-host binary.").Default("bin/agent-host").StringVar(&o.agentHost)
		c.Flag("load", "agent-host-load binary.").Default("bin/agent-host-load").StringVar(&o.load)
		c.Flag("agents", "The example agents.").Default("testdata/agents").StringVar(&o.agents)
		c.Flag("pooltest", "The pooltest agent binary (sdk-go), for the slow agent.").Default("bin/pooltest").StringVar(&o.pooltestBin)
		c.Flag("pooltest-ddl", "The pooltest agent's DDL.").Default("testdata/pool/pooltest.json").StringVar(&o.pooltestDDL)
		c.Flag("sdk-venv", "The virtual environment with sdk-python installed, whose python runs the Python SDK's parrot.").Default(".venv-sdk").StringVar(&o.sdkVenv)
		c.Flag("commit", "The commit measured (default: git rev-parse --short HEAD).").StringVar(&o.commit)
	}
	runCmd.Flag("pymco-venv", "The virtual environment with the real py-mco-agent, for the exec start-up comparison.").Default(".venv").StringVar(&o.pymcoVenv)
	runCmd.Flag("startup-tool", "sdk-python's start-up timer.").Default("sdk-python/tools/startup.py").StringVar(&o.startupTool)
	runCmd.Flag("startup-runs", "Runs of the Python parrot per environment in the start-up comparison.").Default("30").IntVar(&o.startupRuns)
	runCmd.Flag("plot", "PNG to draw.").Default("BENCHMARKS.png").StringVar(&o.plot)
	runCmd.Flag("reference", "The go-choria reference server binary; its rows are left out when it is missing.").Default("bin/reference-server").StringVar(&o.reference)
	runCmd.Flag("duration", "How long each row is measured.").Default("8s").DurationVar(&o.duration)
	runCmd.Flag("ramp", "Warm-up before each row, not measured.").Default("1s").DurationVar(&o.ramp)
	runCmd.Flag("concurrency", "Concurrencies measured.").Default("1", "4", "16").IntsVar(&o.concurrency)
	runCmd.Flag("server", "Servers measured: ref, exec, pool, plugin.").Default("ref", "exec", "pool", "plugin").EnumsVar(&o.servers, "ref", "exec", "pool", "plugin")
	runCmd.Flag("slow-concurrency", "Concurrency of the slow-agent row.").Default("64").IntVar(&o.slowConcurrency)
	runCmd.Flag("slow-ms", "How long the slow agent takes per request.").Default("500").IntVar(&o.slowMS)
	runCmd.Flag("slow-duration", "How long the slow-agent row sends requests.").Default("5s").DurationVar(&o.slowDuration)
	runCmd.Flag("idle-agents", "How many agents the idle-memory servers load.").Default("50").IntVar(&o.idleAgents)
	longCmd.Flag("requests", "Requests in the long run.").Default("200000").Int64Var(&o.longRequests)
	longCmd.Flag("concurrency", "Concurrency of the long run.").Default("8").IntVar(&o.longConcurrency)
	longCmd.Flag("ramp", "Warm-up before the long run.").Default("2s").DurationVar(&o.longRamp)
	cmd := kingpin.MustParse(app.Parse(os.Args[1:]))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.commit == "" {
		o.commit, o.uncommitted = gitCommit()
	}
	var err error
	switch cmd {
	case runCmd.FullCommand():
		err = runBench(ctx, o)
	case longCmd.FullCommand():
		err = runLong(ctx, o)
	case reportCmd.FullCommand():
		err = rewriteReport(o)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "agent-host-bench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// gitCommit names the commit measured, and counts the tracked files other
// than the report that differ from it in the checkout the binaries were
// built from.
func gitCommit() (string, int) {
	out, err := execOutput("git", "rev-parse", "--short", "HEAD")
	if err != nil {
		return "unknown", 0
	}
	status, err := execOutput("git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!BENCHMARKS.md", ":!BENCHMARKS.png")
	if err != nil || strings.TrimSpace(status) == "" {
		return strings.TrimSpace(out), 0
	}
	return strings.TrimSpace(out), len(strings.Split(strings.TrimSpace(status), "\n"))
}

// commitNote says which commit was measured, in Markdown.
func commitNote(commit string, uncommitted int) string {
	s := "commit `" + commit + "`"
	if uncommitted > 0 {
		s += fmt.Sprintf(" (with uncommitted changes to %d tracked files in the checkout, which the binaries were built from)", uncommitted)
	}
	return s
}
