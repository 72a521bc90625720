package main

import (
	"fmt"
	"path/filepath"
	"strings"
)

// find returns the row of agent label on server at concurrency c.
func (r *Results) find(label, server string, c int) *Row {
	for i := range r.Rows {
		row := &r.Rows[i]
		if row.Agent == label && row.Server == server && row.Concurrency == c && row.Error == "" {
			return row
		}
	}
	return nil
}

func (r *Results) serverLabel(key string) string {
	for _, s := range r.Servers {
		if s.Key == key {
			return s.Label
		}
	}
	return key
}

// num formats a number with the precision its size deserves.
func num(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	case v >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

func ratio(v, ref float64) string {
	if ref <= 0 || v <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f×", v/ref)
}

func mib(kib int64) string { return fmt.Sprintf("%.1f", float64(kib)/1024) }

func verdict(ok bool) string {
	if ok {
		return "**met**"
	}
	return "**not met**"
}

func e2eMarkdown(r *Results, o options) string {
	var b strings.Builder
	cpu := fmt.Sprintf("%d CPUs", r.CPUs)
	if r.CPUModel != "" {
		cpu += " (" + r.CPUModel + ")"
	}
	fmt.Fprintf(&b, "Run on %s on %s: %s, %s, %s, Python %s; `make bench` took %.0f s for this part. "+
		"Each row is %s of warm-up (not counted), then %s measured. Client, broker, servers and agents share the CPUs.\n\n",
		r.Date, commitNote(r.Commit, r.Uncommitted), cpu, r.Platform, r.GoVersion, r.Python, r.Elapsed, r.Ramp, r.Duration)
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "**Note:** %s\n\n", n)
	}
	if o.plot != "" {
		rel, err := filepath.Rel(filepath.Dir(o.out), o.plot)
		if err != nil {
			rel = o.plot
		}
		fmt.Fprintf(&b, "![req/s and CPU per request by agent and server](%s)\n\n", filepath.ToSlash(rel))
	}

	b.WriteString("The agents:\n\n| agent action | written in |\n| --- | --- |\n")
	for _, a := range r.Agents {
		fmt.Fprintf(&b, "| `%s` | %s |\n", a.Label, a.Kind)
	}
	b.WriteString("\n")

	b.WriteString("req/s counts answered requests, from the start of the row to its last reply; × ref is against go-choria serving the same agent at the same concurrency. " +
		"CPU is per answered request: the server process's own (host), and its agents' (the processes it spawned and reaped, " +
		"and its live pool workers), from `/proc` before and after the row; the broker and the client are not in it. " +
		"CPU × ref compares host + agents.\n\n")
	b.WriteString("| agent action | server | runs as | c | req/s | × ref | p50 ms | p95 ms | p99 ms | failed / no reply | host CPU ms/req | agents CPU ms/req | CPU × ref |\n")
	b.WriteString("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, a := range r.Agents {
		if a.Pending != "" {
			fmt.Fprintf(&b, "| `%s` | agent-host pool | pooled | | not measured: %s | | | | | | | | |\n", a.Label, a.Pending)
			continue
		}
		for _, c := range r.Concurrency {
			ref := r.find(a.Label, "ref", c)
			for _, s := range r.Servers {
				row := r.find(a.Label, s.Key, c)
				if row == nil {
					for _, x := range r.Rows {
						if x.Agent == a.Label && x.Server == s.Key && x.Concurrency == c && x.Error != "" {
							fmt.Fprintf(&b, "| `%s` | %s | | %d | failed: %s | | | | | | | | |\n", a.Label, s.Label, c, oneLine(x.Error))
						}
					}
					continue
				}
				h, ag := row.cpuPerRequest()
				vsRef, cpuRef := "—", "—"
				if ref != nil && s.Key != "ref" {
					rh, ra := ref.cpuPerRequest()
					vsRef, cpuRef = ratio(row.PerSecond, ref.PerSecond), ratio(h+ag, rh+ra)
				} else if s.Key == "ref" {
					vsRef, cpuRef = "1", "1"
				}
				fmt.Fprintf(&b, "| `%s` | %s | %s | %d | %s | %s | %s | %s | %s | %d / %d | %s | %s | %s |\n",
					a.Label, s.Label, row.Mode, c, num(row.PerSecond), vsRef, num(row.P50ms), num(row.P95ms), num(row.P99ms),
					row.Failed, row.NoReply, num(h), num(ag), cpuRef)
			}
		}
	}
	var logged []string
	for _, row := range r.Rows {
		if row.LogSlowConsumer > 0 || row.LogTimeouts > 0 {
			logged = append(logged, fmt.Sprintf("%s, `%s` c=%d: %d slow-consumer and %d timeout lines",
				r.serverLabel(row.Server), row.Agent, row.Concurrency, row.LogSlowConsumer, row.LogTimeouts))
		}
	}
	if len(logged) > 0 {
		b.WriteString("\nThe servers' logs during these rows said NATS dropped requests (\"slow consumer, messages dropped\") or a request timed out: " +
			strings.Join(logged, "; ") + ".\n")
	}
	b.WriteString("\nIn the pool set-up agent-host pools the agents that speak its worker protocol (here `greeter`, written with sdk-go, " +
		"and `parrot_sdk`, the parrot file run with agent-host's Python SDK, whose activation says it speaks it) " +
		"and spawns the others per request, as the exec set-up does: `nodeinfo` and py-mco-agent's `parrot` do not speak it. " +
		"go-choria and agent-host exec spawn the Python SDK's parrot per request, so its rows there are the SDK's exec mode. " +
		"`rpcutil` is built into both servers. So both agent-host set-ups run `rpcutil`, `nodeinfo` and `parrot` the same way: " +
		"the differences between their rows are this machine's noise from row to row. " +
		"The pool set-up keeps `greeter` on the worker protocol's streams (`plugin.agent_host.pool.greeter.mode = pool`); " +
		"the go-plugin set-up runs it as agent-host does with no configuration, as hashicorp/go-plugin gRPC plugins, " +
		"the same binary and the same pool supervision, and measures only it.\n\n")

	fmt.Fprintf(&b, "### A slow agent at concurrency %d\n\n", slowConcurrency(r, o))
	fmt.Fprintf(&b, "`%s`, requests sent for %s, each loop waiting up to 30 s for its reply. "+
		"agent-host's defaults: 64 requests in flight, 32 per agent, 1024 queued.\n\n", r.SlowAgent, r.SlowDuration)
	b.WriteString("| server | runs as | c | sent | replies OK | busy replies | other errors | unanswered | p50 ms | p99 ms | max ms | its log: slow consumer / timeout lines |\n")
	b.WriteString("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, row := range r.Slow {
		if row.Error != "" {
			fmt.Fprintf(&b, "| %s | %s | %d | failed: %s | | | | | | | | |\n", r.serverLabel(row.Server), row.Mode, row.Concurrency, oneLine(row.Error))
			continue
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %d | %d | %d | %d | %d | %s | %s | %s | %d / %d |\n", r.serverLabel(row.Server), row.Mode, row.Concurrency,
			row.Sent, row.OK, row.Busy, row.Failed-row.Busy, row.NoReply, num(row.P50ms), num(row.P99ms), num(row.MaxMs), row.LogSlowConsumer, row.LogTimeouts)
	}
	b.WriteString("\ngo-choria starts every request's agent at once, with no limit, and checks requests one at a time from a NATS channel " +
		"subscription buffered for 10 messages, beyond which NATS drops them (\"slow consumer\"); a request whose agent does not finish " +
		"within the DDL's timeout gets no reply. " +
		"agent-host queues what it cannot run yet and answers a request it cannot queue, or that waited past its TTL, that the node is busy.\n")

	b.WriteString("\n### Memory, idle, with 50 agents loaded\n\n")
	b.WriteString("48 copies of the sh agent `nodeinfo`, `greeter` and `pooltest`; agent-host in its pool set-up with " +
		"`plugin.agent_host.pool.min_workers = 1`, so the two sdk-go agents each keep one warm worker, reported apart from the host. " +
		"Resident memory after start-up has settled, no requests but one `rpcutil ping` to read it.\n\n")
	b.WriteString("| server | agents | server RSS MiB | warm workers | workers' RSS MiB |\n| --- | ---: | ---: | ---: | ---: |\n")
	for _, i := range r.Idle {
		if i.Error != "" {
			fmt.Fprintf(&b, "| %s | %d | failed: %s | | |\n", r.serverLabel(i.Server), i.Agents, oneLine(i.Error))
			continue
		}
		fmt.Fprintf(&b, "| %s | %d | %s | %d | %s |\n", r.serverLabel(i.Server), i.Agents, mib(i.RSSKiB), i.Workers, mib(i.WorkersRSSKiB))
	}

	startupMarkdown(&b, r.Startup)

	b.WriteString("\n### Against the targets\n\n")
	targets(&b, r, o)
	return b.String()
}

