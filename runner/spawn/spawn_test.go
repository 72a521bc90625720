package spawn_test

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/agent-host/agent-host/protocol"
	"github.com/agent-host/agent-host/runner"
	"github.com/agent-host/agent-host/runner/runnertest"
	"github.com/agent-host/agent-host/runner/spawn"
)

func TestMain(m *testing.M) { runnertest.Main(m) }

// patience bounds waits for things that should happen soon, so that a
// bug fails a test instead of hanging it; it is no speed target.
const patience = 30 * time.Second

// shellEcho replies with the whole request document as its data, using
// only shell builtins.
const shellEcho = `IFS= read -r req < "$1"
printf '{"statuscode":0,"statusmsg":"OK","data":%s}' "$req" > "$2"`

// fixture is a spawner writing into a temporary directory of its own,
// with its logs recorded. When the test ends it checks that every run
// removed its temporary files.
type fixture struct {
	*spawn.Spawner
	logs *runnertest.Logs
	dir  string
}

func newFixture(t *testing.T, cfg spawn.Config) *fixture {
	t.Helper()
	if cfg.TempDir == "" {
		cfg.TempDir = t.TempDir()
	}
	// Files that merely look like ours must survive.
	for _, name := range []string{"request-other", "reply.json", "facts"} {
		if err := os.WriteFile(filepath.Join(cfg.TempDir, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	before := tempFiles(t, cfg.TempDir)
	t.Cleanup(func() {
		if after := tempFiles(t, cfg.TempDir); !slices.Equal(after, before) {
			t.Errorf("temporary files left behind: before %q, after %q", before, after)
		}
	})
	logs := &runnertest.Logs{}
	return &fixture{Spawner: spawn.New(cfg, spawn.WithLogger(logs.Logger())), logs: logs, dir: cfg.TempDir}
}

// tempFiles lists the names in dir that start like the spawner's files.
func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		for _, prefix := range []string{"request", "reply", "facts"} {
			if strings.HasPrefix(e.Name(), prefix) {
				names = append(names, e.Name())
			}
		}
	}
	return names
}

func request(data string) *protocol.AgentRequest {
	req := protocol.NewAgentRequest()
	req.Agent, req.Action = "parrot", "echo"
	req.RequestID = "3e1c5d0a8b1f5ad2a0c6f1d8e7b4a912"
	req.SenderID, req.CallerID, req.Collective = "node1.example.net", "choria=rip.mcollective", "mcollective"
	req.TTL, req.MsgTime = 60, 1718444508
	req.Data = json.RawMessage(data)
	return req
}

func TestRun(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		agent   func(t *testing.T) string
		cfg     spawn.Config
		ctx     func(t *testing.T) context.Context
		want    func(t *testing.T, rep *protocol.AgentReply)
		wantErr error
		// wantExit, when set, is the *runner.ExitError expected.
		wantExit *runner.ExitError
		// wantMsg is a part of the error's message.
		wantMsg string
	}{
		{
			name:  "echo",
			agent: agent(runnertest.Echo),
			want: func(t *testing.T, rep *protocol.AgentReply) {
				if rep.Statuscode != protocol.OK || rep.Statusmsg != "OK" || string(rep.Data) != `{"message":"hello world"}` {
					t.Errorf("reply %+v, want OK with the request's data", rep)
				}
			},
		},
		{
			name: "relative executable path",
			agent: func(t *testing.T) string {
				cwd, err := os.Getwd()
				if err != nil {
					t.Fatal(err)
				}
				rel, err := filepath.Rel(cwd, runnertest.Agent(t, runnertest.Echo))
				if err != nil {
					t.Fatal(err)
				}
				return rel
			},
			want: func(t *testing.T, rep *protocol.AgentReply) {
				if rep.Statuscode != protocol.OK || string(rep.Data) != `{"message":"hello world"}` {
					t.Errorf("reply %+v, want OK with the request's data", rep)
				}
			},
		},
		{
			name:  "reply file replaced",
			agent: shell(`printf '{"statuscode":4,"statusmsg":"no","data":{"a":1}}' > "$2.new" && mv "$2.new" "$2"`),
			want: func(t *testing.T, rep *protocol.AgentReply) {
				if rep.Statuscode != protocol.InvalidData || rep.Statusmsg != "no" || string(rep.Data) != `{"a":1}` {
					t.Errorf("reply %+v, want the replacement's", rep)
				}
			},
		},
		{
			name:  "huge reply within a raised limit",
			agent: agent(runnertest.HugeReply),
			cfg:   spawn.Config{MaxReplyBytes: 2 * runnertest.HugeReplyBytes},
			want: func(t *testing.T, rep *protocol.AgentReply) {
				var data struct{ Blob string }
				if err := json.Unmarshal(rep.Data, &data); err != nil || len(data.Blob) != runnertest.HugeReplyBytes {
					t.Errorf("blob of %d bytes (%v), want %d", len(data.Blob), err, runnertest.HugeReplyBytes)
				}
			},
		},
		{
			name:     "exit code",
			agent:    agent(runnertest.Exit(3)),
			wantExit: &runner.ExitError{Name: runnertest.Exit(3), Code: 3},
			wantMsg:  "executing exit-3 failed: exit status 3",
		},
		{
			name:     "crash",
			agent:    agent(runnertest.Crash),
			wantExit: &runner.ExitError{Name: runnertest.Crash, Code: 2},
		},
		{
			name:     "killed by a signal",
			agent:    shell(`kill -KILL $$`),
			wantExit: &runner.ExitError{Name: "shellagent", Code: -1, Signal: "SIGKILL"},
			wantMsg:  "executing shellagent failed: killed by signal SIGKILL",
		},
		{
			name:    "invalid JSON",
			agent:   agent(runnertest.InvalidJSON),
			wantErr: protocol.ErrInvalidAgentReply,
			wantMsg: "failed to decode reply json: invalid character",
		},
		{
			name:    "empty reply",
			agent:   agent(runnertest.EmptyReply),
			wantErr: protocol.ErrInvalidAgentReply,
			wantMsg: "failed to decode reply json: unexpected end of JSON input",
		},
		{
			name:    "no data",
			agent:   agent(runnertest.NoData),
			wantErr: protocol.ErrReplyDataFormat,
		},
		{
			name:    "data not an object",
			agent:   shell(`printf '{"data":[1]}' > "$2"`),
			wantErr: protocol.ErrReplyDataFormat,
		},
		{
			name:    "huge reply",
			agent:   agent(runnertest.HugeReply),
			wantErr: runner.ErrReplyTooLarge,
		},
		{
			name:     "segmentation fault",
			agent:    shell(`kill -SEGV $$`),
			wantExit: &runner.ExitError{Name: "shellagent", Code: -1, Signal: "SIGSEGV"},
			wantMsg:  "executing shellagent failed: killed by signal SIGSEGV",
		},
		{
			name:    "reply is a FIFO",
			agent:   shell(`rm "$2" && mkfifo "$2"`),
			wantMsg: "is not a regular file",
		},
		{
			name:    "timeout",
			agent:   agent(runnertest.Hang),
			ctx:     timeout(300 * time.Millisecond),
			wantErr: runner.ErrTimeout,
			wantMsg: "executing hang failed: runner: agent timed out",
		},
		{
			name:  "cancelled",
			agent: agent(runnertest.Hang),
			ctx: func(t *testing.T) context.Context {
				ctx, cancel := context.WithCancel(t.Context())
				time.AfterFunc(300*time.Millisecond, cancel)
				return ctx
			},
			wantErr: context.Canceled,
		},
		{
			name:  "deadline passed before the start",
			agent: agent(runnertest.Echo),
			ctx: func(t *testing.T) context.Context {
				ctx, cancel := context.WithDeadline(t.Context(), time.Now())
				t.Cleanup(cancel)
				return ctx
			},
			wantErr: runner.ErrTimeout,
		},
		{
			name:    "missing executable",
			agent:   func(t *testing.T) string { return filepath.Join(t.TempDir(), "parrot") },
			wantErr: runner.ErrNoExecutable,
			wantMsg: "executing parrot failed: agent executable was not found",
		},
		{
			name:    "not executable",
			agent:   func(t *testing.T) string { return t.TempDir() },
			wantErr: fs.ErrPermission,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, tt.cfg)
			ctx := t.Context()
			if tt.ctx != nil {
				ctx = tt.ctx(t)
			}
			rep, err := f.Run(ctx, tt.agent(t), request(`{"message":"hello world"}`))
			if tt.want != nil {
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
				tt.want(t, rep)
				return
			}
			if err == nil {
				t.Fatalf("Run succeeded with %+v", rep)
			}
			if rep != nil {
				t.Errorf("got a reply with the error: %+v", rep)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("error %q does not match %q", err, tt.wantErr)
			}
			if tt.wantExit != nil {
				var exit *runner.ExitError
				if !errors.As(err, &exit) || *exit != *tt.wantExit {
					t.Errorf("error %#v, want %#v", err, tt.wantExit)
				}
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not say %q", err, tt.wantMsg)
			}
		})
	}
}

