package pool_test

import (
	"context"
	"testing"

	"github.com/agent-host/agent-host/runner/pool"
	"github.com/agent-host/agent-host/runner/runnertest"
)

// BenchmarkRoundTrip measures one request through a warm pool: the host
// writes the request document, the worker runs the echo action and
// writes its reply, the host matches it to its caller. Every
// implementation of the pooltest agent is measured; the sdk-go one is
// the target of a round trip under 50 µs.
func BenchmarkRoundTrip(b *testing.B) {
	for _, impl := range agents {
		b.Run(impl.name, func(b *testing.B) {
			p := newPool(b, pool.Config{Executable: impl.exe, MinWorkers: 1, MaxWorkers: 1}, nil)
			req := runnertest.PoolRequest("echo", `{"message": "hello"}`)
			ctx := context.Background()
			if _, err := p.Run(ctx, req); err != nil { // the worker starts
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				rep, err := p.Run(ctx, req)
				if err != nil || rep.Statuscode != 0 {
					b.Fatalf("reply %+v, %v", rep, err)
				}
			}
		})
		b.Run(impl.name+"_parallel", func(b *testing.B) {
			p := newPool(b, pool.Config{Executable: impl.exe, MinWorkers: 2, MaxWorkers: 2}, nil)
			req := runnertest.PoolRequest("echo", `{"message": "hello"}`)
			if _, err := p.Run(context.Background(), req); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					rep, err := p.Run(context.Background(), req)
					if err != nil || rep.Statuscode != 0 {
						b.Errorf("reply %+v, %v", rep, err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkRawRoundTrip is the same round trip with a worker that does
// nothing but decode the request and write a fixed reply: the host's
// share of the round trip, and the pipes'.
func BenchmarkRawRoundTrip(b *testing.B) {
	p := newPool(b, pool.Config{Executable: rawAgent(b, "nopong"), MinWorkers: 1, MaxWorkers: 1}, nil)
	req := runnertest.PoolRequest("echo", `{"message": "hello"}`)
	ctx := context.Background()
	if _, err := p.Run(ctx, req); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := p.Run(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}
