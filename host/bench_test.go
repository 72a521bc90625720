package host_test

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/agent-host/agent-host/protocol"
	"github.com/agent-host/agent-host/protocol/client"
	v1 "github.com/agent-host/agent-host/protocol/v1"
)

// BenchmarkRequestPath measures one RPC round trip through a real host on
// an embedded broker: encode, publish, decode, verify (insecure mode),
// filter, validate, run, reply. rpcutil ping is the host's own ceiling;
// shagent adds a /bin/sh agent per request.
func BenchmarkRequestPath(b *testing.B) {
	h := start(b, setup{agents: []string{"shagent"}, pooltest: poolAgentExe(b, "go")})
	for _, bc := range []struct{ name, agent, action, data string }{
		{"rpcutil_ping", "rpcutil", "ping", `{}`},
		{"sh_agent", "shagent", "echo", `{"message":"hello"}`},
		// The sdk-go pooltest agent on its warm workers, on the worker
		// protocol's streams.
		{"pooled_agent", "pooltest", "echo", `{"message":"hello"}`},
	} {
		body := []byte(`{"agent":"` + bc.agent + `","action":"` + bc.action + `","data":` + bc.data + `}`)
		b.Run(bc.name, func(b *testing.B) {
			rt := newRoundTripper(b, h.nc)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if r := rt.do(b, bc.agent, body); r.Statuscode != protocol.OK {
					b.Fatalf("reply %d %s", r.Statuscode, r.Statusmsg)
				}
			}
		})
		b.Run(bc.name+"_parallel", func(b *testing.B) {
			rt := newRoundTripper(b, h.nc)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if r := rt.do(b, bc.agent, body); r.Statuscode != protocol.OK {
						b.Errorf("reply %d %s", r.Statuscode, r.Statusmsg)
						return
					}
				}
			})
		})
	}
}

// roundTripper sends requests and matches replies on one subscription, as
// a busy client does, so the benchmark measures the host, not the client's
// per-request subscription.
type roundTripper struct {
	nc      *nats.Conn
	prefix  string
	pending sync.Map
}

func newRoundTripper(tb testing.TB, nc *nats.Conn) *roundTripper {
	rt := &roundTripper{nc: nc, prefix: client.ReplySubject("mcollective", "choria=bench.mcollective", "")}
	sub, err := nc.Subscribe(rt.prefix+"*", func(m *nats.Msg) {
		if ch, ok := rt.pending.LoadAndDelete(strings.TrimPrefix(m.Subject, rt.prefix)); ok {
			ch.(chan []byte) <- m.Data
		}
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = sub.Unsubscribe() })
	return rt
}

func (rt *roundTripper) do(tb testing.TB, agent string, body []byte) protocol.RPCReply {
	id, err := v1.NewRequestID()
	if err != nil {
		tb.Fatal(err)
	}
	req := v1.NewRequest(v1.RequestEnvelope{RequestID: id, SenderID: "bench.mcollective", CallerID: "choria=bench.mcollective",
		Collective: "mcollective", Agent: agent, TTL: 60, Time: time.Now().Unix()}, body)
	sreq, err := req.Seal(nil, nil)
	if err != nil {
		tb.Fatal(err)
	}
	payload, err := v1.EncodeRequest(sreq, rt.prefix+id, "bench.mcollective")
	if err != nil {
		tb.Fatal(err)
	}
	ch := make(chan []byte, 1)
	rt.pending.Store(id, ch)
	if err := rt.nc.Publish("mcollective.node."+node, payload); err != nil {
		tb.Fatal(err)
	}
	var data []byte
	select {
	case data = <-ch:
	case <-time.After(30 * time.Second):
		tb.Fatal("no reply within 30s")
	}
	return replyBody(tb, data)
}