func agent(behaviour string) func(t *testing.T) string {
	return func(t *testing.T) string { return runnertest.Agent(t, behaviour) }
}

func shell(script string) func(t *testing.T) string {
	return func(t *testing.T) string { return runnertest.ShellAgent(t, script) }
}

func timeout(d time.Duration) func(t *testing.T) context.Context {
	return func(t *testing.T) context.Context {
		ctx, cancel := context.WithTimeout(t.Context(), d)
		t.Cleanup(cancel)
		return ctx
	}
}

// checkFile checks one file an agent was given: where it is, its mode
// and its content.
// checkInvocation asserts Choria's argv and exactly its six environment
// variables. The third argument is the rpc_request protocol even for an
// activation check; only CHORIA_EXTERNAL_PROTOCOL tells them apart.
func checkInvocation(t *testing.T, inv runnertest.Invocation, exe, proto, config, path string, extraEnv ...string) {
	t.Helper()
	reqFile := inv.Files["CHORIA_EXTERNAL_REQUEST"].Path
	replyFile := inv.Files["CHORIA_EXTERNAL_REPLY"].Path
	if want := []string{exe, reqFile, replyFile, protocol.AgentRequestProtocol}; !slices.Equal(inv.Argv, want) {
		t.Errorf("argv %q, want %q", inv.Argv, want)
	}
	wantEnv := []string{
		"CHORIA_EXTERNAL_REQUEST=" + reqFile,
		"CHORIA_EXTERNAL_REPLY=" + replyFile,
		"CHORIA_EXTERNAL_PROTOCOL=" + proto,
		"CHORIA_EXTERNAL_CONFIG=" + config,
		"CHORIA_EXTERNAL_FACTS=" + inv.Files["CHORIA_EXTERNAL_FACTS"].Path,
		"PATH=" + path,
	}
	wantEnv = append(wantEnv, extraEnv...)
	if !slices.Equal(inv.Env, wantEnv) {
		t.Errorf("environment\n%q\nwant\n%q", inv.Env, wantEnv)
	}
}