// startupMarkdown is the exec start-up comparison: the same parrot file,
// once with the SDK and once with py-mco-agent, the same interpreter.
func startupMarkdown(b *strings.Builder, s *Startup) {
	if s == nil {
		return
	}
	b.WriteString("\n### Exec start-up of a Python agent\n\n")
	if s.Error != "" {
		fmt.Fprintf(b, "Not measured: %s\n", oneLine(s.Error))
		return
	}
	fmt.Fprintf(b, "`sdk-python/tools/startup.py`: parrot's `echo` (`testdata/agents/parrot`, unchanged) run %d times through the file protocol "+
		"by each virtual environment's interpreter, alternating — fork, exec, interpreter start-up, imports, request read and checked, reply written, exit. "+
		"This is the whole cost of one request in exec mode, under Choria or agent-host.\n\n", s.Runs)
	b.WriteString("| environment | packages | mean ms | median ms | min ms |\n| --- | --- | ---: | ---: | ---: |\n")
	for _, e := range s.Envs {
		fmt.Fprintf(b, "| `%s` | %s | %s | %s | %s |\n", e.Venv, e.Packages, num(e.MeanMS), num(e.MedianMS), num(e.MinMS))
	}
}

// startupTarget: exec start-up with the SDK at most a third of py-mco-agent's.
func startupTarget(b *strings.Builder, s *Startup) {
	const what = "* Exec start-up of the Python parrot with the SDK ≤ 1/3 of py-mco-agent's (median, same interpreter)"
	if s == nil || s.Error != "" || len(s.Envs) != 2 || s.Envs[1].MedianMS == 0 {
		fmt.Fprintf(b, "%s: not measured — %s.\n", what, verdict(false))
		return
	}
	q := s.Envs[0].MedianMS / s.Envs[1].MedianMS
	fmt.Fprintf(b, "%s: %s ms against %s ms, %.2f× — %s.\n", what, num(s.Envs[0].MedianMS), num(s.Envs[1].MedianMS), q, verdict(q <= 1.0/3))
}

