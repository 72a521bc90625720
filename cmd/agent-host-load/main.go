// Command agent-host-load drives a node with RPC requests at a fixed
// concurrency and reports throughput and latency percentiles. It speaks the
// same Choria v1 protocol as `choria req`, one direct request per call:
// each concurrent loop has its own NATS connection and subscribes to each
// request's own reply subject before sending it. With --cert, requests are
// signed and the connections use TLS.
//
//	agent-host-load --broker nats://127.0.0.1:4222 --identity dev1.example.net \
//	    --concurrency 8 --duration 10s rpcutil ping
//
// With --mix it sends several kinds of request by weight, malformed and
// hostile messages among them, and with --pid it also watches the node's
// process: that it stays up, and its memory after warm-up and at the end.
// With --pid it also measures the CPU time the node and its agents used
// (Linux). That is the soak run of `make soak`:
//
//	agent-host-load --identity dev1.example.net --requests 1000000 --pid 1234 \
//	    --mix rpcutil#ping:97,nodeinfo#uptime:1,malformed:2
package main

import (
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/nats-io/nats.go"

	"github.com/agent-host/agent-host/cmd/internal/loadreport"
	"github.com/agent-host/agent-host/protocol"
	"github.com/agent-host/agent-host/protocol/client"
	"github.com/agent-host/agent-host/protocol/security"
	v1 "github.com/agent-host/agent-host/protocol/v1"
)

type options struct {
	broker, identity, caller, collective string
	agent, action, data, mix             string
	concurrency                          int
	requests, warmup                     int64
	duration, timeout, ramp              time.Duration
	cert, key, ca                        string
	pid                                  int
	jsonOut, strays                      bool
	report                               string
}

func main() {
	var o options
	app := kingpin.New("agent-host-load", "Load a Choria node with RPC requests and report latency.")
	app.Flag("broker", "NATS URL.").Default("nats://127.0.0.1:4222").StringVar(&o.broker)
	app.Flag("identity", "The node to address.").Required().StringVar(&o.identity)
	app.Flag("caller", "Caller certname.").Default("load.mcollective").StringVar(&o.caller)
	app.Flag("collective", "Collective.").Default("mcollective").StringVar(&o.collective)
	app.Flag("concurrency", "Requests outstanding at once.").Default("4").IntVar(&o.concurrency)
	app.Flag("duration", "How long to send requests (unless --requests is given).").Default("10s").DurationVar(&o.duration)
	app.Flag("requests", "Stop after sending this many requests instead of after --duration.").Int64Var(&o.requests)
	app.Flag("timeout", "How long to wait for each reply.").Default("30s").DurationVar(&o.timeout)
	app.Flag("data", "Request data as JSON.").Default("{}").StringVar(&o.data)
	app.Flag("mix", "Weighted kinds of request instead of AGENT ACTION: agent#action:weight, and malformed:weight for messages the node must refuse without a reply, comma separated.").StringVar(&o.mix)
	app.Flag("pid", "The node's process: checked to be alive at the end, its RSS and its descendants' sampled after --warmup requests and at the end, its CPU time and its descendants' (agents, workers) measured over the run (Linux).").IntVar(&o.pid)
	app.Flag("warmup", "Requests after which the node's RSS is first sampled.").Default("50000").Int64Var(&o.warmup)
	app.Flag("cert", "Client certificate: requests are signed and the broker connection uses TLS.").StringVar(&o.cert)
	app.Flag("key", "Client key.").StringVar(&o.key)
	app.Flag("ca", "CA bundle.").StringVar(&o.ca)
	app.Flag("ramp", "Send requests for this long before measuring, to start workers and fill caches; nothing is counted.").DurationVar(&o.ramp)
	app.Flag("strays", "Count replies to no request waiting for one (implied by --mix); every reply then also reaches a monitoring subscription.").BoolVar(&o.strays)
	app.Flag("json", "Print the result as JSON.").BoolVar(&o.jsonOut)
	app.Flag("report", "Replace the soak section of this Markdown file with the result.").StringVar(&o.report)
	app.Arg("agent", "Agent.").StringVar(&o.agent)
	app.Arg("action", "Action.").StringVar(&o.action)
	kingpin.MustParse(app.Parse(os.Args[1:]))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := run(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "agent-host-load:", err)
		os.Exit(1)
	}
	if o.report != "" {
		if err := writeReport(o.report, res); err != nil {
			fmt.Fprintln(os.Stderr, "agent-host-load:", err)
			os.Exit(1)
		}
	}
	if o.jsonOut {
		_ = json.NewEncoder(os.Stdout).Encode(res)
	} else {
		fmt.Print(res)
	}
	if !res.healthy() {
		os.Exit(2)
	}
}

