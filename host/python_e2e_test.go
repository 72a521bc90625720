package host_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agent-host/agent-host/host/config"
	"github.com/agent-host/agent-host/protocol"
	v1 "github.com/agent-host/agent-host/protocol/v1"
	"github.com/agent-host/agent-host/runner/runnertest"
)

// Agents written for py-mco-agent, unchanged, served by the host with
// sdk-python in exec mode and in pool mode, and with the real
// py-mco-agent 0.4.0.

// pyAgent is an agent's source directory, holding <name> and <name>.json.
type pyAgent struct{ name, src string }

var (
	pyParrot  = pyAgent{"parrot", "../testdata/agents/parrot"}
	pyKitchen = pyAgent{"kitchen", "../testdata/agents-src/pycompat/kitchen"}
	pyLegacy  = pyAgent{"legacy", "../testdata/agents-src/pycompat/legacy"}
)

func (a pyAgent) script() string {
	abs, err := filepath.Abs(filepath.Join(a.src, a.name))
	if err != nil {
		panic(err)
	}
	return abs
}

// sdkVenv is sdk-python's virtual environment (make sdk-venv).
const sdkVenv = "../.venv-sdk"

// requireSDK fails, rather than skips, when sdk-python's virtual
// environment is missing: `make test` creates it. The harness only leaves
// the Python pooltest out without it, which would let these tests pass
// having run nothing.
func requireSDK(t *testing.T) {
	t.Helper()
	// The SDK's mco_agent is agent_host's; the real py-mco-agent's is not.
	out, err := exec.Command(filepath.Join(sdkVenv, "bin", "python"), "-c", "import agent_host, mco_agent; assert mco_agent.Agent is agent_host.Agent").CombinedOutput()
	if err != nil {
		t.Fatalf("sdk-python is not installed in .venv-sdk (run the tests with `make test`, which creates it): %v\n%s", err, out)
	}
}

// installPython lays the agents out in Choria's per-agent layout. With
// sdk, the executable is a wrapper running the unchanged agent file with
// .venv-sdk's interpreter; without, the file itself, whose
// `#!/usr/bin/env python3` finds .venv's, with the real py-mco-agent.
func installPython(sdk bool, agents ...pyAgent) func(testing.TB, string) {
	return func(t testing.TB, plugins string) {
		t.Helper()
		for _, a := range agents {
			dir := filepath.Join(plugins, a.name)
			copyFile(t, filepath.Join(a.src, a.name+".json"), filepath.Join(dir, a.name+".json"))
			if !sdk {
				copyFile(t, a.script(), filepath.Join(dir, a.name))
				continue
			}
			if err := runnertest.PythonAgentAt(filepath.Join(dir, a.name), sdkVenv, a.script()); err != nil {
				t.Fatalf("the %s wrapper: %v (run the tests with `make test`, which creates .venv-sdk)", a.name, err)
			}
		}
	}
}

// startPython starts a host serving agents, with plugin.d (where
// CHORIA_EXTERNAL_CONFIG points, <plugin.d>/<agent>) in a directory of
// its own; mode "" leaves plugin.agent_host.pool.mode at its default.
func startPython(t *testing.T, mode string, sdk bool, agents ...pyAgent) (*harness, string) {
	t.Helper()
	conf := t.TempDir()
	h := start(t, setup{install: installPython(sdk, agents...), configure: func(c *config.Config) {
		c.ConfigFile = filepath.Join(conf, "server.conf")
		if mode != "" {
			c.PoolMode = mode
		}
	}})
	return h, filepath.Join(conf, "plugin.d")
}

// pyCase is one request and the reply it must get. In want, $REQUESTID
// and $MSGTIME stand for the request's id and time.
type pyCase struct {
	name          string
	agent         pyAgent
	action, data  string
	config        string // the agent's configuration file during the request
	code          protocol.StatusCode
	msg, want     string
	sameAsPyMCO   bool // the real py-mco-agent 0.4.0 must answer the same
	requestFields bool // the reply echoes the request's id and time
}

