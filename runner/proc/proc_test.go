package proc_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/agent-host/agent-host/runner/proc"
	"github.com/agent-host/agent-host/runner/runnertest"
)

func TestMain(m *testing.M) {
	if err := proc.BecomeSubreaper(); err != nil {
		fmt.Fprintln(os.Stderr, "proc.BecomeSubreaper:", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// A process proc starts is set to die with this one, even by SIGKILL
// (Linux): it asks the kernel which signal its parent's death sends it.
func TestChildrenDieWithTheParent(t *testing.T) {
	out := newLines()
	script := `import ctypes, signal
libc = ctypes.CDLL(None)
sig = ctypes.c_int()
libc.prctl(2, ctypes.byref(sig))  # PR_GET_PDEATHSIG
print(sig.value)`
	p := start(t, t.Context(), proc.Spec{Path: tool(t, "python3"), Args: []string{"python3", "-c", script}}, proc.WithStdout(out.add))
	wait(t, p)
	if got := out.first(t); got != strconv.Itoa(int(syscall.SIGKILL)) {
		t.Errorf("parent-death signal %s, want SIGKILL (%d)", got, syscall.SIGKILL)
	}
}

// patience bounds every wait for something that should happen soon, so
// that a bug fails the test instead of hanging it; it is no speed target.
const patience = 30 * time.Second

// tool returns the absolute path of a program the tests need.
func tool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("the tests need %s: %v", name, err)
	}
	return path
}

// lines collects the lines a process prints and lets a test wait for one.
type lines struct {
	mu    sync.Mutex
	got   []string
	trunc []bool
	added chan struct{}
}

func newLines() *lines { return &lines{added: make(chan struct{}, 1)} }

func (l *lines) add(b []byte, truncated bool) {
	l.mu.Lock()
	l.got = append(l.got, string(b))
	l.trunc = append(l.trunc, truncated)
	l.mu.Unlock()
	select {
	case l.added <- struct{}{}:
	default:
	}
}

func (l *lines) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.got)
}

// first waits for the first line and returns it.
func (l *lines) first(t *testing.T) string {
	t.Helper()
	deadline := time.After(patience)
	for {
		if got := l.all(); len(got) > 0 {
			return got[0]
		}
		select {
		case <-l.added:
		case <-deadline:
			t.Fatal("the process printed nothing")
		}
	}
}

func start(t *testing.T, ctx context.Context, spec proc.Spec, opts ...proc.Option) *proc.Process {
	t.Helper()
	p, err := proc.Start(ctx, spec, opts...)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(p.Kill)
	return p
}

// wait waits for p, failing the test if that takes unreasonably long.
func wait(t *testing.T, p *proc.Process) proc.Result {
	t.Helper()
	type waited struct {
		res proc.Result
		err error
	}
	ch := make(chan waited, 1)
	go func() {
		res, err := p.Wait()
		ch <- waited{res, err}
	}()
	select {
	case w := <-ch:
		if w.err != nil {
			t.Fatalf("Wait: %v", w.err)
		}
		return w.res
	case <-time.After(patience):
		t.Fatal("Wait did not return")
		return proc.Result{}
	}
}

func pidLine(t *testing.T, line string) int {
	t.Helper()
	pid, err := strconv.Atoi(line)
	if err != nil {
		t.Fatalf("want a pid, got %q", line)
	}
	return pid
}

