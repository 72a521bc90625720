// Command agent-host-load drives a node with RPC requests at a fixed
// concurrency and reports throughput and latency percentiles. It speaks the
// same Choria v1 protocol as `choria req`, one direct request per call.
//
//	agent-host-load --broker nats://127.0.0.1:4222 --identity dev1.example.net \
//	    --concurrency 8 --duration 10s rpcutil ping
//
// With --mix it sends several kinds of request by weight, malformed and
// hostile messages among them, and with --pid it also watches the node's
// process: that it stays up, and its memory after warm-up and at the end.
// That is the soak run of `make soak`:
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
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/nats-io/nats.go"

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
	duration, timeout                    time.Duration
	cert, key, ca                        string
	pid                                  int
	jsonOut                              bool
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
	app.Flag("pid", "The node's process: checked to be alive at the end, its RSS sampled after --warmup requests and at the end (Linux).").IntVar(&o.pid)
	app.Flag("warmup", "Requests after which the node's RSS is first sampled.").Default("50000").Int64Var(&o.warmup)
	app.Flag("cert", "Client certificate: requests are signed and the broker connection uses TLS.").StringVar(&o.cert)
	app.Flag("key", "Client key.").StringVar(&o.key)
	app.Flag("ca", "CA bundle.").StringVar(&o.ca)
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

// stats are one kind's counters.
type stats struct {
	Kind    string  `json:"kind"`
	Sent    int64   `json:"sent"`
	OK      int64   `json:"ok"`
	Failed  int64   `json:"failed"`
	NoReply int64   `json:"no_reply"`
	P50ms   float64 `json:"p50_ms"`
	P90ms   float64 `json:"p90_ms"`
	P99ms   float64 `json:"p99_ms"`
	MaxMs   float64 `json:"max_ms"`

	sent, ok, failed, noReply atomic.Int64
	mu                        sync.Mutex
	lat                       []time.Duration
}

// result summarises a run.
type result struct {
	Node        string   `json:"node"`
	Concurrency int      `json:"concurrency"`
	Seconds     float64  `json:"seconds"`
	Requests    int64    `json:"requests"`
	PerSecond   float64  `json:"per_second"`
	Kinds       []*stats `json:"kinds"`
	// NodeAlive, RSSWarmKiB and RSSEndKiB are set with --pid.
	NodeAlive  *bool `json:"node_alive,omitempty"`
	RSSWarmKiB int64 `json:"rss_warm_kib,omitempty"`
	RSSEndKiB  int64 `json:"rss_end_kib,omitempty"`
	// DaemonStats is the node's rpcutil daemon_stats at the end.
	DaemonStats map[string]any `json:"daemon_stats,omitempty"`
	// Unexpected counts replies to no request waiting for one: to a
	// malformed message, or after a timeout.
	Unexpected int64 `json:"unexpected_replies"`
}

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
		fmt.Fprintf(&b, "  %-22s %9d sent, %d ok, %d failed, %d without reply; latency p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms\n",
			k.Kind, k.Sent, k.OK, k.Failed, k.NoReply, k.P50ms, k.P90ms, k.P99ms, k.MaxMs)
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