// kind is one sort of request the run sends.
type kind struct {
	name          string // agent#action, or malformed
	agent, action string
	weight        int
	body          []byte
}

func (k *kind) malformed() bool { return k.name == "malformed" }

func parseKinds(o options) ([]*kind, error) {
	spec := o.mix
	if spec == "" {
		if o.agent == "" || o.action == "" {
			return nil, errors.New("give AGENT and ACTION, or --mix")
		}
		spec = o.agent + "#" + o.action + ":1"
	}
	var kinds []*kind
	for _, part := range strings.Split(spec, ",") {
		name, w, ok := strings.Cut(strings.TrimSpace(part), ":")
		weight, err := strconv.Atoi(w)
		if !ok || err != nil || weight <= 0 {
			return nil, fmt.Errorf("--mix entry %q is not kind:weight", part)
		}
		k := &kind{name: name, weight: weight}
		if name != "malformed" {
			agent, action, ok := strings.Cut(name, "#")
			if !ok {
				return nil, fmt.Errorf("--mix entry %q: want agent#action", part)
			}
			k.agent, k.action = agent, action
			if k.body, err = json.Marshal(protocol.RPCRequest{Agent: agent, Action: action, Data: json.RawMessage(o.data)}); err != nil {
				return nil, fmt.Errorf("--data: %w", err)
			}
		}
		kinds = append(kinds, k)
	}
	return kinds, nil
}

// schedule spreads the kinds over a cycle by weight, so every worker sends
// the mix in the same proportions.
func schedule(kinds []*kind) []*kind {
	var cycle []*kind
	total := 0
	for _, k := range kinds {
		total += k.weight
	}
	// Interleave: take each kind when its share of the cycle is due.
	credit := make([]float64, len(kinds))
	for range total {
		best := 0
		for i, k := range kinds {
			credit[i] += float64(k.weight) / float64(total)
			if credit[i] > credit[best] {
				best = i
			}
		}
		credit[best]--
		cycle = append(cycle, kinds[best])
	}
	return cycle
}

// stats are one kind's counters while the run goes on; Stats is filled
// in from them at the end.
type stats struct {
	loadreport.Stats

	sent, ok, failed, busy, noReply atomic.Int64
	mu                              sync.Mutex
	lat                             []time.Duration
}

func newStats(k *kind) *stats { return &stats{Stats: loadreport.Stats{Kind: k.name}} }

// result summarises a run: what --json prints.
type result struct{ loadreport.Result }

// maxRSSGrowth is how much the node's memory may grow between warm-up and
// the end of a healthy run, in percent.
const maxRSSGrowth = 10

// healthy says no reply was lost or unexpected, the node is still up and
// its memory stayed flat.
func (r *result) healthy() bool {
	for _, k := range r.Kinds {
		if k.NoReply > 0 {
			return false
		}
	}
	if r.Unexpected > 0 || r.NodeAlive != nil && !*r.NodeAlive {
		return false
	}
	return r.RSSWarmKiB == 0 || rssChange(r) <= maxRSSGrowth
}

func (r *result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s concurrency=%d: %d requests in %.1fs = %.1f req/s\n", r.Node, r.Concurrency, r.Requests, r.Seconds, r.PerSecond)
	for _, k := range r.Kinds {
		if k.Kind == "malformed" {
			fmt.Fprintf(&b, "  %-22s %9d sent, no reply expected\n", k.Kind, k.Sent)
			continue
		}
		fmt.Fprintf(&b, "  %-22s %9d sent, %d ok, %d failed (%d busy), %d without reply; latency p50 %.2f ms, p95 %.2f ms, p99 %.2f ms, max %.2f ms\n",
			k.Kind, k.Sent, k.OK, k.Failed, k.Busy, k.NoReply, k.P50ms, k.P95ms, k.P99ms, k.MaxMs)
	}
	if r.ServerCPU != nil {
		fmt.Fprintf(&b, "  CPU: node %.2f s, its agents %.2f s", *r.ServerCPU, *r.AgentsCPU)
		if r.Requests > 0 {
			fmt.Fprintf(&b, " (%.3f + %.3f ms per request)", 1000**r.ServerCPU/float64(r.Requests), 1000**r.AgentsCPU/float64(r.Requests))
		}
		fmt.Fprintf(&b, "; %d live descendants, %d KiB\n", r.Workers, r.WorkersRSSEndKiB)
	}
	if r.NodeAlive != nil {
		fmt.Fprintf(&b, "  node alive at the end: %v; RSS after warm-up %d KiB, at the end %d KiB (%+.1f%%)\n",
			*r.NodeAlive, r.RSSWarmKiB, r.RSSEndKiB, rssChange(r))
	}
	fmt.Fprintf(&b, "  unexpected replies: %d; healthy: %v\n", r.Unexpected, r.healthy())
	return b.String()
}