func TestStartRunsExactly(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		t.Fatal(err)
	}
	stdinFile := filepath.Join(dir, "stdin")
	if err := os.WriteFile(stdinFile, []byte("from a file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	stdin, err := os.Open(stdinFile)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close() })
	cat, env, pwd := tool(t, "cat"), tool(t, "env"), tool(t, "pwd")
	script := runnertest.ShellAgent(t, `printf '%s\n' "$0"`)

	tests := []struct {
		name string
		spec proc.Spec
		want []string
	}{
		{
			name: "argv",
			spec: proc.Spec{Path: cat, Args: []string{"argv zero", "/proc/self/cmdline"}},
			want: []string{"argv zero\x00/proc/self/cmdline\x00"},
		},
		{
			name: "argv defaults to the path",
			spec: proc.Spec{Path: script},
			want: []string{script},
		},
		{
			name: "environment",
			spec: proc.Spec{Path: env, Env: []string{"A=1", "B=two words", "EMPTY="}},
			want: []string{"A=1", "B=two words", "EMPTY="},
		},
		{
			name: "no environment inherited",
			spec: proc.Spec{Path: env, Env: nil},
			want: nil,
		},
		{
			name: "working directory",
			spec: proc.Spec{Path: pwd, Args: []string{"pwd", "-P"}, Dir: dir},
			want: []string{realDir},
		},
		{
			name: "stdin from a reader",
			spec: proc.Spec{Path: cat, Stdin: strings.NewReader("one\ntwo")},
			want: []string{"one", "two"},
		},
		{
			name: "stdin from a file",
			spec: proc.Spec{Path: cat, Stdin: stdin},
			want: []string{"from a file"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := newLines()
			p := start(t, t.Context(), tt.spec, proc.WithStdout(out.add))
			if res := wait(t, p); res != (proc.Result{}) {
				t.Errorf("result %+v, want a clean exit", res)
			}
			if got := out.all(); !slices.Equal(got, tt.want) {
				t.Errorf("output %q, want %q", got, tt.want)
			}
		})
	}
}

func TestOutputIsLogged(t *testing.T) {
	t.Parallel()
	var logs runnertest.Logs
	p := start(t, t.Context(), proc.Spec{
		Path:         tool(t, "sh"),
		Args:         []string{"sh", "-c", "echo out; echo err >&2; echo 0123456789abcdef"},
		MaxLineBytes: 8,
	}, proc.WithLogger(logs.Logger().With("agent", "parrot")))
	wait(t, p)

	want := map[string]runnertest.Record{
		"out":      {Level: slog.LevelInfo, Message: "out", Attrs: map[string]string{"agent": "parrot", "stream": "stdout"}},
		"err":      {Level: slog.LevelError, Message: "err", Attrs: map[string]string{"agent": "parrot", "stream": "stderr"}},
		"01234567": {Level: slog.LevelInfo, Message: "01234567", Attrs: map[string]string{"agent": "parrot", "stream": "stdout", "truncated": "true"}},
	}
	logs.Check(t, want)
}

// TestStructuredOutput: JSON object lines with a level and a message (or
// hclog's @level and @message) keep them, with their fields; anything else
// keeps the stream's level.
func TestStructuredOutput(t *testing.T) {
	t.Parallel()
	var logs runnertest.Logs
	script := `echo '{"level":"warn","msg":"disk low","free":12}'
echo '{"level":"debug","message":"detail","time":"x"}' >&2
echo '{"msg":"no level"}'
echo '{"level":"loud","msg":"unknown level"}' >&2
echo '[1,2]'
echo '{"@level":"trace","@message":"plugin address","@module":"pooltest","@timestamp":"2026-01-02T03:04:05.000000Z","network":"unix"}' >&2
echo '{"@level":"warn","@message":"hclog warning"}' >&2`
	p := start(t, t.Context(), proc.Spec{Path: tool(t, "sh"), Args: []string{"sh", "-c", script}},
		proc.WithLogger(logs.Logger()))
	wait(t, p)
	logs.Check(t, map[string]runnertest.Record{
		"disk low":                               {Level: slog.LevelWarn, Attrs: map[string]string{"free": "12", "stream": "stdout"}},
		"detail":                                 {Level: slog.LevelDebug, Attrs: map[string]string{"stream": "stderr"}},
		`{"msg":"no level"}`:                     {Level: slog.LevelInfo, Attrs: map[string]string{"stream": "stdout"}},
		`{"level":"loud","msg":"unknown level"}`: {Level: slog.LevelError, Attrs: map[string]string{"stream": "stderr"}},
		"[1,2]":                                  {Level: slog.LevelInfo, Attrs: map[string]string{"stream": "stdout"}},
		// hclog's JSON, which go-plugin plugins write.
		"plugin address": {Level: slog.LevelDebug, Attrs: map[string]string{"@module": "pooltest", "network": "unix", "stream": "stderr"}},
		"hclog warning":  {Level: slog.LevelWarn, Attrs: map[string]string{"stream": "stderr"}},
	})
}

// TestLogBudgetRefills: a long-lived process that spent its log budget
// logs again once the budget has refilled, after a line saying how much
// was not logged.
func TestLogBudgetRefills(t *testing.T) {
	t.Parallel()
	var logs runnertest.Logs
	p := start(t, t.Context(), proc.Spec{
		Path: tool(t, "sh"),
		// b comes 1.5 s too early for the budget, c 1 s late enough.
		Args:              []string{"sh", "-c", "echo aaaaaaaa; echo bbbbbbbb; sleep 2.5; echo cccccccc"},
		MaxLogBytes:       10,
		LogBytesPerSecond: 4,
	}, proc.WithLogger(logs.Logger()))
	wait(t, p)
	want := []string{"aaaaaaaa", "output beyond the log limit was not logged", "cccccccc"}
	if messages := messagesOf(&logs); !slices.Equal(messages, want) {
		t.Fatalf("logged %q, want %q", messages, want)
	}
	if r := logs.Records()[1]; r.Attrs["dropped_lines"] != "1" || r.Attrs["dropped_bytes"] != "8" {
		t.Errorf("summary %+v, want 1 line of 8 bytes dropped", r)
	}
}

func messagesOf(logs *runnertest.Logs) []string {
	var messages []string
	for _, r := range logs.Records() {
		messages = append(messages, r.Message)
	}
	return messages
}

func TestLogLimit(t *testing.T) {
	t.Parallel()
	var logs runnertest.Logs
	p := start(t, t.Context(), proc.Spec{
		Path:        tool(t, "sh"),
		Args:        []string{"sh", "-c", "for i in 1 2 3 4 5; do echo line$i; done"},
		MaxLogBytes: 10,
		// No refill, so that timing cannot matter.
		LogBytesPerSecond: -1,
	}, proc.WithLogger(logs.Logger()))
	wait(t, p)

	want := []string{"line1", "line2", "output beyond the log limit was not logged"}
	if messages := messagesOf(&logs); !slices.Equal(messages, want) {
		t.Fatalf("logged %q, want %q", messages, want)
	}
	summary := logs.Records()[2]
	if summary.Level != slog.LevelWarn || summary.Attrs["dropped_lines"] != "3" || summary.Attrs["dropped_bytes"] != "15" {
		t.Errorf("summary %+v, want WARN with 3 lines and 15 bytes dropped", summary)
	}
}

// A child writing multi-MiB lines on both streams runs to its end: the
// readers keep draining past the line limit.
func TestFloodDoesNotBlock(t *testing.T) {
	t.Parallel()
	const maxLine = 1024
	script := `
line() { head -c 4194304 /dev/zero | tr '\0' "$1"; echo; }
(line x; line x; echo after) &
(line y; line y; echo after) >&2
wait`
	out, errs := newLines(), newLines()
	ctx, cancel := context.WithTimeout(t.Context(), patience)
	defer cancel()
	p := start(t, ctx, proc.Spec{Path: tool(t, "sh"), Args: []string{"sh", "-c", script}, MaxLineBytes: maxLine},
		proc.WithStdout(out.add), proc.WithStderr(errs.add))
	if res := wait(t, p); res != (proc.Result{}) {
		t.Fatalf("result %+v, want a clean exit", res)
	}
	for _, tt := range []struct {
		stream string
		lines  *lines
		char   string
	}{{"stdout", out, "x"}, {"stderr", errs, "y"}} {
		long := strings.Repeat(tt.char, maxLine)
		if got, want := tt.lines.all(), []string{long, long, "after"}; !slices.Equal(got, want) {
			t.Errorf("%s: got %d lines %.20q, want %d lines %.20q", tt.stream, len(got), got, len(want), want)
		}
		if want := []bool{true, true, false}; !slices.Equal(tt.lines.trunc, want) {
			t.Errorf("%s: truncated %v, want %v", tt.stream, tt.lines.trunc, want)
		}
	}
}

func TestExit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		script string
		want   proc.Result
	}{
		{name: "success", script: "exit 0", want: proc.Result{}},
		{name: "exit code", script: "exit 3", want: proc.Result{ExitCode: 3}},
		{name: "own signal", script: "kill -TERM $$", want: proc.Result{ExitCode: -1, Signal: syscall.SIGTERM}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := start(t, t.Context(), proc.Spec{Path: tool(t, "sh"), Args: []string{"sh", "-c", tt.script}})
			if res := wait(t, p); res != tt.want {
				t.Errorf("result %+v, want %+v", res, tt.want)
			}
		})
	}
}

