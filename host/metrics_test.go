package host

import (
	"testing"
	"time"

	"github.com/agent-host/agent-host/host/config"
	"github.com/agent-host/agent-host/protocol"
	"github.com/agent-host/agent-host/protocol/ddl"
)

// BenchmarkRequestMetrics is what metrics add to one request that runs an
// agent: its queue wait and duration observed, its reply counted, and
// when it was validated stored. Choria's counters cost nothing more:
// they are the host's atomic counters, read at scrape time.
func BenchmarkRequestMetrics(b *testing.B) {
	cfg := config.Default()
	cfg.Identity = "bench.example.net"
	h := &Host{cfg: cfg, now: time.Now}
	h.metrics = newMetrics(h)
	d := &ddl.DDL{Actions: []*ddl.Action{{Name: "status"}, {Name: "restart"}, {Name: "echo"}}}
	r := &request{agent: &agentEntry{name: "service", ddl: d}, rpc: &protocol.RPCRequest{Action: "echo"}}
	record := func() {
		start := time.Now()
		h.counters.lastMessage.Store(h.now().Unix())
		h.metrics.queueWait.WithLabelValues(r.agent.name).Observe(time.Since(start).Seconds())
		h.metrics.duration.WithLabelValues(r.agent.name, actionLabel(r)).Observe(time.Since(start).Seconds())
		h.metrics.answered(r, protocol.OK)
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			record()
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				record()
			}
		})
	})
}
