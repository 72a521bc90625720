package main

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// runLong sends longRequests pooled requests (greeter hello) to agent-host
// in its pool set-up and reports its memory and its workers' after the
// first tenth and at the end.
func runLong(ctx context.Context, o options) error {
	began := time.Now()
	e, err := setUp(o)
	if err != nil {
		return err
	}
	defer e.close()
	libdir := filepath.Join(e.dir, "lib")
	if err := installAgent(libdir, filepath.Join(o.agents, "greeter"), "greeter"); err != nil {
		return err
	}
	// Workers are never replaced for age or request count in this run, so
	// that a leak in them would show.
	conf, err := e.config(serverPool, "long", libdir, "plugin.agent_host.pool.max_requests", "0")
	if err != nil {
		return err
	}
	p, err := e.startServer(ctx, serverPool, "long", conf, []string{"rpcutil", "greeter"})
	if err != nil {
		return err
	}
	warmup := o.longRequests / 10
	logf("agent-host pool: %d greeter hello requests at concurrency %d", o.longRequests, o.longConcurrency)
	res, err := e.load.run(ctx, "--concurrency", itoa(o.longConcurrency), "--requests", fmt.Sprint(o.longRequests),
		"--warmup", fmt.Sprint(warmup), "--ramp", o.longRamp.String(), "--timeout", "30s", "--pid", itoa(p.pid()),
		"--data", `{"name":"load"}`, "greeter", "hello")
	stopErr := p.stop(20 * time.Second)
	if err != nil {
		return err
	}
	if len(res.Kinds) == 0 {
		return fmt.Errorf("agent-host-load reported nothing")
	}
	k := res.Kinds[0]
	change := func(a, b int64) string {
		if a == 0 {
			return "—"
		}
		return fmt.Sprintf("%+.1f %%", 100*float64(b-a)/float64(a))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Run on %s on %s: %d CPUs, %s, %s; %.0f s in all. agent-host in its pool set-up on the bench's TLS broker, "+
		"signed requests, workers never replaced for age or count (`plugin.agent_host.pool.max_requests = 0`).\n\n",
		time.Now().UTC().Format("2006-01-02"), commitNote(o.commit, o.uncommitted), runtime.NumCPU(), runtime.GOOS+"/"+runtime.GOARCH, runtime.Version(), time.Since(began).Seconds())
	b.WriteString("| requests | c | req/s | ok | failed | no reply | p50 ms | p95 ms | p99 ms | host CPU ms/req | workers' CPU ms/req |\n")
	b.WriteString("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	h, w := 0.0, 0.0
	if n := k.Answered(); n > 0 && res.ServerCPU != nil {
		h, w = 1000**res.ServerCPU/float64(n), 1000**res.AgentsCPU/float64(n)
	}
	fmt.Fprintf(&b, "| %d | %d | %s | %d | %d | %d | %s | %s | %s | %s | %s |\n\n", k.Sent, res.Concurrency, num(res.PerSecond),
		k.OK, k.Failed, k.NoReply, num(k.P50ms), num(k.P95ms), num(k.P99ms), num(h), num(w))
	b.WriteString("| RSS | after the first tenth | at the end | change |\n| --- | ---: | ---: | ---: |\n")
	fmt.Fprintf(&b, "| agent-host | %s MiB | %s MiB | %s |\n", mib(res.RSSWarmKiB), mib(res.RSSEndKiB), change(res.RSSWarmKiB, res.RSSEndKiB))
	fmt.Fprintf(&b, "| its workers (%d) together | %s MiB | %s MiB | %s |\n", res.Workers, mib(res.WorkersRSSWarmKiB), mib(res.WorkersRSSEndKiB), change(res.WorkersRSSWarmKiB, res.WorkersRSSEndKiB))
	flat := func(a, b int64) bool { return a > 0 && 100*float64(b-a)/float64(a) <= 10 }
	fmt.Fprintf(&b, "\nRSS flat (within 10 %%) over %d pooled requests, host and workers: %s.\n", k.Sent,
		verdict(k.NoReply == 0 && flat(res.RSSWarmKiB, res.RSSEndKiB) && flat(res.WorkersRSSWarmKiB, res.WorkersRSSEndKiB)))
	if stopErr != nil {
		fmt.Fprintf(&b, "\n**Note:** %s\n", stopErr)
	}
	if err := writeSection(o.out, "long", b.String()); err != nil {
		return err
	}
	logf("wrote %s:\n%s", o.out, b.String())
	return nil
}