func TestStop(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		script string
		// stop ends the process once it printed its first line; nil
		// leaves it to a short deadline.
		stop func(cancel context.CancelFunc, p *proc.Process)
		want proc.Result
	}{
		{
			name:   "deadline",
			script: "echo ready; sleep 300",
			want:   proc.Result{ExitCode: -1, Signal: syscall.SIGTERM, Stopped: proc.TimedOut},
		},
		{
			name:   "cancel",
			script: "echo ready; sleep 300",
			stop:   func(cancel context.CancelFunc, _ *proc.Process) { cancel() },
			want:   proc.Result{ExitCode: -1, Signal: syscall.SIGTERM, Stopped: proc.Cancelled},
		},
		{
			name:   "SIGTERM ignored",
			script: "trap '' TERM; echo ready; sleep 300",
			stop:   func(cancel context.CancelFunc, _ *proc.Process) { cancel() },
			want:   proc.Result{ExitCode: -1, Signal: syscall.SIGKILL, Stopped: proc.Cancelled},
		},
		{
			name:   "kill",
			script: "trap '' TERM; echo ready; sleep 300",
			stop:   func(_ context.CancelFunc, p *proc.Process) { p.Kill() },
			want:   proc.Result{ExitCode: -1, Signal: syscall.SIGKILL, Stopped: proc.Killed},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			if tt.stop == nil {
				ctx, cancel = context.WithTimeout(ctx, 200*time.Millisecond)
				defer cancel()
			}
			out := newLines()
			p := start(t, ctx, proc.Spec{Path: tool(t, "sh"), Args: []string{"sh", "-c", tt.script}, KillGrace: 200 * time.Millisecond},
				proc.WithStdout(out.add))
			if tt.stop != nil {
				out.first(t)
				tt.stop(cancel, p)
			}
			if res := wait(t, p); res != tt.want {
				t.Errorf("result %+v, want %+v", res, tt.want)
			}
		})
	}
}

