package host_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/agent-host/agent-host/host/config"
	"github.com/agent-host/agent-host/protocol"
)

func TestAgentsInSeveralLanguages(t *testing.T) {
	h := start(t, setup{agents: []string{"shagent", "pyagent"}, clock: true})

	t.Run("sh", func(t *testing.T) {
		r := h.call("shagent", "echo", `{"message":"hello from sh"}`)
		wantStatus(t, r, protocol.OK, "OK")
		if got := dataOf(t, r)["message"]; got != "hello from sh" {
			t.Errorf("message = %v", got)
		}
	})
	t.Run("python without an SDK", func(t *testing.T) {
		r := h.call("pyagent", "echo", `{"name":"abc","count":3,"ratio":0.5,"enabled":true,"mode":"fast","addr":"10.1.2.3","opts":{"a":1},"process_results":true}`)
		wantStatus(t, r, protocol.OK, "OK")
		in := dataOf(t, r)["inputs"].(map[string]any)
		// The agent gets the data exactly as sent, process_results included, as Choria does.
		if in["count"] != 3.0 || in["name"] != "abc" || in["process_results"] != true {
			t.Errorf("agent received %v", in)
		}
	})
	t.Run("go, multi-arch layout", func(t *testing.T) {
		r := h.call("clock", "now", `{"zone":"UTC"}`)
		wantStatus(t, r, protocol.OK, "OK")
		d := dataOf(t, r)
		unix, _ := d["unix"].(float64)
		if d["zone"] != "UTC" || time.Since(time.Unix(int64(unix), 0)).Abs() > time.Minute {
			t.Errorf("clock data = %v", d)
		}
	})
	t.Run("agent status passes through", func(t *testing.T) {
		r := h.call("pyagent", "failing", `{}`)
		wantStatus(t, r, protocol.UnknownError, "disk on fire")
		if dataOf(t, r)["partial"] != 1.0 {
			t.Errorf("data = %s", r.Data)
		}
	})
}

func TestInputValidation(t *testing.T) {
	h := start(t, setup{agents: []string{"pyagent"}})
	cases := []struct {
		name, data, want string
	}{
		{"required input missing", `{}`, "input 'name' is required"},
		{"string given a number", `{"name":1}`, "validation failed for input 'name': is not a string"},
		{"regex", `{"name":"ABC"}`, "validation failed for input 'name': input does not match '^[a-z]+$'"},
		{"maxlength", `{"name":"abcdefghijkl"}`, "validation failed for input 'name': is longer than 10 characters"},
		{"integer", `{"name":"a","count":1.5}`, "validation failed for input 'count': is not an integer"},
		{"float", `{"name":"a","ratio":"x"}`, "validation failed for input 'ratio': is not a float"},
		{"boolean", `{"name":"a","enabled":"yes"}`, "validation failed for input 'enabled': is not a boolean"},
		{"list", `{"name":"a","mode":"medium"}`, "validation failed for input 'mode': should be one of fast, slow"},
		{"ipv4", `{"name":"a","addr":"300.1.1.1"}`, "validation failed for input 'addr': 300.1.1.1 is not an IPv4 address"},
		{"shellsafe", `{"name":"a","cmd":"ls; rm -rf /"}`, "validation failed for input 'cmd': may not contain ';'"},
		{"hash", `{"name":"a","opts":[1]}`, "validation failed for input 'opts': is not a hash map"},
		{"undeclared", `{"name":"a","colour":"red"}`, "request contains an input 'colour' that is not declared in the DDL. Valid inputs are: addr, cmd, count, enabled, mode, name, opts, ratio"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := h.call("pyagent", "echo", tc.data)
			wantStatus(t, r, protocol.Aborted, "Validation failed: "+tc.want)
		})
	}
}