// pyCases covers every action of the three agents' DDLs, in the order
// they run.
var pyCases = []pyCase{
	{name: "parrot echo", agent: pyParrot, action: "echo", data: `{"message":"hello"}`,
		want: `{"message":"hello"}`, sameAsPyMCO: true},
	{name: "parrot echo with a prefix", agent: pyParrot, action: "echo", data: `{"message":"hello"}`,
		config: "prefix = PFX: \n", want: `{"message":"PFX: hello"}`},
	{name: "kitchen request", agent: pyKitchen, action: "request", data: `{"message":"hi"}`,
		want: `{"protocol":"io.choria.mcorpc.external.v1.rpc_request","agent":"kitchen","action":"request",
			"requestid":"$REQUESTID","senderid":"rip.mcollective","callerid":"choria=rip.mcollective",
			"collective":"mcollective","ttl":60,"msgtime":$MSGTIME,"data":{"message":"hi"}}`,
		sameAsPyMCO: true, requestFields: true},
	{name: "kitchen config", agent: pyKitchen, action: "config", data: `{}`,
		config: "# colours\ncolour = blue\nactivate=true\n", want: `{"config":{"colour":"blue","activate":"true"},"file":"kitchen"}`},
	{name: "kitchen invalid", agent: pyKitchen, action: "invalid", data: `{}`,
		code: protocol.Aborted, msg: "Invalid command", want: `{"after":"still ran"}`, sameAsPyMCO: true},
	{name: "kitchen boom", agent: pyKitchen, action: "boom", data: `{}`,
		code: protocol.Aborted, msg: "RPC Aborted: RPC Aborted: kaboom", want: `{}`, sameAsPyMCO: true},
	{name: "kitchen keyerror", agent: pyKitchen, action: "keyerror", data: `{}`,
		code: protocol.Aborted, msg: "RPC Aborted: RPC Aborted: 'nosuch'", want: `{}`},
	{name: "kitchen baddata", agent: pyKitchen, action: "baddata", data: `{}`,
		code: protocol.Aborted, msg: "RPC Aborted: RPC Aborted: Invalid Data: number is not a number", want: `{}`},
	{name: "kitchen status", agent: pyKitchen, action: "status", data: `{}`,
		code: 3, msg: "set by hand", want: `{}`, sameAsPyMCO: true},
	{name: "kitchen facts", agent: pyKitchen, action: "facts", data: `{}`,
		want: `{"facts":{"os":{"family":"Debian"},"role":"web","cpus":4}}`},
	{name: "kitchen missing", agent: pyKitchen, action: "missing", data: `{}`,
		code: protocol.Aborted, msg: "RPC Aborted: RPC Aborted: Unknown RPC Action: missing", want: `{}`, sameAsPyMCO: true},
	{name: "kitchen log", agent: pyKitchen, action: "log", data: `{}`, want: `{}`},
	{name: "legacy echo", agent: pyLegacy, action: "echo", data: `{"message":"m"}`,
		want: `{"message":"m","name":"legacy","registered":["echo"],"same_base":true}`},
	{name: "legacy other_only", agent: pyLegacy, action: "other_only", data: `{}`,
		code: protocol.Aborted, msg: "RPC Aborted: RPC Aborted: Unknown RPC Action: other_only", want: `{}`},
}

// pyResult is a reply with the request's own id and time replaced by
// $REQUESTID and $MSGTIME, so replies to different requests compare.
type pyResult struct {
	Code protocol.StatusCode
	Msg  string
	Data any
}