func targets(b *strings.Builder, r *Results, o options) {
	// Pooled Go agent against agent-host's own ping rate.
	var parts []string
	ok := true
	for _, c := range r.Concurrency {
		g, p := r.find("greeter hello", "pool", c), r.find("rpcutil ping", "pool", c)
		if g == nil || p == nil || p.PerSecond == 0 {
			ok = false
			continue
		}
		pc := 100 * g.PerSecond / p.PerSecond
		ok = ok && pc >= 90
		parts = append(parts, fmt.Sprintf("c=%d %.0f %%", c, pc))
	}
	fmt.Fprintf(b, "* Pooled Go agent (`greeter hello`, agent-host pool) at ≥ 90 %% of agent-host's own `rpcutil ping` rate: %s — %s.\n",
		strings.Join(parts, ", "), verdict(ok && len(parts) > 0))

	sdkTarget(b, r)
	startupTarget(b, r.Startup)

	// exec against the reference, same agent.
	parts, ok = nil, true
	haveRef := false
	for _, a := range r.Agents {
		if a.Builtin || a.Pending != "" {
			continue
		}
		for _, c := range r.Concurrency {
			x, ref := r.find(a.Label, "exec", c), r.find(a.Label, "ref", c)
			if x == nil || ref == nil || ref.PerSecond == 0 {
				continue
			}
			haveRef = true
			q := x.PerSecond / ref.PerSecond
			ok = ok && q >= 1
			parts = append(parts, fmt.Sprintf("`%s` c=%d %.2f×", a.Label, c, q))
		}
	}
	if haveRef {
		fmt.Fprintf(b, "* agent-host exec at least the reference's req/s for the same agent: %s — %s.\n", strings.Join(parts, ", "), verdict(ok))
	} else {
		b.WriteString("* agent-host exec at least the reference's req/s for the same agent: not measured, the reference server was not run.\n")
	}

	// Host CPU per spawned request.
	parts, ok = nil, true
	for _, a := range r.Agents {
		if a.Builtin || a.Pending != "" {
			continue
		}
		for _, c := range r.Concurrency {
			x := r.find(a.Label, "exec", c)
			if x == nil {
				continue
			}
			h, _ := x.cpuPerRequest()
			ok = ok && h <= 0.5
			parts = append(parts, fmt.Sprintf("`%s` c=%d %.2f ms", a.Label, c, h))
		}
	}
	fmt.Fprintf(b, "* Host CPU per spawned request (agent-host exec, its own process, agents not included) ≤ 0.5 ms: %s — %s.\n",
		strings.Join(parts, ", "), verdict(ok && len(parts) > 0))
	// What spawning adds to the request path: above the same server's ping.
	parts = nil
	for _, a := range r.Agents {
		if a.Builtin || a.Pending != "" {
			continue
		}
		for _, c := range r.Concurrency {
			x, ping := r.find(a.Label, "exec", c), r.find("rpcutil ping", "exec", c)
			if x == nil || ping == nil {
				continue
			}
			h, _ := x.cpuPerRequest()
			ph, _ := ping.cpuPerRequest()
			parts = append(parts, fmt.Sprintf("`%s` c=%d %.2f ms", a.Label, c, h-ph))
		}
	}
	if len(parts) > 0 {
		fmt.Fprintf(b, "  Of that, above the request path itself (the same row's host CPU less that of `rpcutil ping` at the same concurrency): %s.\n", strings.Join(parts, ", "))
	}
	for _, c := range r.Concurrency {
		x, ref := r.find("nodeinfo uptime", "exec", c), r.find("nodeinfo uptime", "ref", c)
		if x != nil && ref != nil {
			h, _ := x.cpuPerRequest()
			rh, _ := ref.cpuPerRequest()
			fmt.Fprintf(b, "  For comparison, go-choria's own CPU per spawned `nodeinfo` request at c=%d: %.2f ms (agent-host %.2f ms).\n", c, rh, h)
			break
		}
	}

	// Every request of the table answered.
	lost := map[string]int64{}
	var where []string
	for _, row := range r.Rows {
		lost[row.Server] += row.NoReply
		if row.NoReply > 0 && row.Server != "ref" {
			where = append(where, fmt.Sprintf("%s `%s` c=%d: %d", r.serverLabel(row.Server), row.Agent, row.Concurrency, row.NoReply))
		}
	}
	if len(where) == 0 {
		fmt.Fprintf(b, "* Every request of the table above answered by agent-host (go-choria, for comparison: %d unanswered) — %s.\n", lost["ref"], verdict(true))
	} else {
		fmt.Fprintf(b, "* Every request of the table above answered by agent-host: unanswered %s (go-choria, for comparison: %d) — %s.\n",
			strings.Join(where, ", "), lost["ref"], verdict(false))
	}

	// Slow agent: the target is agent-host's; the reference for comparison.
	parts, ok = nil, true
	var refPart string
	for _, row := range r.Slow {
		if row.Server == "ref" {
			if row.Error == "" {
				refPart = fmt.Sprintf(" (go-choria, for comparison: %d of %d unanswered)", row.NoReply, row.Sent)
			}
			continue
		}
		if row.Error != "" {
			ok = false
			continue
		}
		ok = ok && row.NoReply == 0
		parts = append(parts, fmt.Sprintf("%s %d of %d unanswered, %d busy replies", r.serverLabel(row.Server), row.NoReply, row.Sent, row.Busy))
	}
	fmt.Fprintf(b, "* At concurrency %d against a slow agent, 0 requests unanswered, each its reply or a clear busy error: %s%s — %s.\n",
		slowConcurrency(r, o), strings.Join(parts, "; "), refPart, verdict(ok && len(parts) > 0))

	// Idle memory.
	for _, i := range r.Idle {
		if i.Server == "pool" && i.Error == "" {
			fmt.Fprintf(b, "* Host RSS under 30 MiB idle with %d agents loaded: %s MiB, workers apart (%d, %s MiB together) — %s.\n",
				i.Agents, mib(i.RSSKiB), i.Workers, mib(i.WorkersRSSKiB), verdict(i.RSSKiB < 30*1024))
		}
	}
	b.WriteString("* RSS flat over at least 200 000 pooled requests: `make bench-long`, below.\n")
}

