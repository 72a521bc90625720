package pool_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	wp "github.com/agent-host/agent-host/protocol/worker"
	"github.com/agent-host/agent-host/runner/pool"
	"github.com/agent-host/agent-host/runner/proc"
	"github.com/agent-host/agent-host/runner/runnertest"
)

// rawDir names the directory of the symbolic links to this test binary
// that make it a raw worker: a worker written against the protocol
// documents alone, misbehaving as its link's name says.
const rawDir = "poolraw"

// agents are the implementations of the pooltest agent
// (testdata/pool/pooltest.json) every pool behaviour is tested with: the
// sdk-go one, built by TestMain, one in JavaScript written from
// PROTOCOL.md alone, when node is installed, and one written with
// sdk-python, when its virtual environment (make sdk-venv) is there.
var agents []implementation

type implementation struct{ name, exe string }

// nodeAgent is the JavaScript pooltest agent.
const nodeAgent = "../../testdata/agents-src/nodepool/pooltest"

// pyAgent is the sdk-python pooltest agent, and pyVenv the virtual
// environment with sdk-python installed.
const (
	pyAgent = "../../testdata/agents-src/pypool/pooltest"
	pyVenv  = "../../.venv-sdk"
)

// eachAgent runs fn as a subtest for every implementation.
func eachAgent(t *testing.T, fn func(t *testing.T, exe string)) {
	for _, impl := range agents {
		t.Run(impl.name, func(t *testing.T) { fn(t, impl.exe) })
	}
}

func TestMain(m *testing.M) {
	if filepath.Base(filepath.Dir(os.Args[0])) == rawDir {
		os.Exit(rawWorker(filepath.Base(os.Args[0])))
	}
	if err := proc.BecomeSubreaper(); err != nil {
		fmt.Fprintln(os.Stderr, "proc.BecomeSubreaper:", err)
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "pooltest")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sdkAgent := filepath.Join(dir, "pooltest")
	build := exec.Command("go", "build", "-o", sdkAgent, "../../testdata/agents-src/pooltest")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the pooltest agent:", err)
		os.Exit(1)
	}
	agents = append(agents, implementation{"go", sdkAgent})
	if _, err := exec.LookPath("node"); err == nil {
		abs, _ := filepath.Abs(nodeAgent)
		if _, err := os.Stat(abs); err == nil {
			agents = append(agents, implementation{"node", abs})
		}
	}
	if exe, err := runnertest.PythonAgent(dir, pyVenv, pyAgent); err == nil {
		agents = append(agents, implementation{"python", exe})
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// rawAgent returns an executable that runs this test binary as the raw
// worker mode.
func rawAgent(t testing.TB, mode string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), rawDir)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, mode)
	if err := os.Symlink(self, exe); err != nil {
		t.Fatal(err)
	}
	return exe
}

// rawWorker acts out a mode and returns the exit status.
func rawWorker(mode string) int {
	if mode == "host" {
		return actAsHost()
	}
	in := wp.NewReader(os.NewFile(wp.HostFD, "in"), wp.HandshakeMaxBytes)
	out := wp.NewWriter(os.NewFile(wp.WorkerFD, "out"))
	if _, err := in.Next(); err != nil {
		return 10
	}
	ready := wp.Ready{Type: wp.TypeReady, V: wp.V1, SDK: "raw/" + mode, Agents: []string{"pooltest"}, Concurrency: 1, Activate: true}
	switch mode {
	case "silent":
		fmt.Fprintln(os.Stderr, "thinking about the handshake")
		time.Sleep(time.Hour)
	case "exit":
		fmt.Fprintln(os.Stderr, "boom at start")
		return 7
	case "refuse":
		_ = out.Write(wp.Refuse{Type: wp.TypeRefuse, Versions: []int{2}, Reason: "raw speaks version 2 only"})
		return 0
	case "wrongversion":
		ready.V = 9
		_ = out.Write(ready)
		time.Sleep(time.Hour)
	case "readyexit":
		_ = out.Write(ready)
		return 0
	case "inactive":
		ready.Activate, ready.ActivateReason = false, "not on this node"
		_ = out.Write(ready)
		return 0
	case "closein": // ready, then deaf: its end of fd 3 closed, alive
		os.NewFile(wp.HostFD, "in").Close()
		_ = out.Write(ready)
		time.Sleep(time.Hour)
	case "closeout": // mute: its end of fd 4 closed before the handshake, alive
		os.NewFile(wp.WorkerFD, "out").Close()
		time.Sleep(time.Hour)
	case "garbage", "nopong", "noread", "spamreply", "bigreply":
		_ = out.Write(ready)
	default:
		fmt.Fprintln(os.Stderr, "unknown raw mode", mode)
		return 11
	}
	if mode == "noread" {
		time.Sleep(time.Hour)
	}
	for {
		line, err := in.Next()
		if err != nil {
			return 0
		}
		doc, err := wp.Decode(line, wp.V1)
		if err != nil {
			return 12
		}
		switch doc := doc.(type) {
		case *wp.Request:
			if mode == "garbage" {
				// Everything but a reply.
				for i := range 20 {
					fmt.Fprintf(os.NewFile(wp.WorkerFD, "out"), "not json %d\n", i)
				}
				continue
			}
			if mode == "bigreply" {
				_ = out.Write(wp.Reply{Type: wp.TypeReply, V: wp.V1, ID: doc.ID, Reply: json.RawMessage(`{"data":{"x":"` + strings.Repeat("x", 200_000) + `"}}`)})
				continue
			}
			if mode == "spamreply" {
				// Replies to requests never sent, before the real one.
				for i := range 5000 {
					_ = out.Write(wp.Reply{Type: wp.TypeReply, V: wp.V1, ID: "bogus" + strconv.Itoa(i), Reply: json.RawMessage(`{"data":{}}`)})
				}
			}
			_ = out.Write(wp.Reply{Type: wp.TypeReply, V: wp.V1, ID: doc.ID, Reply: json.RawMessage(`{"statuscode":0,"data":{"pid":` + strconv.Itoa(os.Getpid()) + `}}`)})
		case *wp.Shutdown:
			return 0
		}
	}
}

// actAsHost runs a pool of the sdk-go agent named by POOLTEST_AGENT,
// prints its worker's pid once a request ran, and waits to be killed.
func actAsHost() int {
	return runnertest.HoldPool(pool.Config{Executable: os.Getenv("POOLTEST_AGENT")}, 10*time.Second)
}