func checkFile(t *testing.T, inv runnertest.Invocation, key, dir, prefix, content string) {
	t.Helper()
	f, ok := inv.Files[key]
	if !ok {
		t.Fatalf("no %s in %+v", key, inv)
	}
	if filepath.Dir(f.Path) != dir || !strings.HasPrefix(filepath.Base(f.Path), prefix) {
		t.Errorf("%s is %s, want %s/%s*", key, f.Path, dir, prefix)
	}
	if f.Mode != 0o600 {
		t.Errorf("%s has mode %v, want %v", key, f.Mode, fs.FileMode(0o600))
	}
	if f.Content != content {
		t.Errorf("%s holds %q, want %q", key, f.Content, content)
	}
}

func TestRunInvocation(t *testing.T) {
	t.Parallel()
	cwd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		cfg        spawn.Config
		wantConfig string
		wantFacts  string
		wantPath   string
	}{
		{
			name:       "defaults",
			wantConfig: "/etc/choria/plugin.d/parrot",
			wantFacts:  "{}",
			wantPath:   os.Getenv("PATH"),
		},
		{
			name: "configured",
			cfg: spawn.Config{
				PluginConfigDir: "/etc/puppetlabs/mcollective/plugin.d/",
				Facts:           func() []byte { return []byte(`{"os":"linux"}`) },
				Path:            "/opt/bin:/usr/bin",
			},
			wantConfig: "/etc/puppetlabs/mcollective/plugin.d/parrot",
			wantFacts:  `{"os":"linux"}`,
			wantPath:   "/opt/bin:/usr/bin",
		},
		{
			name:       "relative plugin directory",
			cfg:        spawn.Config{PluginConfigDir: "conf/plugin.d"},
			wantConfig: filepath.Join(cwd, "conf/plugin.d/parrot"),
			wantFacts:  "{}",
			wantPath:   os.Getenv("PATH"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, tt.cfg)
			exe := runnertest.Agent(t, runnertest.Dump)
			req := request(`{"message":"<hello> & \"world\""}`)
			rep, err := f.Run(t.Context(), exe, req)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			var inv runnertest.Invocation
			if err := json.Unmarshal(rep.Data, &inv); err != nil {
				t.Fatalf("decoding the agent's report: %v", err)
			}
			checkInvocation(t, inv, exe, protocol.AgentRequestProtocol, tt.wantConfig, tt.wantPath)
			if wantCwd, _ := filepath.EvalSymlinks(f.dir); inv.Cwd != wantCwd {
				t.Errorf("working directory %s, want %s", inv.Cwd, wantCwd)
			}
			wantReq, err := json.Marshal(req)
			if err != nil {
				t.Fatal(err)
			}
			checkFile(t, inv, "CHORIA_EXTERNAL_REQUEST", f.dir, "request", string(wantReq))
			checkFile(t, inv, "CHORIA_EXTERNAL_REPLY", f.dir, "reply", "")
			checkFile(t, inv, "CHORIA_EXTERNAL_FACTS", f.dir, "facts", tt.wantFacts)
		})
	}
}