// run sends c's request and returns its reply, checked against c.
func (c pyCase) run(t *testing.T, h *harness, plugind string) pyResult {
	t.Helper()
	if c.config != "" {
		conf := filepath.Join(plugind, c.agent.name)
		writeFile(t, conf, c.config)
		defer os.Remove(conf)
	}
	var r protocol.RPCReply
	id, when := "", int64(0)
	if c.requestFields {
		// Sent by hand to know the request's id and time.
		var sreq *v1.SecureRequest
		sreq, id = unsignedWith(t, c.agent.name, fmt.Sprintf(`{"agent":%q,"action":%q,"data":%s}`, c.agent.name, c.action, c.data), nil,
			func(e *v1.RequestEnvelope) { when = e.Time })
		r = h.publish(t, sreq, id, true)
	} else {
		r = h.call(c.agent.name, c.action, c.data)
	}
	var data any
	if err := json.Unmarshal(r.Data, &data); err != nil {
		t.Fatalf("reply data %s: %v", r.Data, err)
	}
	if m, ok := data.(map[string]any); ok && c.requestFields {
		if m["requestid"] == id {
			m["requestid"] = "$REQUESTID"
		}
		if m["msgtime"] == float64(when) {
			m["msgtime"] = "$MSGTIME"
		}
	}
	res := pyResult{r.Statuscode, r.Statusmsg, data}
	want := pyResult{c.code, c.msg, jsonValue(t, strings.ReplaceAll(c.want, "$MSGTIME", `"$MSGTIME"`))}
	if !reflect.DeepEqual(res, want) {
		t.Errorf("reply %d %q %s\nwant  %d %q %s", r.Statuscode, r.Statusmsg, r.Data, c.code, c.msg, c.want)
	}
	return res
}

func jsonValue(t *testing.T, s string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("%s: %v", s, err)
	}
	return v
}

// TestPyMCOAgentsUnderTheSDK: py-mco-agent agents of both import styles,
// unchanged, run with sdk-python spawned per request and pooled with no
// configuration, and answer every action the same either way.
func TestPyMCOAgentsUnderTheSDK(t *testing.T) {
	requireSDK(t)
	replies := map[string][]pyResult{}
	for _, m := range []struct{ name, poolMode string }{
		{"exec", "exec"},
		// The default: the SDK's activation reply offers the worker.
		{"pool", ""},
	} {
		mode := m.name
		t.Run(mode, func(t *testing.T) {
			pooled := mode == "pool"
			h, plugind := startPython(t, m.poolMode, true, pyParrot, pyKitchen, pyLegacy)
			workers := map[string]int{} // pid of each agent's worker
			for _, c := range pyCases {
				t.Run(c.name, func(t *testing.T) {
					replies[mode] = append(replies[mode], c.run(t, h, plugind))
					// The host runs agents as its children; the wrapper
					// execs the interpreter, whose argv names the agent file.
					procs := childrenRunning(t, c.agent.script())
					if !pooled {
						// Each request's process is gone before its reply,
						// so the next one gets a new process.
						if len(procs) != 0 {
							t.Errorf("agent processes %v still run after the reply", procs)
						}
						return
					}
					if workers[c.agent.name] == 0 {
						workers[c.agent.name] = workerStarted(t, h, c.agent.name)
					}
					if want := []int{workers[c.agent.name]}; !slices.Equal(procs, want) {
						t.Errorf("agent processes %v, want the one worker %v serving every request", procs, want)
					}
				})
			}

			logs := h.logs.String()
			for _, a := range []pyAgent{pyParrot, pyKitchen, pyLegacy} {
				servedByPool := len(logLines(logs, "serving the agent with a pool of workers", a.name)) > 0
				started := len(logLines(logs, "worker started", a.name))
				want := 0
				if pooled {
					want = 1
				}
				if servedByPool != pooled || started != want {
					t.Errorf("%s: pooled %v with %d workers started, want pooled %v with %d", a.name, servedByPool, started, pooled, want)
				}
			}
			if strings.Contains(logs, "giving up on the agent's workers") {
				t.Error("a pool gave up, and spawned the agent instead")
			}

			// Output reaches the log as in exec mode: stdout at info,
			// stderr at error, each line once, from the agent's process
			// (a worker's output comes asynchronously).
			from := map[bool]string{true: "component=pool agent=%s worker=", false: "component=spawn agent=%s stream="}[pooled]
			for _, l := range []struct {
				agent, msg, level string
			}{
				{"parrot", "Using default prefix!", "ERROR"},
				{"kitchen", "about to fail", "ERROR"},
				{"kitchen", "info line", "INFO"},
				{"kitchen", "printed line", "INFO"},
				{"kitchen", "warning line", "ERROR"},
				{"kitchen", "error line", "ERROR"},
				{"legacy", "legacy info", "INFO"},
			} {
				t.Run("log "+l.agent+" "+l.msg, func(t *testing.T) {
					var lines []string
					waitFor(5*time.Second, func() bool {
						lines = logLines(h.logs.String(), l.msg, l.agent)
						return len(lines) > 0
					})
					if len(lines) != 1 || !strings.Contains(lines[0], " level="+l.level+" ") || !strings.Contains(lines[0], fmt.Sprintf(from, l.agent)) {
						t.Errorf("%q logged as %q, want it once at %s with %s", l.msg, lines, l.level, fmt.Sprintf(from, l.agent))
					}
				})
			}
			if strings.Contains(h.logs.String(), "debug line") {
				t.Error("a debug line was logged without CHORIA_EXTERNAL_DEBUG")
			}
		})
	}

	t.Run("exec and pool agree", func(t *testing.T) {
		if len(replies["exec"]) != len(pyCases) || len(replies["pool"]) != len(pyCases) {
			t.Fatalf("%d replies in exec mode and %d in pool mode, want %d each", len(replies["exec"]), len(replies["pool"]), len(pyCases))
		}
		for i, c := range pyCases {
			if e, p := replies["exec"][i], replies["pool"][i]; !reflect.DeepEqual(e, p) {
				t.Errorf("%s: exec %+v, pool %+v", c.name, e, p)
			}
		}
	})
}