func rssChange(r *result) float64 {
	if r.RSSWarmKiB == 0 {
		return 0
	}
	return 100 * float64(r.RSSEndKiB-r.RSSWarmKiB) / float64(r.RSSWarmKiB)
}

// loader holds what every loop of a run shares.
type loader struct {
	o        options
	signer   crypto.Signer
	certPEM  []byte
	natsOpts []nats.Option
	callerID string
	prefix   string // reply subjects: prefix + request id
	subject  string // the node's direct subject

	// sent holds the ids of requests sent and not yet seen by the strays
	// monitor, true once the request timed out; only with --strays.
	strays     bool
	sentMu     sync.Mutex
	sentIDs    map[string]bool
	unexpected atomic.Int64
}

func (l *loader) connect() (*nats.Conn, error) {
	nc, err := nats.Connect(l.o.broker, l.natsOpts...)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", l.o.broker, err)
	}
	return nc, nil
}

func (l *loader) newRequest(k *kind, edit func(*v1.RequestEnvelope)) (string, []byte, error) {
	id, err := v1.NewRequestID()
	if err != nil {
		return "", nil, err
	}
	f := protocol.NewFilter()
	f.Agent = []string{k.agent}
	env := v1.RequestEnvelope{RequestID: id, SenderID: l.o.caller, CallerID: l.callerID,
		Collective: l.o.collective, Agent: k.agent, TTL: 60, Time: time.Now().Unix(), Filter: f}
	if edit != nil {
		edit(&env)
	}
	sreq, err := v1.NewRequest(env, k.body).Seal(l.signer, l.certPEM)
	if err != nil {
		return "", nil, err
	}
	payload, err := v1.EncodeRequest(sreq, l.prefix+id, l.o.caller)
	return id, payload, err
}

// call sends one request on nc and waits for its reply, as `choria req`
// does: a subscription to the request's own reply subject, then the
// request. It returns nil when no reply came within the timeout.
func (l *loader) call(ctx context.Context, nc *nats.Conn, k *kind) (reply *protocol.RPCReply, answered bool, took time.Duration, err error) {
	id, payload, err := l.newRequest(k, nil)
	if err != nil {
		return nil, false, 0, err
	}
	sub, err := nc.SubscribeSync(l.prefix + id)
	if err != nil {
		return nil, false, 0, err
	}
	defer sub.Unsubscribe() //nolint:errcheck // the connection outlives the request
	if l.strays {
		l.sentMu.Lock()
		l.sentIDs[id] = false
		l.sentMu.Unlock()
	}
	began := time.Now()
	if err := nc.Publish(l.subject, payload); err != nil {
		return nil, false, 0, err
	}
	wctx, cancel := context.WithTimeout(ctx, l.o.timeout)
	defer cancel()
	m, err := sub.NextMsgWithContext(wctx)
	took = time.Since(began)
	if err != nil {
		if ctx.Err() != nil {
			return nil, false, took, ctx.Err()
		}
		if l.strays {
			l.sentMu.Lock()
			if _, waiting := l.sentIDs[id]; waiting {
				l.sentIDs[id] = true
			}
			l.sentMu.Unlock()
		}
		return nil, false, took, nil
	}
	return decodeReply(m.Data), true, took, nil
}

// watchStrays counts every reply to a request not waiting for one.
func (l *loader) watchStrays(nc *nats.Conn) (*nats.Subscription, error) {
	sub, err := nc.Subscribe(l.prefix+"*", func(m *nats.Msg) {
		id := m.Subject[len(l.prefix):]
		l.sentMu.Lock()
		late, known := l.sentIDs[id]
		delete(l.sentIDs, id)
		l.sentMu.Unlock()
		if !known || late {
			l.unexpected.Add(1)
		}
	})
	if err != nil {
		return nil, err
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return nil, err
	}
	return sub, nc.Flush()
}