// Stopping kills every process of the group, including those that
// ignore SIGTERM or outlive the leader.
func TestStopKillsProcessGroup(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		script string
	}{
		{name: "background child", script: "sleep 300 & echo $!; wait"},
		{name: "child ignoring SIGTERM", script: "(trap '' TERM; exec sleep 300) & echo $!; wait"},
		{name: "leader ignoring SIGTERM", script: "trap '' TERM; sleep 300 & echo $!; wait"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			out := newLines()
			p := start(t, ctx, proc.Spec{Path: tool(t, "sh"), Args: []string{"sh", "-c", tt.script}, KillGrace: 200 * time.Millisecond},
				proc.WithStdout(out.add))
			child := pidLine(t, out.first(t))
			cancel()
			if res := wait(t, p); res.Stopped != proc.Cancelled {
				t.Errorf("result %+v, want cancelled", res)
			}
			runnertest.WaitProcessGone(t, p.Pid(), patience)
			runnertest.WaitProcessGone(t, child, patience)
		})
	}
}

// A process that exits on its own leaves nothing behind: whatever it left
// running is stopped, however it left. Choria leaves these running for
// ever (go-choria#842). Each script prints the pid of what it leaves.
func TestExitStopsLeftovers(t *testing.T) {
	// Not parallel: a sweep of another test could stop an escaped
	// leftover first, and this test checks who reports it.
	python := tool(t, "python3")
	tool(t, "setsid")
	tests := []struct {
		name   string
		script string
		// escapes says the leftover left the process group, so only the
		// subreaper sweep can find it.
		escapes bool
		// unreported says the leftover may be gone before the process
		// exits, so that Leftovers need not report it.
		unreported bool
	}{
		{name: "background child", script: "sleep 300 & echo $!"},
		{name: "child ignoring SIGTERM", script: `sh -c 'trap "" TERM; echo $$; exec sleep 300' &
sleep 0.2`},
		// The script waits for Python to be in its group, however long
		// the interpreter takes to start on a busy machine.
		{name: "child in its own process group", script: `moved=$(mktemp -u)
` + python + ` -c 'import os, sys; os.setpgid(0, 0); print(os.getpid(), flush=True); open(sys.argv[1], "w").close(); os.execvp("sleep", ["sleep", "300"])' "$moved" &
while [ ! -e "$moved" ]; do sleep 0.02; done; rm -f "$moved"`, escapes: true},
		{name: "child in a new session", script: "setsid sleep 300 & echo $!; sleep 0.2", escapes: true},
		{name: "new session ignoring SIGTERM", script: `setsid sh -c 'trap "" TERM; echo $$; exec sleep 300' &
sleep 0.2`, escapes: true},
		// Orphaned while the process still runs, it may be stopped then,
		// before the stop it would be reported by.
		{name: "double fork into a new session", script: `(setsid sh -c 'echo $$; exec sleep 300' &)
sleep 0.2`, unreported: true},
		// The child in the new session reaches this process only once its
		// parent, which ignores SIGTERM too, is killed at the end of the
		// grace.
		{name: "new session below a child ignoring SIGTERM", script: `sh -c 'trap "" TERM; setsid sh -c "trap \"\" TERM; echo \$\$; exec sleep 300" & exec sleep 300' &
sleep 0.3`, escapes: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := newLines()
			p := start(t, t.Context(), proc.Spec{Path: tool(t, "sh"), Args: []string{"sh", "-c", tt.script}, KillGrace: 200 * time.Millisecond},
				proc.WithStdout(out.add))
			if res := wait(t, p); res != (proc.Result{}) {
				t.Errorf("result %+v, want a clean exit", res)
			}
			child := pidLine(t, out.first(t))
			// Wait returned: the leftover must already be gone.
			runnertest.WaitProcessGone(t, child, 0)
			l := p.Leftovers()
			if tt.unreported {
				return
			}
			if !l.Group && l.Escaped+l.Orphans == 0 || l.Unstoppable {
				t.Errorf("Leftovers = %+v, want the leftover reported and stopped", l)
			}
			if tt.escapes && l.Escaped+l.Orphans == 0 {
				t.Errorf("Leftovers = %+v, want a descendant that left the group reported", l)
			}
		})
	}
}