// Without a TempDir, files go to os.TempDir(), which is also the agent's
// working directory. Not parallel: it sets TMPDIR.
func TestRunDefaultTempDir(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("TMPDIR", dir)
	s := spawn.New(spawn.Config{})
	rep, err := s.Run(t.Context(), runnertest.Agent(t, runnertest.Dump), request(`{}`))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	var inv runnertest.Invocation
	if err := json.Unmarshal(rep.Data, &inv); err != nil {
		t.Fatal(err)
	}
	if wantCwd, _ := filepath.EvalSymlinks(dir); inv.Cwd != wantCwd {
		t.Errorf("working directory %s, want %s", inv.Cwd, wantCwd)
	}
	checkFile(t, inv, "CHORIA_EXTERNAL_REQUEST", dir, "request", inv.Files["CHORIA_EXTERNAL_REQUEST"].Content)
	if left := tempFiles(t, dir); len(left) != 0 {
		t.Errorf("temporary files left behind: %q", left)
	}
}

// The request file is Choria's document, byte for byte.
func TestRunRequestDocument(t *testing.T) {
	t.Parallel()
	f := newFixture(t, spawn.Config{})
	rep, err := f.Run(t.Context(), runnertest.Agent(t, runnertest.Dump), request(`{ "message": "hello world", "process_results": true }`))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	var inv runnertest.Invocation
	if err := json.Unmarshal(rep.Data, &inv); err != nil {
		t.Fatal(err)
	}
	want := `{"$schema":"https://choria.io/schemas/mcorpc/external/v1/rpc_request.json","protocol":"io.choria.mcorpc.external.v1.rpc_request","agent":"parrot","action":"echo","requestid":"3e1c5d0a8b1f5ad2a0c6f1d8e7b4a912","senderid":"node1.example.net","callerid":"choria=rip.mcollective","collective":"mcollective","ttl":60,"msgtime":1718444508,"data":{"message":"hello world","process_results":true}}`
	if got := inv.Files["CHORIA_EXTERNAL_REQUEST"].Content; got != want {
		t.Errorf("request file\n%s\nwant\n%s", got, want)
	}
}

func TestRunLogsOutput(t *testing.T) {
	t.Parallel()
	f := newFixture(t, spawn.Config{})
	if _, err := f.Run(t.Context(), runnertest.Agent(t, runnertest.Echo), request(`{}`)); err != nil {
		t.Fatalf("Run: %v", err)
	}
	want := map[string]runnertest.Record{
		runnertest.EchoStdout: {Level: slog.LevelInfo, Attrs: map[string]string{"agent": "parrot", "stream": "stdout"}},
		runnertest.EchoStderr: {Level: slog.LevelError, Attrs: map[string]string{"agent": "parrot", "stream": "stderr"}},
	}
	f.logs.Check(t, want)
}