func run(ctx context.Context, o options) (*result, error) {
	kinds, err := parseKinds(o)
	if err != nil {
		return nil, err
	}
	if o.concurrency < 1 {
		return nil, errors.New("--concurrency must be at least 1")
	}
	cycle := schedule(kinds)
	l := &loader{o: o, callerID: "choria=" + o.caller, subject: o.collective + ".node." + o.identity,
		strays: o.strays || o.mix != "", sentIDs: map[string]bool{}}
	l.prefix = client.ReplySubject(o.collective, l.callerID, "")
	l.natsOpts = []nats.Option{nats.Name("agent-host-load")}
	if o.cert != "" {
		if l.signer, l.certPEM, err = security.LoadSigner(o.cert, o.key); err != nil {
			return nil, err
		}
		tc, err := security.TLSConfig(o.cert, o.key, o.ca)
		if err != nil {
			return nil, err
		}
		l.natsOpts = append(l.natsOpts, nats.Secure(tc))
	}
	// One connection per loop, as many `choria req` would have, and one
	// for daemon_stats and the strays monitor.
	control, err := l.connect()
	if err != nil {
		return nil, err
	}
	defer control.Close()
	conns := make([]*nats.Conn, o.concurrency)
	for i := range conns {
		if conns[i], err = l.connect(); err != nil {
			return nil, err
		}
		defer conns[i].Close()
	}
	if l.strays {
		sub, err := l.watchStrays(control)
		if err != nil {
			return nil, err
		}
		defer sub.Unsubscribe() //nolint:errcheck
	}

	if o.ramp > 0 {
		// Warm-up: workers started, caches filled; nothing counted.
		discard := map[*kind]*stats{}
		for _, k := range kinds {
			discard[k] = newStats(k)
		}
		l.phase(ctx, conns, cycle, discard, time.Now().Add(o.ramp), 0, nil)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}

	byKind := map[*kind]*stats{}
	for _, k := range kinds {
		byKind[k] = newStats(k)
	}
	var before treeSample
	if o.pid > 0 {
		before = sampleTree(o.pid)
	}
	var rssWarm, workersWarm atomic.Int64
	onWarm := func() {
		s := sampleTree(o.pid)
		rssWarm.Store(s.ServerRSSKiB)
		workersWarm.Store(s.WorkersRSSKiB)
	}
	if o.pid <= 0 {
		onWarm = nil
	}
	start := time.Now()
	last := l.phase(ctx, conns, cycle, byKind, start.Add(o.duration), o.requests, onWarm)
	elapsed := time.Since(start)

	res := &result{loadreport.Result{Node: o.identity, Concurrency: o.concurrency, Seconds: elapsed.Seconds()}}
	if !last.IsZero() {
		res.ReplySeconds = last.Sub(start).Seconds()
	}
	if o.pid > 0 {
		after := sampleTree(o.pid)
		res.NodeAlive = &after.Alive
		server, agents := after.ServerCPU-before.ServerCPU, after.AgentsCPU-before.AgentsCPU
		res.ServerCPU, res.AgentsCPU, res.Workers = &server, &agents, after.Workers
		res.RSSWarmKiB, res.RSSEndKiB = rssWarm.Load(), after.ServerRSSKiB
		res.WorkersRSSWarmKiB, res.WorkersRSSEndKiB = workersWarm.Load(), after.WorkersRSSKiB
	}
	for _, k := range kinds {
		s := byKind[k]
		s.Sent, s.OK, s.Failed, s.Busy, s.NoReply = s.sent.Load(), s.ok.Load(), s.failed.Load(), s.busy.Load(), s.noReply.Load()
		slices.Sort(s.lat)
		s.P50ms, s.P90ms, s.P95ms, s.P99ms, s.MaxMs = pct(s.lat, 0.50), pct(s.lat, 0.90), pct(s.lat, 0.95), pct(s.lat, 0.99), pct(s.lat, 1)
		res.Requests += s.Sent
		res.Kinds = append(res.Kinds, &s.Stats)
	}
	res.PerSecond = float64(res.Requests) / elapsed.Seconds()
	if o.pid > 0 {
		res.DaemonStats = l.daemonStats(ctx, control)
	}
	if l.strays {
		// Late replies to the last requests have a moment to arrive.
		_ = control.Flush()
		time.Sleep(200 * time.Millisecond)
		res.Unexpected = l.unexpected.Load()
	}
	return res, nil
}