func TestRequestErrors(t *testing.T) {
	h := start(t, setup{agents: []string{"shagent", "pyagent"}})
	cases := []struct {
		name, agent, action, data string
		code                      protocol.StatusCode
		msg                       string
	}{
		{"unknown action", "shagent", "nosuch", `{}`, protocol.UnknownAction, "Unknown action nosuch for agent shagent"},
		{"non-zero exit", "shagent", "exit", `{"code":3}`, protocol.Aborted, "Could not call external agent shagent#exit: executing shagent failed: exit status 3"},
		{"killed by a signal", "shagent", "crash", `{}`, protocol.Aborted, "Could not call external agent shagent#crash: executing shagent failed: killed by signal SIGKILL"},
		{"invalid JSON reply", "pyagent", "badjson", `{}`, protocol.Aborted, "Could not call external agent pyagent#badjson: failed to decode reply json: invalid character 't' looking for beginning of object key string"},
		{"reply without data", "pyagent", "nodata", `{}`, protocol.Aborted, "Could not set reply defaults: reply data is in the wrong format"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := h.call(tc.agent, tc.action, tc.data)
			wantStatus(t, r, tc.code, tc.msg)
		})
	}
	t.Run("host keeps serving", func(t *testing.T) {
		wantStatus(t, h.call("shagent", "echo", `{"message":"still here"}`), protocol.OK, "OK")
	})
	// Each failure is an error in the node's log, with what to act on.
	for _, action := range []string{"exit", "crash", "badjson"} {
		found := false
		for _, line := range strings.Split(h.logs.String(), "\n") {
			if strings.Contains(line, `level=ERROR msg="agent failed"`) && strings.Contains(line, "action="+action) &&
				strings.Contains(line, "requestid=") && strings.Contains(line, "agent=") && strings.Contains(line, "error=") {
				found = true
			}
		}
		if !found {
			t.Errorf("no ERROR line with agent, action, request id and cause for the failed %s", action)
		}
	}
}

func TestOutputDefaults(t *testing.T) {
	h := start(t, setup{agents: []string{"pyagent"}})
	r := h.call("pyagent", "defaults", `{}`)
	wantStatus(t, r, protocol.OK, "OK")
	d := dataOf(t, r)
	if d["given"] != "yes" || d["missing"] != "from-ddl" {
		t.Errorf("data = %v, want the agent's value kept and the DDL default filled in", d)
	}
	if _, ok := d["nodefault"]; ok {
		t.Errorf("an output whose default is null must stay absent, got %v", d)
	}
	r = h.call("pyagent", "nulldata", `{}`)
	if d := dataOf(t, r); d["filled"] != 42.0 {
		t.Errorf("data null: got %v, want defaults applied to {}", d)
	}
}

func TestTimeoutKillsProcessGroup(t *testing.T) {
	h := start(t, setup{agents: []string{"shagent"}})
	r := h.call("shagent", "hang", `{}`)
	wantStatus(t, r, protocol.Aborted, "Could not call external agent shagent#hang: timed out after 2s, the agent was killed")
	b, err := os.ReadFile(filepath.Join(h.plugins, "shagent", "grandchild.pid"))
	if err != nil {
		t.Fatalf("the agent did not record its grandchild: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the agent's background grandchild is still running", func() bool { return !alive(pid) })
}

// alive reports whether pid is a running (not zombie) process.
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}

func TestAgentEnvironment(t *testing.T) {
	t.Setenv("AGENT_HOST_TEST_SECRET", "do-not-leak")
	h := start(t, setup{agents: []string{"shagent"}})
	d := dataOf(t, h.call("shagent", "env", `{}`))
	// sh itself adds PWD (and may add SHLVL, _); everything else must be exactly Choria's six.
	got := map[string]bool{}
	for _, name := range strings.Fields(d["env"].(string)) {
		got[name] = true
	}
	for _, want := range []string{"CHORIA_EXTERNAL_REQUEST", "CHORIA_EXTERNAL_REPLY", "CHORIA_EXTERNAL_PROTOCOL", "CHORIA_EXTERNAL_CONFIG", "CHORIA_EXTERNAL_FACTS", "PATH"} {
		if !got[want] {
			t.Errorf("agent environment lacks %s: %v", want, d["env"])
		}
		delete(got, want)
	}
	for name := range got {
		if name != "PWD" && name != "SHLVL" && name != "_" {
			t.Errorf("agent environment has %s, which Choria does not pass", name)
		}
	}
	if d["cwd"] != os.TempDir() {
		t.Errorf("agent ran in %v, want %s", d["cwd"], os.TempDir())
	}
}

func TestActivation(t *testing.T) {
	h := start(t, setup{agents: []string{"inactive", "shagent"}})
	if !strings.Contains(h.runs("inactive"), "ran") {
		t.Fatal("the activation check did not run the agent")
	}
	if _, ok := h.tryCall("inactive", "run", `{}`, 1500*time.Millisecond); ok {
		t.Error("an agent that declined activation answered a request")
	}
	inv := dataOf(t, h.call("rpcutil", "inventory", `{}`))
	agents := strings.Fields(strings.Trim(strings.ReplaceAll(toJSON(t, inv["agents"]), `"`, " "), "[]"))
	for _, a := range agents {
		if strings.Trim(a, ",") == "inactive" {
			t.Errorf("inventory lists the inactive agent: %v", inv["agents"])
		}
	}
}

func toJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestMalformedRequests(t *testing.T) {
	h := start(t, setup{agents: []string{"shagent"}})
	t.Run("body is not JSON", func(t *testing.T) {
		r := h.rawCall(t, "shagent", `this is not json`)
		if r.Statuscode != protocol.InvalidData || !strings.HasPrefix(r.Statusmsg, "Could not process request: ") {
			t.Errorf("reply = %d %q", r.Statuscode, r.Statusmsg)
		}
	})
	t.Run("data is not an object", func(t *testing.T) {
		r := h.rawCall(t, "shagent", `{"agent":"shagent","action":"echo","data":[1,2]}`)
		if r.Statuscode != protocol.InvalidData {
			t.Errorf("reply = %d %q", r.Statuscode, r.Statusmsg)
		}
	})
	t.Run("garbage on the node subject", func(t *testing.T) {
		for _, p := range []string{"", "{", `{"protocol":"choria:transport:1","data":"bm90IGpzb24="}`, `{"protocol":"other"}`} {
			if err := h.nc.Publish("mcollective.node."+node, []byte(p)); err != nil {
				t.Fatal(err)
			}
		}
		eventually(t, 5*time.Second, "garbage was not counted as unvalidated", func() bool { return h.host.Stats().Unvalidated >= 4 })
		wantStatus(t, h.call("shagent", "echo", `{"message":"ok"}`), protocol.OK, "OK")
	})
}

func TestHotReload(t *testing.T) {
	h := start(t, setup{agents: []string{"shagent"}})
	if _, ok := h.tryCall("pyagent", "defaults", `{}`, time.Second); ok {
		t.Fatal("pyagent answered before it was installed")
	}

	t.Run("add", func(t *testing.T) {
		copyAgent(t, "pyagent", h.plugins)
		eventually(t, 15*time.Second, "the new agent was not served", func() bool {
			r, ok := h.tryCall("pyagent", "defaults", `{}`, time.Second)
			return ok && r.Statuscode == protocol.OK
		})
	})
	t.Run("change", func(t *testing.T) {
		ddlPath := filepath.Join(h.plugins, "pyagent.json")
		b, err := os.ReadFile(ddlPath)
		if err != nil {
			t.Fatal(err)
		}
		// Write through a temporary name and rename, as a deploy tool does.
		tmp := filepath.Join(h.plugins, ".pyagent.json.new")
		writeFile(t, tmp, strings.Replace(string(b), `"version": "1.0.0"`, `"version": "2.0.0"`, 1))
		if err := os.Rename(tmp, ddlPath); err != nil {
			t.Fatal(err)
		}
		eventually(t, 15*time.Second, "agent_inventory did not show the new version", func() bool {
			return strings.Contains(string(h.call("rpcutil", "agent_inventory", `{}`).Data), `"version":"2.0.0"`)
		})
	})
	t.Run("remove", func(t *testing.T) {
		if err := os.RemoveAll(filepath.Join(h.plugins, "shagent")); err != nil {
			t.Fatal(err)
		}
		eventually(t, 15*time.Second, "the removed agent is still served", func() bool {
			_, ok := h.tryCall("shagent", "echo", `{"message":"x"}`, time.Second)
			return !ok
		})
		if strings.Contains(string(h.call("rpcutil", "inventory", `{}`).Data), "shagent") {
			t.Error("inventory still lists the removed agent")
		}
	})
}

func TestAgentConfigPath(t *testing.T) {
	// CHORIA_EXTERNAL_CONFIG is <config dir>/plugin.d/<agent>, without .cfg, as Choria sets it.
	dir := t.TempDir()
	conf := filepath.Join(dir, "server.conf")
	writeFile(t, conf, "identity = "+node+"\n")
	loaded, err := config.Load(conf)
	if err != nil {
		t.Fatal(err)
	}
	h := start(t, setup{agents: []string{"shagent"}, configure: func(c *config.Config) { c.ConfigFile = loaded.ConfigFile }})
	d := dataOf(t, h.call("shagent", "env", `{}`))
	if want := filepath.Join(dir, "plugin.d", "shagent"); d["config"] != want {
		t.Errorf("CHORIA_EXTERNAL_CONFIG = %v, want %s", d["config"], want)
	}
}

