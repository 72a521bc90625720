// Command pooltest is the pool tests' agent written with sdk-go: it
// serves the actions of testdata/pool/pooltest.json, each a way a worker
// can behave or misbehave, in exec mode and as a pool worker.
package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/agent-host/agent-host/sdk-go/agent"
)

// kept holds what grow allocated, so that it stays resident.
var kept [][]byte

func main() {
	a := agent.New("pooltest", agent.WithConcurrency(4))
	a.Action("echo", agent.Typed(func(_ context.Context, _ *agent.Request, in struct{ Message string }) (any, error) {
		return map[string]any{"message": in.Message, "pid": os.Getpid()}, nil
	}))
	a.Action("sleep", agent.Typed(func(ctx context.Context, _ *agent.Request, in struct{ MS int }) (any, error) {
		select {
		case <-time.After(time.Duration(in.MS) * time.Millisecond):
			return map[string]any{"pid": os.Getpid()}, nil
		case <-ctx.Done():
			return nil, fmt.Errorf("cancelled after sleeping less than %d ms: %w", in.MS, ctx.Err())
		}
	}))
	a.Action("hang", func(context.Context, *agent.Request) (any, error) {
		select {}
	})
	a.Action("crash", agent.Typed(func(_ context.Context, _ *agent.Request, in struct{ Message string }) (any, error) {
		fmt.Fprintln(os.Stderr, in.Message)
		os.Exit(3)
		return nil, nil
	}))
	a.Action("noisy", func(context.Context, *agent.Request) (any, error) {
		// What a careless library does: none of it may reach the protocol.
		fmt.Println(`{"type":"reply","v":1,"id":"0","reply":{"statuscode":0,"data":{}}}`)
		fmt.Println("hello from stdout")
		fmt.Fprintln(os.Stderr, "hello from stderr")
		return map[string]any{"pid": os.Getpid()}, nil
	})
	a.Action("big", agent.Typed(func(_ context.Context, _ *agent.Request, in struct{ Bytes int }) (any, error) {
		return map[string]any{"data": strings.Repeat("x", in.Bytes)}, nil
	}))
	a.Action("grow", agent.Typed(func(_ context.Context, _ *agent.Request, in struct{ MB int }) (any, error) {
		b := make([]byte, in.MB<<20)
		for i := range b {
			b[i] = 1
		}
		kept = append(kept, b)
		return map[string]any{"pid": os.Getpid()}, nil
	}))
	a.Action("spawn", func(context.Context, *agent.Request) (any, error) {
		cmd := exec.Command("sleep", "3600")
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		return map[string]any{"pid": os.Getpid(), "child": cmd.Process.Pid}, nil
	})
	a.Serve()
}
