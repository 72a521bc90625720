// Command agent-host-load drives a node with RPC requests at a fixed
// concurrency and reports throughput and latency percentiles. It speaks the
// same Choria v1 protocol as `choria req`, one direct request per call.
//
//	agent-host-load --broker nats://127.0.0.1:4222 --identity dev1.example.net \
//	    --concurrency 8 --duration 10s rpcutil ping
package main

import (
	"context"
	"crypto"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"sync"
	"sync/atomic"
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
	agent, action, data                  string
	concurrency                          int
	duration, timeout                    time.Duration
	cert, key, ca                        string
	jsonOut                              bool
}

func main() {
	var o options
	app := kingpin.New("agent-host-load", "Load a Choria node with RPC requests and report latency.")
	app.Flag("broker", "NATS URL.").Default("nats://127.0.0.1:4222").StringVar(&o.broker)
	app.Flag("identity", "The node to address.").Required().StringVar(&o.identity)
	app.Flag("caller", "Caller certname.").Default("load.mcollective").StringVar(&o.caller)
	app.Flag("collective", "Collective.").Default("mcollective").StringVar(&o.collective)
	app.Flag("concurrency", "Requests outstanding at once.").Default("4").IntVar(&o.concurrency)
	app.Flag("duration", "How long to send requests.").Default("10s").DurationVar(&o.duration)
	app.Flag("timeout", "How long to wait for each reply.").Default("30s").DurationVar(&o.timeout)
	app.Flag("data", "Request data as JSON.").Default("{}").StringVar(&o.data)
	app.Flag("cert", "Client certificate: requests are signed and the broker connection uses TLS.").StringVar(&o.cert)
	app.Flag("key", "Client key.").StringVar(&o.key)
	app.Flag("ca", "CA bundle.").StringVar(&o.ca)
	app.Flag("json", "Print the result as JSON.").BoolVar(&o.jsonOut)
	app.Arg("agent", "Agent.").Required().StringVar(&o.agent)
	app.Arg("action", "Action.").Required().StringVar(&o.action)
	kingpin.MustParse(app.Parse(os.Args[1:]))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := run(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "agent-host-load:", err)
		os.Exit(1)
	}
	if o.jsonOut {
		_ = json.NewEncoder(os.Stdout).Encode(res)
		return
	}
	fmt.Println(res)
}

// result summarises a run.
type result struct {
	Agent       string  `json:"agent"`
	Action      string  `json:"action"`
	Concurrency int     `json:"concurrency"`
	Seconds     float64 `json:"seconds"`
	Sent        int64   `json:"sent"`
	OK          int64   `json:"ok"`
	Failed      int64   `json:"failed"`
	NoReply     int64   `json:"no_reply"`
	PerSecond   float64 `json:"per_second"`
	P50ms       float64 `json:"p50_ms"`
	P90ms       float64 `json:"p90_ms"`
	P99ms       float64 `json:"p99_ms"`
	MaxMs       float64 `json:"max_ms"`
}

func (r result) String() string {
	return fmt.Sprintf("%s#%s concurrency=%d: %d sent, %d ok, %d failed, %d without reply in %.1fs = %.1f req/s; latency p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms",
		r.Agent, r.Action, r.Concurrency, r.Sent, r.OK, r.Failed, r.NoReply, r.Seconds, r.PerSecond, r.P50ms, r.P90ms, r.P99ms, r.MaxMs)
}

func run(ctx context.Context, o options) (result, error) {
	var signer crypto.Signer
	var certPEM []byte
	natsOpts := []nats.Option{nats.Name("agent-host-load")}
	if o.cert != "" {
		var err error
		if signer, certPEM, err = security.LoadSigner(o.cert, o.key); err != nil {
			return result{}, err
		}
		tc, err := security.TLSConfig(o.cert, o.key, o.ca)
		if err != nil {
			return result{}, err
		}
		natsOpts = append(natsOpts, nats.Secure(tc))
	}
	nc, err := nats.Connect(o.broker, natsOpts...)
	if err != nil {
		return result{}, fmt.Errorf("connecting to %s: %w", o.broker, err)
	}
	defer nc.Close()

	body, err := json.Marshal(protocol.RPCRequest{Agent: o.agent, Action: o.action, Data: json.RawMessage(o.data)})
	if err != nil {
		return result{}, fmt.Errorf("--data: %w", err)
	}
	callerID := "choria=" + o.caller
	// One subscription for every reply; requests are matched by id.
	prefix := client.ReplySubject(o.collective, callerID, "")
	var mu sync.Mutex
	waiting := map[string]chan *protocol.RPCReply{}
	sub, err := nc.Subscribe(prefix+"*", func(m *nats.Msg) {
		id := m.Subject[len(prefix):]
		mu.Lock()
		ch := waiting[id]
		delete(waiting, id)
		mu.Unlock()
		if ch == nil {
			return
		}
		ch <- decodeReply(m.Data)
	})
	if err != nil {
		return result{}, err
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return result{}, err
	}
	defer sub.Unsubscribe() //nolint:errcheck

	var sent, ok, failed, noReply atomic.Int64
	var latMu sync.Mutex
	var lat []time.Duration
	f := protocol.NewFilter()
	f.Agent = []string{o.agent}
	deadline := time.Now().Add(o.duration)
	start := time.Now()
	var wg sync.WaitGroup
	for range o.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && ctx.Err() == nil {
				id, err := v1.NewRequestID()
				if err != nil {
					return
				}
				req := v1.NewRequest(v1.RequestEnvelope{RequestID: id, SenderID: o.caller, CallerID: callerID,
					Collective: o.collective, Agent: o.agent, TTL: 60, Time: time.Now().Unix(), Filter: f}, body)
				sreq, err := req.Seal(signer, certPEM)
				if err != nil {
					return
				}
				payload, err := v1.EncodeRequest(sreq, prefix+id, o.caller)
				if err != nil {
					return
				}
				ch := make(chan *protocol.RPCReply, 1)
				mu.Lock()
				waiting[id] = ch
				mu.Unlock()
				began := time.Now()
				sent.Add(1)
				forget := func() {
					mu.Lock()
					delete(waiting, id)
					mu.Unlock()
				}
				if err := nc.Publish(o.collective+".node."+o.identity, payload); err != nil {
					failed.Add(1)
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
						ok.Add(1)
					} else {
						failed.Add(1)
					}
					latMu.Lock()
					lat = append(lat, took)
					latMu.Unlock()
				case <-time.After(o.timeout):
					noReply.Add(1)
					forget()
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)

	slices.Sort(lat)
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	return result{
		Agent: o.agent, Action: o.action, Concurrency: o.concurrency, Seconds: elapsed.Seconds(),
		Sent: sent.Load(), OK: ok.Load(), Failed: failed.Load(), NoReply: noReply.Load(),
		PerSecond: float64(ok.Load()+failed.Load()) / elapsed.Seconds(),
		P50ms:     pct(0.50), P90ms: pct(0.90), P99ms: pct(0.99), MaxMs: pct(1),
	}, nil
}

// decodeReply unwraps a reply; nil when any layer is malformed, which
// counts as a failure.
func decodeReply(data []byte) *protocol.RPCReply {
	t, err := v1.DecodeTransport(data)
	if err != nil {
		return nil
	}
	s, err := t.SecureReply()
	if err != nil {
		return nil
	}
	rep, err := s.Reply()
	if err != nil {
		return nil
	}
	var r protocol.RPCReply
	if json.Unmarshal([]byte(rep.Message), &r) != nil {
		return nil
	}
	return &r
}