// Children that other code of this program started, in its own session,
// are never taken for orphans.
func TestSweepsSpareOtherChildren(t *testing.T) {
	other := exec.Command(tool(t, "sleep"), "300")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Process.Kill(); _ = other.Wait() })
	p := start(t, t.Context(), proc.Spec{Path: tool(t, "sh"), Args: []string{"sh", "-c", "setsid sleep 300 & sleep 0.1"}, KillGrace: 100 * time.Millisecond})
	wait(t, p)
	proc.Sweep()
	if err := other.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("a child started outside proc was signalled or reaped: %v", err)
	}
	if p.Leftovers().Orphans != 1 {
		t.Errorf("Leftovers = %+v, want the one leftover in a session of its own", p.Leftovers())
	}
}

// The sweeper finds orphans however many children this process has: the
// kernel lists them a page at a time, and an orphan is the last to come.
func TestSweeperFindsOrphansBehindManyChildren(t *testing.T) {
	tool(t, "setsid")
	sleep := tool(t, "sleep")
	for range 1000 {
		other := exec.Command(sleep, "300")
		if err := other.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = other.Process.Kill(); _ = other.Wait() })
	}
	orphanOfRunningProcessIsStopped(t)
}

// An orphan that turns up while its process still runs, in a session of
// its own, is stopped by the sweeper without waiting for an exit.
func TestSweeperStopsOrphansOfRunningProcesses(t *testing.T) {
	tool(t, "setsid")
	orphanOfRunningProcessIsStopped(t)
}

// orphanOfRunningProcessIsStopped runs a process that leaves an orphan in
// a session of its own and lives on, and waits for the orphan to go.
func orphanOfRunningProcessIsStopped(t *testing.T) {
	t.Helper()
	out := newLines()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	start(t, ctx, proc.Spec{Path: tool(t, "sh"), Args: []string{"sh", "-c", `(setsid sh -c 'echo $$; exec sleep 300' &); exec sleep 300`}},
		proc.WithStdout(out.add))
	runnertest.WaitProcessGone(t, pidLine(t, out.first(t)), patience)
}