func TestRunTimeoutKillsProcessGroup(t *testing.T) {
	t.Parallel()
	f := newFixture(t, spawn.Config{KillGrace: 200 * time.Millisecond})
	// Long enough for the agent to start its child on a loaded machine.
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	_, err := f.Run(ctx, runnertest.Agent(t, runnertest.Grandchild), request(`{}`))
	if !errors.Is(err, runner.ErrTimeout) {
		t.Fatalf("error %v, want %v", err, runner.ErrTimeout)
	}
	pid := 0
	for _, r := range f.logs.Records() {
		if s, ok := strings.CutPrefix(r.Message, runnertest.GrandchildPrefix); ok {
			pid, _ = strconv.Atoi(s)
		}
	}
	if pid == 0 {
		t.Fatalf("the agent did not report its child within the timeout; records: %+v", f.logs.Records())
	}
	runnertest.WaitProcessGone(t, pid, patience)
}

// A child writing lines of several MiB on both streams is drained to its
// end (else it would block and time out) while memory stays bounded by
// the line limit. Not parallel: it measures the process's allocations.
func TestRunFlood(t *testing.T) {
	f := newFixture(t, spawn.Config{})
	exe := runnertest.Agent(t, runnertest.Flood)
	ctx, cancel := context.WithTimeout(t.Context(), patience)
	defer cancel()

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	rep, err := f.Run(ctx, exe, request(`{"n":1}`))
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if string(rep.Data) != `{"n":1}` {
		t.Errorf("reply %+v, want the request's data", rep)
	}
	if allocated := after.TotalAlloc - before.TotalAlloc; allocated > runnertest.FloodLineBytes {
		t.Errorf("allocated %d bytes for output lines of %d bytes", allocated, runnertest.FloodLineBytes)
	}

	truncated := map[string]int{}
	done := map[string]int{}
	for _, r := range f.logs.Records() {
		switch {
		case r.Attrs["truncated"] == "true" && len(r.Message) == 64<<10 && strings.Trim(r.Message, "f") == "":
			truncated[r.Attrs["stream"]]++
		case r.Message == runnertest.FloodDone:
			done[r.Attrs["stream"]]++
		default:
			t.Errorf("unexpected record: %.80s %v", r.Message, r.Attrs)
		}
	}
	for _, stream := range []string{"stdout", "stderr"} {
		if truncated[stream] != runnertest.FloodLines || done[stream] != 1 {
			t.Errorf("%s: %d truncated lines and %d final lines logged, want %d and 1",
				stream, truncated[stream], done[stream], runnertest.FloodLines)
		}
	}
}

func TestRunConcurrent(t *testing.T) {
	t.Parallel()
	f := newFixture(t, spawn.Config{})
	exe := runnertest.ShellAgent(t, shellEcho)
	ctx, cancel := context.WithTimeout(t.Context(), patience)
	defer cancel()
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			req := request(fmt.Sprintf(`{"n":%d}`, i))
			req.RequestID = strconv.Itoa(i)
			rep, err := f.Run(ctx, exe, req)
			if err != nil {
				t.Errorf("run %d: %v", i, err)
				return
			}
			var got protocol.AgentRequest
			if err := json.Unmarshal(rep.Data, &got); err != nil || got.RequestID != req.RequestID || string(got.Data) != string(req.Data) {
				t.Errorf("run %d got the reply %s (%v)", i, rep.Data, err)
			}
		})
	}
	wg.Wait()
}

func TestRunner(t *testing.T) {
	t.Parallel()
	f := newFixture(t, spawn.Config{})
	r := f.Runner(runnertest.ShellAgent(t, shellEcho))
	rep, err := r.Run(t.Context(), request(`{"via":"runner"}`))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	var got protocol.AgentRequest
	if err := json.Unmarshal(rep.Data, &got); err != nil || string(got.Data) != `{"via":"runner"}` {
		t.Errorf("reply %s (%v), want the request echoed", rep.Data, err)
	}
}