func run(ctx context.Context, o options) (*result, error) {
	kinds, err := parseKinds(o)
	if err != nil {
		return nil, err
	}
	cycle := schedule(kinds)
	var signer crypto.Signer
	var certPEM []byte
	natsOpts := []nats.Option{nats.Name("agent-host-load")}
	if o.cert != "" {
		if signer, certPEM, err = security.LoadSigner(o.cert, o.key); err != nil {
			return nil, err
		}
		tc, err := security.TLSConfig(o.cert, o.key, o.ca)
		if err != nil {
			return nil, err
		}
		natsOpts = append(natsOpts, nats.Secure(tc))
	}
	nc, err := nats.Connect(o.broker, natsOpts...)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", o.broker, err)
	}
	defer nc.Close()

	callerID := "choria=" + o.caller
	// One subscription for every reply; requests are matched by id.
	prefix := client.ReplySubject(o.collective, callerID, "")
	var mu sync.Mutex
	waiting := map[string]chan *protocol.RPCReply{}
	var unexpected atomic.Int64
	sub, err := nc.Subscribe(prefix+"*", func(m *nats.Msg) {
		id := m.Subject[len(prefix):]
		mu.Lock()
		ch := waiting[id]
		delete(waiting, id)
		mu.Unlock()
		if ch == nil {
			unexpected.Add(1)
			return
		}
		ch <- decodeReply(m.Data)
	})
	if err != nil {
		return nil, err
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return nil, err
	}
	defer sub.Unsubscribe() //nolint:errcheck

	byKind := map[*kind]*stats{}
	for _, k := range kinds {
		byKind[k] = &stats{Kind: k.name}
	}
	newRequest := func(k *kind, edit func(*v1.RequestEnvelope)) (string, []byte, error) {
		id, err := v1.NewRequestID()
		if err != nil {
			return "", nil, err
		}
		f := protocol.NewFilter()
		f.Agent = []string{k.agent}
		env := v1.RequestEnvelope{RequestID: id, SenderID: o.caller, CallerID: callerID,
			Collective: o.collective, Agent: k.agent, TTL: 60, Time: time.Now().Unix(), Filter: f}
		if edit != nil {
			edit(&env)
		}
		sreq, err := v1.NewRequest(env, k.body).Seal(signer, certPEM)
		if err != nil {
			return "", nil, err
		}
		payload, err := v1.EncodeRequest(sreq, prefix+id, o.caller)
		return id, payload, err
	}
	ping := &kind{name: "rpcutil#ping", agent: "rpcutil", action: "ping", body: []byte(`{"agent":"rpcutil","action":"ping","data":{}}`)}

	var total, warm atomic.Int64
	var rssWarm atomic.Int64
	deadline := time.Now().Add(o.duration)
	more := func() bool {
		if ctx.Err() != nil {
			return false
		}
		if o.requests > 0 {
			return total.Add(1) <= o.requests
		}
		total.Add(1)
		return time.Now().Before(deadline)
	}
	subject := o.collective + ".node." + o.identity
	start := time.Now()
	var wg sync.WaitGroup
	for w := range o.concurrency {
		wg.Go(func() {
			bad := w // which malformed message comes next, cycling through them all
			for i := w; more(); i++ {
				k := cycle[i%len(cycle)]
				s := byKind[k]
				if o.pid > 0 && warm.Add(1) == o.warmup {
					rssWarm.Store(rssKiB(o.pid))
				}
				if k.malformed() {
					bad++
					payload, err := malformed(bad, func(edit func(*v1.RequestEnvelope)) ([]byte, error) {
						_, p, err := newRequest(ping, edit)
						return p, err
					})
					if err == nil {
						err = nc.Publish(subject, payload)
					}
					if err != nil {
						s.failed.Add(1)
					}
					s.sent.Add(1)
					continue
				}
				id, payload, err := newRequest(k, nil)
				if err != nil {
					s.failed.Add(1)
					continue
				}
				ch := make(chan *protocol.RPCReply, 1)
				mu.Lock()
				waiting[id] = ch
				mu.Unlock()
				began := time.Now()
				s.sent.Add(1)
				forget := func() {
					mu.Lock()
					delete(waiting, id)
					mu.Unlock()
				}
				if err := nc.Publish(subject, payload); err != nil {
					s.failed.Add(1)
					forget()
					continue
				}
				select {
				case <-ctx.Done():
					forget()
					return
				case r := <-ch:
					took := time.Since(began)
					if r != nil && r.Statuscode == protocol.OK {
						s.ok.Add(1)
					} else {
						s.failed.Add(1)
					}
					s.mu.Lock()
					s.lat = append(s.lat, took)
					s.mu.Unlock()
				case <-time.After(o.timeout):
					s.noReply.Add(1)
					forget()
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)

	res := &result{Node: o.identity, Concurrency: o.concurrency, Seconds: elapsed.Seconds(), Unexpected: unexpected.Load()}
	for _, k := range kinds {
		s := byKind[k]
		s.Sent, s.OK, s.Failed, s.NoReply = s.sent.Load(), s.ok.Load(), s.failed.Load(), s.noReply.Load()
		slices.Sort(s.lat)
		s.P50ms, s.P90ms, s.P99ms, s.MaxMs = pct(s.lat, 0.50), pct(s.lat, 0.90), pct(s.lat, 0.99), pct(s.lat, 1)
		res.Requests += s.Sent
		res.Kinds = append(res.Kinds, s)
	}
	res.PerSecond = float64(res.Requests) / elapsed.Seconds()
	if o.pid > 0 {
		alive := syscall.Kill(o.pid, 0) == nil
		res.NodeAlive = &alive
		res.RSSWarmKiB, res.RSSEndKiB = rssWarm.Load(), rssKiB(o.pid)
		res.DaemonStats = daemonStats(nc, o, newRequest, prefix, &mu, waiting)
	}
	return res, nil
}

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
func daemonStats(nc *nats.Conn, o options, newRequest func(*kind, func(*v1.RequestEnvelope)) (string, []byte, error), prefix string, mu *sync.Mutex, waiting map[string]chan *protocol.RPCReply) map[string]any {
	k := &kind{name: "rpcutil#daemon_stats", agent: "rpcutil", action: "daemon_stats", body: []byte(`{"agent":"rpcutil","action":"daemon_stats","data":{}}`)}
	id, payload, err := newRequest(k, nil)
	if err != nil {
		return nil
	}
	ch := make(chan *protocol.RPCReply, 1)
	mu.Lock()
	waiting[id] = ch
	mu.Unlock()
	if nc.Publish(o.collective+".node."+o.identity, payload) != nil {
		return nil
	}
	select {
	case r := <-ch:
		var m map[string]any
		if r != nil && json.Unmarshal(r.Data, &m) == nil {
			return m
		}
	case <-time.After(10 * time.Second):
	}
	return nil
}

// rssKiB reads a process's resident set size; 0 when it cannot.
func rssKiB(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
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