// A chain of descendants each in a session of its own and ignoring
// SIGTERM, which come to this process one at a time as each parent dies,
// is stopped within the grace, not one grace per level.
func TestExitStopsChainsOfSessions(t *testing.T) {
	tool(t, "setsid")
	dir := t.TempDir()
	chain := filepath.Join(dir, "chain")
	pids := filepath.Join(dir, "pids")
	if err := os.WriteFile(chain, []byte(`trap "" TERM
echo $$ >> "$2"
if [ "$1" -gt 0 ]; then setsid sh "$0" $(($1 - 1)) "$2" & fi
exec sleep 300
`), 0o644); err != nil {
		t.Fatal(err)
	}
	const levels = 30
	if err := os.WriteFile(pids, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	p := start(t, t.Context(), proc.Spec{
		Path:      tool(t, "sh"),
		Args:      []string{"sh", "-c", fmt.Sprintf(`sh %s %d %s & while [ $(wc -l < %s) -lt %d ]; do sleep 0.05; done`, chain, levels-1, pids, pids, levels)},
		KillGrace: time.Second, // room for a busy machine: each level is found, and killed, in turn
	})
	wait(t, p)
	b, err := os.ReadFile(pids)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Fields(string(b))
	if len(lines) != levels {
		t.Fatalf("%d levels started, want %d", len(lines), levels)
	}
	for _, line := range lines {
		runnertest.WaitProcessGone(t, pidLine(t, line), 0)
	}
	if l := p.Leftovers(); l.Unstoppable {
		t.Errorf("Leftovers = %+v: the chain was not stopped in time", l)
	}
}

// Dead children are reaped: those of orphans in a running process's
// session, so that they do not pile up while it runs, but not those other
// code of this program started, whose exit status is theirs to read.
func TestSweeperReaps(t *testing.T) {
	other := exec.Command(tool(t, "true"))
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	out := newLines()
	start(t, ctx, proc.Spec{Path: tool(t, "sh"), Args: []string{"sh", "-c", `for i in 1 2 3 4 5 6 7 8 9 10; do sh -c 'sleep 0.01 &'; done; echo started; exec sleep 300`}},
		proc.WithStdout(out.add))
	out.first(t)
	time.Sleep(200 * time.Millisecond) // the sleeps end, as children of this process
	proc.Sweep()
	if z := slices.DeleteFunc(zombies(t), func(pid int) bool { return pid == other.Process.Pid }); len(z) > 0 {
		t.Errorf("dead children left unreaped: %v", z)
	}
	if err := other.Wait(); err != nil {
		t.Errorf("a sweep reaped a child other code started: %v", err)
	}
}

// zombies lists this process's dead children.
func zombies(t *testing.T) []int {
	t.Helper()
	var out []int
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, task := range tasks {
		b, _ := os.ReadFile(filepath.Join("/proc/self/task", task.Name(), "children"))
		for _, f := range strings.Fields(string(b)) {
			stat, err := os.ReadFile("/proc/" + f + "/stat")
			if err != nil {
				continue
			}
			i := strings.LastIndexByte(string(stat), ')')
			fields := strings.Fields(string(stat[i+1:]))
			if fields[0] == "Z" {
				if pid, _ := strconv.Atoi(f); pid > 0 {
					out = append(out, pid)
				}
			}
		}
	}
	return out
}

// The exit status is known as soon as the process exits, before what it
// left running has been stopped.
func TestWaitExitDoesNotWaitForLeftovers(t *testing.T) {
	t.Parallel()
	out := newLines()
	p := start(t, t.Context(), proc.Spec{
		Path:      tool(t, "sh"),
		Args:      []string{"sh", "-c", "sh -c 'trap \"\" TERM; echo $$; exec sleep 300' & sleep 0.2"},
		KillGrace: 2 * time.Second,
	}, proc.WithStdout(out.add))
	begin := time.Now()
	if res, err := p.WaitExit(); err != nil || res != (proc.Result{}) {
		t.Fatalf("WaitExit = %+v, %v; want a clean exit", res, err)
	}
	exitedAfter := time.Since(begin)
	child := pidLine(t, out.first(t))
	if processGone(child) {
		t.Fatalf("the leftover ignoring SIGTERM was gone at once; the test cannot tell WaitExit from Wait")
	}
	wait(t, p)
	if took := time.Since(begin); took < 2*time.Second || exitedAfter > time.Second {
		t.Errorf("WaitExit after %v, Wait after %v: want WaitExit at once and Wait after the 2s grace", exitedAfter, took)
	}
	runnertest.WaitProcessGone(t, child, 0)
}

func processGone(pid int) bool { return syscall.Kill(pid, 0) != nil }

func TestKillAndWaitRepeat(t *testing.T) {
	t.Parallel()
	p := start(t, t.Context(), proc.Spec{Path: tool(t, "sleep"), Args: []string{"sleep", "300"}})
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(p.Kill)
	}
	wg.Wait()
	want := proc.Result{ExitCode: -1, Signal: syscall.SIGKILL, Stopped: proc.Killed}
	for i := range 3 {
		if res := wait(t, p); res != want {
			t.Errorf("Wait #%d: %+v, want %+v", i+1, res, want)
		}
	}
	p.Kill()
	if res := wait(t, p); res != want {
		t.Errorf("Wait after a late Kill: %+v, want %+v", res, want)
	}

	done := start(t, t.Context(), proc.Spec{Path: tool(t, "true")})
	wait(t, done)
	done.Kill()
	if res := wait(t, done); res != (proc.Result{}) {
		t.Errorf("Kill after exit changed the result to %+v", res)
	}
}

