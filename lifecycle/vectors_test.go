package lifecycle

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/agent-host/agent-host/protocol/ddl"
	"github.com/agent-host/agent-host/runner"
)

var update = flag.Bool("update", false, "rewrite testdata/vectors/lifecycle from the encoder")

// vectorDir holds an example of each of agent-host's own events, as
// published; sdk-python's tests check them against protocol/schemas.
const vectorDir = "../testdata/vectors/lifecycle"

// TestVectors fails when an event's encoding changes without its vector:
// the shared examples are what the publisher sends.
func TestVectors(t *testing.T) {
	basic := func(typ string) Basic {
		return Basic{Protocol: ProtocolPrefix + typ, ID: "0b9f6f2e-8f43-4c1b-9a51-3f8f0f5e2c11", Identity: node, Component: "server", Timestamp: 1700000000}
	}
	worker := runner.WorkerEvent{Agent: "parrot", Worker: 3, PID: 31337, SDK: "agent-host-python/0.1.0", Protocol: 1, Concurrency: 4, Served: 1000, Uptime: 95 * time.Second}
	recycled, exited := worker, worker
	recycled.Reason = runner.RecycleRequests
	exited.Reason, exited.Detail = runner.ExitKilled, "it did not answer a cancelled request within 2s (killed by signal SIGKILL)"
	started := worker
	started.Served, started.Uptime = 0, 0
	parrot := &runner.Agent{Name: "parrot", Active: true, DDL: &ddl.DDL{Metadata: ddl.Metadata{Name: "parrot", Version: "1.0.0"}}}

	vectors := map[string]any{
		AgentChanged:   agentChangedData(basic(AgentChanged), parrot, ChangeUpdated),
		WorkerStarted:  workerData(basic(WorkerStarted), started),
		WorkerRecycled: workerData(basic(WorkerRecycled), recycled),
		WorkerExited:   workerData(basic(WorkerExited), exited),
	}
	for typ, data := range vectors {
		got, err := encode(Source, basic(typ), data, false)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, '\n')
		path := filepath.Join(vectorDir, typ+".json")
		if *update {
			if err := os.WriteFile(path, got, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (go test ./lifecycle -run TestVectors -update writes it)", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale (go test ./lifecycle -run TestVectors -update)\n got %s\nwant %s", path, got, want)
		}
	}
}