// sdkParrot is the label of the parrot run with the Python SDK.
const sdkParrot = "parrot echo (Python SDK)"

// sdkTarget evaluates the pooled Python parrot at concurrency 4 against
// go-choria serving py-mco-agent's parrot, and against agent-host's own
// ping rate in the same run.
func sdkTarget(b *strings.Builder, r *Results) {
	const c = 4
	const what = "* Pooled Python parrot (`" + sdkParrot + "`, agent-host pool) at c=4: ≥ 30× the reference's req/s for py-mco-agent's `parrot echo` " +
		"(go-choria) and ≤ 1/50 of its CPU per request (host + agents), p99 under 20 ms, and ≥ 80 % of agent-host's own `rpcutil ping` rate"
	p, ref, ping := r.find(sdkParrot, "pool", c), r.find("parrot echo", "ref", c), r.find("rpcutil ping", "pool", c)
	if p == nil {
		fmt.Fprintf(b, "%s: not measured — %s.\n", what, verdict(false))
		return
	}
	var parts []string
	ok := true
	if ref != nil && ref.PerSecond > 0 {
		h, a := p.cpuPerRequest()
		rh, ra := ref.cpuPerRequest()
		q := p.PerSecond / ref.PerSecond
		okQ := q >= 30
		okC := rh+ra > 0 && (h+a)*50 <= rh+ra
		ok = ok && okQ && okC
		parts = append(parts, fmt.Sprintf("%s req/s against %s, %.1f× (%s)", num(p.PerSecond), num(ref.PerSecond), q, metWord(okQ)))
		cpuQ := "—"
		if h+a > 0 {
			cpuQ = fmt.Sprintf("1/%.0f", (rh+ra)/(h+a))
		}
		parts = append(parts, fmt.Sprintf("CPU %s ms/req against %s, %s (%s)", num(h+a), num(rh+ra), cpuQ, metWord(okC)))
	} else {
		ok = false
		parts = append(parts, "the reference's `parrot echo` row at c=4 is missing")
	}
	okP := p.P99ms < 20
	ok = ok && okP
	parts = append(parts, fmt.Sprintf("p99 %s ms (%s)", num(p.P99ms), metWord(okP)))
	if ping != nil && ping.PerSecond > 0 {
		pc := 100 * p.PerSecond / ping.PerSecond
		ok = ok && pc >= 80
		parts = append(parts, fmt.Sprintf("%.0f %% of ping's %s req/s (%s)", pc, num(ping.PerSecond), metWord(pc >= 80)))
	} else {
		ok = false
		parts = append(parts, "agent-host pool's `rpcutil ping` row at c=4 is missing")
	}
	var other []string
	for _, oc := range r.Concurrency {
		x, pg := r.find(sdkParrot, "pool", oc), r.find("rpcutil ping", "pool", oc)
		if oc == c || x == nil {
			continue
		}
		s := fmt.Sprintf("c=%d %s req/s, p99 %s ms", oc, num(x.PerSecond), num(x.P99ms))
		if pg != nil && pg.PerSecond > 0 {
			s += fmt.Sprintf(", %.0f %% of ping", 100*x.PerSecond/pg.PerSecond)
		}
		other = append(other, s)
	}
	fmt.Fprintf(b, "%s: %s — %s.\n", what, strings.Join(parts, "; "), verdict(ok))
	if len(other) > 0 {
		fmt.Fprintf(b, "  At the other concurrencies, for information: %s.\n", strings.Join(other, "; "))
	}
}

func metWord(ok bool) string {
	if ok {
		return "met"
	}
	return "not met"
}

func slowConcurrency(r *Results, o options) int {
	if len(r.Slow) > 0 {
		return r.Slow[0].Concurrency
	}
	return o.slowConcurrency
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	s = strings.ReplaceAll(s, "|", "/")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