func TestStartErrors(t *testing.T) {
	t.Parallel()
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	tests := []struct {
		name    string
		ctx     context.Context
		spec    proc.Spec
		wantErr error
	}{
		{name: "missing executable", ctx: t.Context(), spec: proc.Spec{Path: filepath.Join(t.TempDir(), "nothing")}, wantErr: fs.ErrNotExist},
		{name: "not executable", ctx: t.Context(), spec: proc.Spec{Path: t.TempDir()}, wantErr: fs.ErrPermission},
		{name: "context done", ctx: cancelled, spec: proc.Spec{Path: tool(t, "true")}, wantErr: context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := proc.Start(tt.ctx, tt.spec)
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("got %v, want %v", err, tt.wantErr)
			}
			if p != nil {
				t.Errorf("got a process with the error")
			}
		})
	}
}

// Every goroutine a process needs is gone once Wait returned, however
// the process ended.
func TestNoGoroutineLeak(t *testing.T) {
	sh := tool(t, "sh")
	before := runtime.NumGoroutine()

	ends := []struct {
		script string
		end    func(cancel context.CancelFunc, p *proc.Process)
		// leaves says the script prints the pid of a child it leaves
		// running, which must be gone once Wait returned.
		leaves bool
	}{
		{script: "echo hi; echo there >&2"},
		{script: "exit 7"},
		{script: "sleep 300", end: func(cancel context.CancelFunc, _ *proc.Process) { cancel() }},
		{script: "trap '' TERM; sleep 300", end: func(cancel context.CancelFunc, _ *proc.Process) { cancel() }},
		{script: "sleep 300", end: func(_ context.CancelFunc, p *proc.Process) { p.Kill() }},
		{script: "exec 1>&- 2>&-; sleep 300", end: func(_ context.CancelFunc, p *proc.Process) { p.Kill() }},
		{script: "sleep 300 & echo $!", leaves: true},
		{script: "setsid sleep 300 & echo $!; sleep 0.1", leaves: true},
	}
	var leftover []int
	for _, e := range ends {
		ctx, cancel := context.WithCancel(t.Context())
		out := newLines()
		p, err := proc.Start(ctx, proc.Spec{Path: sh, Args: []string{"sh", "-c", e.script}, KillGrace: 100 * time.Millisecond, Stdin: strings.NewReader("in")},
			proc.WithStdout(out.add))
		if err != nil {
			t.Fatal(err)
		}
		if e.end != nil {
			e.end(cancel, p)
		}
		wait(t, p)
		if e.leaves {
			leftover = append(leftover, pidLine(t, out.first(t)))
		}
		cancel()
	}
	if _, err := proc.Start(t.Context(), proc.Spec{Path: filepath.Join(t.TempDir(), "nothing")}); err == nil {
		t.Fatal("started a missing executable")
	}
	for _, pid := range leftover {
		runnertest.WaitProcessGone(t, pid, 0)
	}

	deadline := time.Now().Add(patience)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestStderrTailAndExtraFiles(t *testing.T) {
	t.Parallel()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p := start(t, t.Context(), proc.Spec{
		Path:       tool(t, "sh"),
		Args:       []string{"sh", "-c", "for i in $(seq 1 15); do echo line$i >&2; done; echo to-fd3 >&3"},
		ExtraFiles: []*os.File{w},
	})
	w.Close()
	wait(t, p)
	want := []string{"line6", "line7", "line8", "line9", "line10", "line11", "line12", "line13", "line14", "line15"}
	if got := p.StderrTail(); !slices.Equal(got, want) {
		t.Errorf("StderrTail = %q, want %q", got, want)
	}
	b, _ := io.ReadAll(r)
	if string(b) != "to-fd3\n" {
		t.Errorf("fd 3 got %q", b)
	}
}
