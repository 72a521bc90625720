// Package runnertest provides agents and a log recorder for testing
// runners and the code that uses them.
//
// Agent gives real, misbehaving external agents that speak Choria's file
// protocol: each is the test binary itself, re-run under a name that
// selects one behaviour. Runners replace the agent's whole environment, so
// the usual "re-run the test binary if an environment variable is set"
// guard cannot work; the behaviour travels in argv[0] instead, which the
// spawner passes through untouched. A test package that uses Agent must
// hand its TestMain to Main:
//
//	func TestMain(m *testing.M) { runnertest.Main(m) }
//
// ShellAgent writes a /bin/sh agent for cases a script says best.
package runnertest

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/agent-host/agent-host/runner/proc"
)

// agentDir is the directory Agent puts its agents in; Main recognises an
// agent run by it.
const agentDir = "runnertest-agents"

// Behaviours of the agents Agent makes. Unless a behaviour says
// otherwise, the agent reads its request from $CHORIA_EXTERNAL_REQUEST,
// writes its reply to $CHORIA_EXTERNAL_REPLY and exits 0.
const (
	// Echo replies OK with the request's data, and prints EchoStdout on
	// stdout and EchoStderr on stderr.
	Echo = "echo"
	// Dump reports what it was given, an Invocation, as the reply's data
	// and also as one line on stdout (for activation checks, whose replies
	// carry no data). Its reply also holds "activate": true.
	Dump = "dump"
	// Hang sleeps for an hour without replying.
	Hang = "hang"
	// Crash panics: exit status 2, a goroutine trace on stderr.
	Crash = "crash"
	// InvalidJSON writes a reply that is not JSON.
	InvalidJSON = "invalid-json"
	// EmptyReply leaves the reply file empty.
	EmptyReply = "empty-reply"
	// NoData replies without a data key.
	NoData = "no-data"
	// HugeReply writes a valid reply of HugeReplyBytes or a little more,
	// its data holding a string "blob".
	HugeReply = "huge-reply"
	// Flood writes FloodLines lines of FloodLineBytes on stdout and on
	// stderr at the same time, then FloodDone on each, then replies as Echo.
	Flood = "flood"
	// Grandchild starts "sleep 3600" in the background with the same
	// stdout and stderr, prints GrandchildPrefix and its pid on stdout,
	// and hangs.
	Grandchild = "grandchild"
	// ActivateTrue replies {"activate": true}.
	ActivateTrue = "activate-true"
	// ActivateFalse replies {"activate": false}.
	ActivateFalse = "activate-false"
	// ActivateMissing replies {} to an activation check.
	ActivateMissing = "activate-missing"
)

// What the agents print and write.
const (
	EchoStdout       = "runnertest echo on stdout"
	EchoStderr       = "runnertest echo on stderr"
	HugeReplyBytes   = 2 << 20
	FloodLines       = 3
	FloodLineBytes   = 4 << 20
	FloodDone        = "runnertest flood done"
	GrandchildPrefix = "runnertest grandchild "
)

// Exit is the behaviour of an agent that exits with code without
// replying.
func Exit(code int) string { return "exit-" + strconv.Itoa(code) }

var mainCalled atomic.Bool

// Main runs the tests of a package, or, when the test binary was started
// as one of Agent's agents, acts out that agent's behaviour and exits.
// Call it from TestMain.
func Main(m *testing.M) {
	if filepath.Base(filepath.Dir(os.Args[0])) == agentDir {
		// Not os.Exit: under the race detector it sleeps a second on the
		// way out, which every agent run would pay.
		syscall.Exit(act(filepath.Base(os.Args[0])))
	}
	mainCalled.Store(true)
	// As the host does, so that runners stop agents' orphans.
	if err := proc.BecomeSubreaper(); err != nil {
		fmt.Fprintln(os.Stderr, "runnertest: proc.BecomeSubreaper:", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// Agent returns the absolute path of an agent executable acting out
// behaviour (one of the constants above, or Exit(n)). The executable is
// a symbolic link to the running test binary, named after the behaviour,
// so filepath.Base of the path is the behaviour. It is removed when the
// test ends.
func Agent(tb testing.TB, behaviour string) string {
	tb.Helper()
	if !mainCalled.Load() {
		tb.Fatal("runnertest: Agent needs TestMain to call runnertest.Main(m); without it the agent would run the tests")
	}
	if !known(behaviour) {
		tb.Fatalf("runnertest: unknown agent behaviour %q", behaviour)
	}
	self, err := os.Executable()
	if err != nil {
		tb.Fatalf("runnertest: finding the test binary: %v", err)
	}
	dir := filepath.Join(tb.TempDir(), agentDir)
	if err := os.Mkdir(dir, 0o755); err != nil {
		tb.Fatalf("runnertest: %v", err)
	}
	exe := filepath.Join(dir, behaviour)
	if err := os.Symlink(self, exe); err != nil {
		tb.Fatalf("runnertest: %v", err)
	}
	return exe
}

// ShellAgent writes script, preceded by "#!/bin/sh", to an executable
// file named "shellagent" and returns its absolute path. The file is
// removed when the test ends.
func ShellAgent(tb testing.TB, script string) string {
	tb.Helper()
	exe := filepath.Join(tb.TempDir(), "shellagent")
	// A process forked while the file is open for writing would inherit
	// the descriptor until it execs, and running the file in that window
	// fails with "text file busy"; forks wait for the read lock's release.
	syscall.ForkLock.RLock()
	err := os.WriteFile(exe, []byte("#!/bin/sh\n"+script+"\n"), 0o755)
	syscall.ForkLock.RUnlock()
	if err != nil {
		tb.Fatalf("runnertest: writing shell agent: %v", err)
	}
	return exe
}

func known(behaviour string) bool {
	if code, ok := strings.CutPrefix(behaviour, "exit-"); ok {
		_, err := strconv.Atoi(code)
		return err == nil
	}
	_, ok := behaviours[behaviour]
	return ok
}

// act runs the agent behaviour and returns the exit code.
func act(behaviour string) int {
	if code, ok := strings.CutPrefix(behaviour, "exit-"); ok {
		n, err := strconv.Atoi(code)
		if err != nil {
			fmt.Fprintf(os.Stderr, "runnertest: bad exit code in %q\n", behaviour)
			return 100
		}
		return n
	}
	fn, ok := behaviours[behaviour]
	if !ok {
		fmt.Fprintf(os.Stderr, "runnertest: unknown agent behaviour %q\n", behaviour)
		return 100
	}
	if err := fn(); err != nil {
		fmt.Fprintf(os.Stderr, "runnertest: %s: %v\n", behaviour, err)
		return 100
	}
	return 0
}

// WaitProcessGone waits up to within for process pid to be gone, and
// fails the test, killing the process, if it is still there then. A
// zombie counts as gone: it was killed, and reaping it is its parent's
// business (an orphan's parent may be a PID 1 that never reaps).
func WaitProcessGone(tb testing.TB, pid int, within time.Duration) {
	tb.Helper()
	for deadline := time.Now().Add(within); !processGone(pid); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			tb.Fatalf("process %d is still running after %v", pid, within)
		}
	}
}

func processGone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return errors.Is(err, fs.ErrNotExist)
	}
	// The state follows the command name, which is in parentheses.
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}