// requirePyMCO fails, rather than skips, when the real py-mco-agent is not
// importable: `make test` installs it.
func requirePyMCO(t *testing.T) {
	t.Helper()
	out, err := exec.Command("python3", "-c", "import mco_agent, choria_external; print(mco_agent.__version__)").CombinedOutput()
	if err != nil {
		t.Fatalf("py-mco-agent is not importable by the python3 on PATH (run the tests with `make test`, which installs it): %v\n%s", err, out)
	}
	if v := strings.TrimSpace(string(out)); v != "0.4.0" {
		t.Fatalf("py-mco-agent %s is installed, want 0.4.0", v)
	}
}

func TestPyMCOAgent(t *testing.T) {
	requirePyMCO(t)
	h := start(t, setup{agents: []string{"pymco"}})
	parrot := t.TempDir()
	copyDir(t, filepath.Join("..", "testdata", "agents", "parrot"), filepath.Join(parrot, "parrot"))

	cases := []struct {
		name, action, data string
		code               protocol.StatusCode
		msg                string
		wantData           string
	}{
		// py-mco-agent writes "statusmsg": "" on success; the host passes it through as Choria does.
		{"success", "echo", `{"message":"hello"}`, protocol.OK, "", `{"message":"hello"}`},
		{"reply.fail", "fail", `{}`, protocol.Aborted, "Invalid command", `{}`},
		{"raised exception", "boom", `{}`, protocol.Aborted, "RPC Aborted: RPC Aborted: kaboom", `{}`},
		{"action missing from the class", "missing", `{}`, protocol.Aborted, "RPC Aborted: RPC Aborted: Unknown RPC Action: missing", `{}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := h.call("pymco", tc.action, tc.data)
			wantStatus(t, r, tc.code, tc.msg)
			if string(r.Data) != tc.wantData {
				t.Errorf("data = %s, want %s", r.Data, tc.wantData)
			}
		})
	}
	if !strings.Contains(h.logs.String(), `msg="Intentionally failing"`) || !strings.Contains(h.logs.String(), "level=ERROR") {
		t.Error("the agent's logger.warning did not reach the host log at error level")
	}
}

func TestReadmeParrot(t *testing.T) {
	requirePyMCO(t)
	h := start(t, setup{})
	copyDir(t, filepath.Join("..", "testdata", "agents", "parrot"), filepath.Join(h.plugins, "parrot"))
	eventually(t, 15*time.Second, "parrot was not loaded", func() bool {
		r, ok := h.tryCall("parrot", "echo", `{"message":"hello"}`, 3*time.Second)
		return ok && r.Statuscode == protocol.OK && dataOf(t, r)["message"] == "hello"
	})
	if !strings.Contains(h.logs.String(), `msg="Using default prefix!"`) {
		t.Error("parrot's warning about its prefix is not in the host log")
	}
}

// TestShutdown: on stop the host lets in-flight requests finish and reply;
// Abort kills them at once instead.
func TestShutdown(t *testing.T) {
	statusOf := func(t *testing.T, sub *nats.Subscription) string {
		t.Helper()
		// The host flushed the reply to the broker before Run returned; it
		// may still be on its way to this subscriber.
		msg, err := sub.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("the in-flight request got no reply before the host stopped: %v", err)
		}
		return replyBody(t, msg.Data).Statusmsg
	}

	t.Run("drain", func(t *testing.T) {
		h := start(t, setup{agents: []string{"shagent"}})
		sub := h.sendHang(t)
		h.stop()
		if msg := statusOf(t, sub); !strings.Contains(msg, "timed out after 2s") {
			t.Errorf("reply %s, want the agent's own timeout: the host waited for it", msg)
		}
	})
	t.Run("abort", func(t *testing.T) {
		h := start(t, setup{agents: []string{"shagent"}})
		sub := h.sendHang(t)
		h.host.Abort()
		h.stop()
		if msg := statusOf(t, sub); strings.Contains(msg, "timed out after 2s") || !strings.Contains(msg, "Could not call external agent shagent#hang") {
			t.Errorf("reply %s, want the agent killed by the abort, not by its timeout", msg)
		}
	})
}