// TestSDKRepliesAsPyMCO: the real py-mco-agent 0.4.0 answers what the SDK
// answers, for the agents and actions where the SDK's README lists no
// deliberate difference.
func TestSDKRepliesAsPyMCO(t *testing.T) {
	requirePyMCO(t)
	requireSDK(t)
	sdk, sdkPluginD := startPython(t, "exec", true, pyParrot, pyKitchen)
	pymco, pymcoPluginD := startPython(t, "", false, pyParrot, pyKitchen)
	for _, c := range pyCases {
		if !c.sameAsPyMCO {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			if s, r := c.run(t, sdk, sdkPluginD), c.run(t, pymco, pymcoPluginD); !reflect.DeepEqual(s, r) {
				t.Errorf("sdk-python %+v, py-mco-agent %+v", s, r)
			}
		})
	}
	if n := len(logLines(pymco.logs.String(), "worker started", "kitchen")); n != 0 {
		t.Errorf("py-mco-agent was pooled (%d workers started), want it spawned: it offers no worker", n)
	}
}

// waitFor polls cond until it holds or within passed, and says which.
func waitFor(within time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(within); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// logLines returns the lines of the host log with message msg about agent.
func logLines(logs, msg, agent string) []string {
	var out []string
	m := "msg=" + strconv.Quote(msg)
	if !strings.ContainsAny(msg, " \"=") {
		m = "msg=" + msg
	}
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, " "+m+" ") && strings.Contains(line, " agent="+agent+" ") {
			out = append(out, line)
		}
	}
	return out
}

var pidAttr = regexp.MustCompile(` pid=(\d+)( |$)`)

// workerStarted returns the pid of the one worker the host started for
// agent.
func workerStarted(t *testing.T, h *harness, agent string) int {
	t.Helper()
	lines := logLines(h.logs.String(), "worker started", agent)
	if len(lines) != 1 {
		t.Fatalf("%d workers started for %s, want 1: %q", len(lines), agent, lines)
	}
	m := pidAttr.FindStringSubmatch(lines[0])
	if m == nil {
		t.Fatalf("no pid in %q", lines[0])
	}
	pid, _ := strconv.Atoi(m[1])
	return pid
}

// childrenRunning lists the live children of this process (the host's
// agents and workers) whose command line names script.
func childrenRunning(t *testing.T, script string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and brackets.
		var state string
		var ppid int
		if i := bytes.LastIndexByte(stat, ')'); i < 0 {
			continue
		} else if _, err := fmt.Sscan(string(stat[i+1:]), &state, &ppid); err != nil || ppid != os.Getpid() || state == "Z" {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if slices.Contains(strings.Split(string(cmdline), "\x00"), script) {
			pids = append(pids, pid)
		}
	}
	slices.Sort(pids)
	return pids
}