func TestActivate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		agent   func(t *testing.T) string
		timeout time.Duration // of the activation check; patience when zero
		want    bool
		wantErr error
		wantMsg string
	}{
		{name: "activate", agent: agent(runnertest.ActivateTrue), want: true},
		{name: "do not activate", agent: agent(runnertest.ActivateFalse)},
		{name: "key missing", agent: agent(runnertest.ActivateMissing)},
		{name: "invalid JSON", agent: agent(runnertest.InvalidJSON), wantErr: protocol.ErrInvalidAgentReply, wantMsg: "failed to decode reply json"},
		{name: "empty reply", agent: agent(runnertest.EmptyReply), wantErr: protocol.ErrInvalidAgentReply, wantMsg: "unexpected end of JSON input"},
		{name: "exit code", agent: agent(runnertest.Exit(1)), wantMsg: "executing exit-1 failed: exit status 1"},
		{name: "timeout", agent: agent(runnertest.Hang), timeout: 300 * time.Millisecond, wantErr: runner.ErrTimeout},
		{name: "missing executable", agent: func(t *testing.T) string { return filepath.Join(t.TempDir(), "parrot") }, wantErr: runner.ErrNoExecutable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, spawn.Config{ActivationTimeout: cmp.Or(tt.timeout, patience)})
			got, err := f.Activate(t.Context(), tt.agent(t), "parrot")
			if got.Active != tt.want {
				t.Errorf("activate %v, want %v", got, tt.want)
			}
			if tt.wantErr == nil && tt.wantMsg == "" {
				if err != nil {
					t.Errorf("Activate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Activate succeeded")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("error %q does not match %q", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not say %q", err, tt.wantMsg)
			}
		})
	}
}

// An activation check differs from a request in Choria's ways: the
// activation protocol in the environment but rpc_request in argv, and an
// empty facts file whatever the facts.
func TestActivateInvocation(t *testing.T) {
	t.Parallel()
	f := newFixture(t, spawn.Config{
		PluginConfigDir: "/etc/choria/plugin.d",
		Facts:           func() []byte { return []byte(`{"os":"linux"}`) },
	})
	exe := runnertest.Agent(t, runnertest.Dump)
	act, err := f.Activate(t.Context(), exe, "parrot")
	if err != nil || !act.Active {
		t.Fatalf("Activate: %v, %v", act, err)
	}
	var inv runnertest.Invocation
	for _, r := range f.logs.Records() {
		if strings.HasPrefix(r.Message, `{"argv"`) {
			if err := json.Unmarshal([]byte(r.Message), &inv); err != nil {
				t.Fatal(err)
			}
		}
	}
	if inv.Files == nil {
		t.Fatalf("the agent's report was not logged: %+v", f.logs.Records())
	}
	checkInvocation(t, inv, exe, protocol.ActivationRequestProtocol, "/etc/choria/plugin.d/parrot", os.Getenv("PATH"), "AGENT_HOST_WORKER_PROTOCOLS=1", "AGENT_HOST_PLUGIN_PROTOCOLS=1")
	checkFile(t, inv, "CHORIA_EXTERNAL_REQUEST", f.dir, "request",
		`{"$schema":"https://choria.io/schemas/mcorpc/external/v1/activation_request.json","protocol":"io.choria.mcorpc.external.v1.activation_request","agent":"parrot"}`)
	checkFile(t, inv, "CHORIA_EXTERNAL_REPLY", f.dir, "reply", "")
	checkFile(t, inv, "CHORIA_EXTERNAL_FACTS", f.dir, "facts", "")
}

// BenchmarkSpawnShell measures one request end to end through Run with a
// /bin/sh agent that echoes the request using builtins only.
func BenchmarkSpawnShell(b *testing.B) {
	s := spawn.New(spawn.Config{TempDir: b.TempDir()})
	exe := runnertest.ShellAgent(b, shellEcho)
	req := request(`{"message":"hello world"}`)
	b.ReportAllocs()
	before := hostCPU(b)
	for b.Loop() {
		ctx, cancel := context.WithTimeout(b.Context(), patience)
		rep, err := s.Run(ctx, exe, req)
		cancel()
		if err != nil || rep.Statuscode != protocol.OK {
			b.Fatalf("Run: %v, %+v", err, rep)
		}
	}
	// The host's own CPU per request, its agents' excluded: what the
	// spawning costs the node beyond the agent itself.
	b.ReportMetric(float64((hostCPU(b)-before).Microseconds())/float64(b.N), "host-µs/op")
}

// hostCPU is the CPU time this process has used, user and system.
func hostCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