// phase runs every loop until the deadline passes (requests == 0) or
// requests have been sent, and returns when the last reply came. onWarm,
// when set, is called once after --warmup requests.
func (l *loader) phase(ctx context.Context, conns []*nats.Conn, cycle []*kind, byKind map[*kind]*stats, deadline time.Time, requests int64, onWarm func()) time.Time {
	var total, lastReply atomic.Int64
	more := func() bool {
		if ctx.Err() != nil {
			return false
		}
		n := total.Add(1)
		if onWarm != nil && n == l.o.warmup {
			onWarm()
		}
		if requests > 0 {
			return n <= requests
		}
		return time.Now().Before(deadline)
	}
	var wg sync.WaitGroup
	for w, nc := range conns {
		wg.Go(func() {
			bad := w // which malformed message comes next, cycling through them all
			for i := w; more(); i++ {
				k := cycle[i%len(cycle)]
				s := byKind[k]
				s.sent.Add(1)
				if k.malformed() {
					bad++
					payload, err := malformed(bad, func(edit func(*v1.RequestEnvelope)) ([]byte, error) {
						_, p, err := l.newRequest(pingKind, edit)
						return p, err
					})
					if err == nil {
						err = nc.Publish(l.subject, payload)
					}
					if err != nil {
						s.failed.Add(1)
					}
					continue
				}
				r, answered, took, err := l.call(ctx, nc, k)
				if answered {
					now := time.Now().UnixNano()
					for {
						prev := lastReply.Load()
						if now <= prev || lastReply.CompareAndSwap(prev, now) {
							break
						}
					}
				}
				switch {
				case ctx.Err() != nil:
					return
				case err != nil:
					s.failed.Add(1)
					continue
				case !answered:
					s.noReply.Add(1)
					continue
				case r != nil && r.Statuscode == protocol.OK:
					s.ok.Add(1)
				default:
					s.failed.Add(1)
					if r != nil && strings.Contains(r.Statusmsg, " is busy") {
						s.busy.Add(1)
					}
				}
				s.mu.Lock()
				s.lat = append(s.lat, took)
				s.mu.Unlock()
			}
		})
	}
	wg.Wait()
	if n := lastReply.Load(); n > 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

var pingKind = &kind{name: "rpcutil#ping", agent: "rpcutil", action: "ping", body: []byte(`{"agent":"rpcutil","action":"ping","data":{}}`)}

func pct(lat []time.Duration, p float64) float64 {
	if len(lat) == 0 {
		return 0
	}
	return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
}

// malformed returns the i-th of the messages a node must refuse without a
// reply: garbage, an envelope nested too deeply, an unknown protocol, a
// secure request that does not parse, a filter beyond the limits (valid
// otherwise) and an expired request.
func malformed(i int, request func(edit func(*v1.RequestEnvelope)) ([]byte, error)) ([]byte, error) {
	secure := func(s string) []byte {
		t, _ := json.Marshal(v1.Transport{Protocol: v1.TransportProtocol, Data: []byte(s)})
		return t
	}
	switch i % 6 {
	case 0:
		return []byte("{not json at all"), nil
	case 1:
		return []byte(`{"protocol":"choria:transport:1","data":"eA==","headers":{"seen-by":` + strings.Repeat("[", 64) + strings.Repeat("]", 64) + `}}`), nil
	case 2:
		return []byte(`{"protocol":"choria:transport:9","data":"` + base64.StdEncoding.EncodeToString([]byte("{}")) + `"}`), nil
	case 3:
		return secure(`{"protocol":"choria:secure:request:1","message":"{not json","signature":"insecure","pubcert":"insecure"}`), nil
	case 4:
		return request(func(e *v1.RequestEnvelope) {
			e.Filter.Compound = [][]map[string]string{{{"expr": strings.Repeat("(", 40) + "true" + strings.Repeat(")", 40)}}}
		})
	default:
		return request(func(e *v1.RequestEnvelope) { e.Time = time.Now().Add(-time.Hour).Unix() })
	}
}

// daemonStats asks the node for rpcutil daemon_stats.
func (l *loader) daemonStats(ctx context.Context, nc *nats.Conn) map[string]any {
	k := &kind{name: "rpcutil#daemon_stats", agent: "rpcutil", action: "daemon_stats", body: []byte(`{"agent":"rpcutil","action":"daemon_stats","data":{}}`)}
	r, answered, _, err := l.call(ctx, nc, k)
	var m map[string]any
	if err != nil || !answered || r == nil || json.Unmarshal(r.Data, &m) != nil {
		return nil
	}
	return m
}

// decodeReply unwraps a reply; nil when any layer is malformed, which
// counts as a failure.
func decodeReply(data []byte) *protocol.RPCReply {
	_, r, err := client.DecodeReply(data)
	if err != nil {
		return nil
	}
	return r
}
