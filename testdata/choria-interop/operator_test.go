package interop

import (
	"bufio"
	"context"
	"encoding/json"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/choria-io/go-choria/choria"
	"github.com/choria-io/go-choria/client/choria_utilclient"
	"github.com/choria-io/go-choria/config"
	rpc "github.com/choria-io/go-choria/providers/agent/mcorpc/client"
	"github.com/sirupsen/logrus"
)

// TestChoriaUtilInfo asks choria_util info of the real Choria server and
// of agent-host's node1 with go-choria's generated choria_util client, the
// code behind Choria's tooling: every typed accessor reads agent-host's
// reply, and its keys, nested ones included, are the ones Choria sends.
func TestChoriaUtilInfo(t *testing.T) {
	refClient := newReferenceClient(t, "choria-util-client")
	libdir := installChoriaAgents(t, filepath.Join(env.dir, choriaNode), false)
	startChoriaServer(t, writeChoriaConfig(t, choriaNode, libdir))
	choriaInfo := choriaUtilInfo(t, refClient, choriaNode)
	hostInfo := choriaUtilInfo(t, env.client, node1)

	if got, want := keys(hostInfo), keys(choriaInfo); !slices.Equal(got, want) {
		t.Errorf("agent-host's info keys %v, Choria's %v", got, want)
	}
	for _, nested := range []string{"client_options", "client_stats"} {
		got, _ := hostInfo[nested].(map[string]any)
		want, _ := choriaInfo[nested].(map[string]any)
		if !slices.Equal(keys(got), keys(want)) {
			t.Errorf("agent-host's %s keys %v, Choria's %v", nested, keys(got), keys(want))
		}
		for k, v := range want {
			if reflect.TypeOf(got[k]) != reflect.TypeOf(v) {
				t.Errorf("%s.%s is %T in agent-host's reply, %T in Choria's", nested, k, got[k], v)
			}
		}
	}
	for k, want := range map[string]any{
		"security":         "file",
		"secure_protocol":  true,
		"connector_tls":    true,
		"connected_server": env.natsURL,
		"choria_version":   "agent-host " + interopVersion,
	} {
		if hostInfo[k] != want {
			t.Errorf("agent-host's %s = %v, want %v", k, hostInfo[k], want)
		}
	}
	if servers, _ := hostInfo["middleware_servers"].([]any); len(servers) != 1 || "nats://"+servers[0].(string) != env.natsURL {
		t.Errorf("agent-host's middleware_servers = %v, want %s as host:port", hostInfo["middleware_servers"], env.natsURL)
	}
}

// choriaUtilInfo is node's choria_util info through the generated
// client, read with every accessor it has (each panics on a wrong type).
func choriaUtilInfo(t *testing.T, fw *choria.Framework, node string) map[string]any {
	t.Helper()
	cu, err := choria_utilclient.New(fw)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
	defer cancel()
	res, err := cu.OptionTargets([]string{node}).Info().Do(ctx)
	if err != nil {
		t.Fatalf("choria_util info of %s: %v", node, err)
	}
	outs := res.AllOutputs()
	if len(outs) != 1 || !outs[0].ResultDetails().OK() || outs[0].ResultDetails().Sender() != node {
		t.Fatalf("choria_util info of %s: %d replies %+v", node, len(outs), outs)
	}
	o := outs[0]
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("reading %s's choria_util info with the generated client: %v", node, r)
			}
		}()
		_ = []any{o.ChoriaVersion(), o.ClientFlavour(), o.ClientOptions(), o.ClientStats(), o.ClientVersion(),
			o.ConnectedServer(), o.Connector(), o.ConnectorTls(), o.FacterCommand(), o.FacterDomain(),
			o.MiddlewareServers(), o.Path(), o.SecureProtocol(), o.Security(), o.SrvDomain(), o.UsingSrv()}
	}()
	return o.HashMap()
}

// interopVersion is the version the tests build agent-host with.
const interopVersion = "0.1.0-interop"

func keys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

// TestInventoryVersion: rpcutil inventory and the rpcutil DDL's metadata
// report the version agent-host was built with (-X host.Version).
func TestInventoryVersion(t *testing.T) {
	res := do(t, env.client, "rpcutil", "inventory", struct{}{}, rpc.Targets([]string{node1}))
	rep := res.bySender(t, node1)
	checkOK(t, rep)
	var inv struct {
		Version string `json:"version"`
	}
	decode(t, rep, &inv)
	if inv.Version != interopVersion {
		t.Errorf("inventory version %q, want %q", inv.Version, interopVersion)
	}
	res = do(t, env.client, "rpcutil", "agent_inventory", struct{}{}, rpc.Targets([]string{node1}))
	var ai struct {
		Agents []map[string]any `json:"agents"`
	}
	decode(t, res.bySender(t, node1), &ai)
	for _, a := range ai.Agents {
		if (a["agent"] == "rpcutil" || a["agent"] == "choria_util") && a["version"] != interopVersion {
			t.Errorf("%s's version %v, want %q", a["agent"], a["version"], interopVersion)
		}
	}
}

// TestLogLinesLikeChoria: agent-host's logfile has the lines Choria's
// logfile has. Choria's come from its own log opener (logrus' JSON
// formatter); every line of node1's logfile has Choria's keys, a level
// logrus knows and a time in Choria's format, and one with a component
// has the keys of Choria's line with a component.
func TestLogLinesLikeChoria(t *testing.T) {
	choriaFile := filepath.Join(t.TempDir(), "choria.log")
	l := logrus.New()
	if err := choria.CommonLogOpener(choriaFile, l); err != nil {
		t.Fatal(err)
	}
	l.WithField("component", "server").Warn("a line as Choria writes it")
	choriaLines := readJSONLines(t, choriaFile)
	if len(choriaLines) != 1 {
		t.Fatalf("Choria wrote %d lines, want 1", len(choriaLines))
	}
	ref := choriaLines[0]
	refTime, err := time.Parse(time.RFC3339, ref["time"].(string))
	if err != nil {
		t.Fatalf("Choria's time %v: %v", ref["time"], err)
	}
	timeFormat := time.RFC3339
	if refTime.Format(timeFormat) != ref["time"] {
		t.Fatalf("Choria's time %v is not RFC 3339 to the second", ref["time"])
	}
	levels := map[string]bool{}
	for _, lv := range logrus.AllLevels {
		levels[lv.String()] = true
	}
	if !levels[ref["level"].(string)] || ref["level"] != "warning" {
		t.Fatalf("Choria's level %v", ref["level"])
	}

	lines := readJSONLines(t, filepath.Join(env.dir, node1, "agent-host.log"))
	if len(lines) < 5 {
		t.Fatalf("node1 logged %d lines", len(lines))
	}
	withComponent := false
	for i, line := range lines {
		for _, k := range []string{"level", "msg", "time"} {
			if _, ok := line[k].(string); !ok {
				t.Fatalf("line %d lacks Choria's %s: %v", i, k, line)
			}
		}
		if !levels[line["level"].(string)] {
			t.Errorf("line %d: level %q is not one of logrus' %v", i, line["level"], slices.Sorted(maps.Keys(levels)))
		}
		if at, err := time.Parse(timeFormat, line["time"].(string)); err != nil || at.Format(timeFormat) != line["time"] {
			t.Errorf("line %d: time %q is not in Choria's format (%v)", i, line["time"], err)
		}
		if _, ok := line["component"]; ok {
			withComponent = true
			for k := range ref {
				if _, ok := line[k]; !ok {
					t.Errorf("line %d has a component but not Choria's %s: %v", i, k, line)
				}
			}
		}
	}
	if !withComponent {
		t.Error("no line of node1's log names its component")
	}
}

func readJSONLines(t *testing.T, file string) []map[string]any {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("%s: line %q is not JSON: %v", file, sc.Text(), err)
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRealisticConfigIsChoria's: every key of the server configuration
// host/config's TestChoriaServerConf loads is one Choria v0.30.2 reads,
// declared in its configuration structs or read as a plugin option, so
// the warnings that test expects are about real Choria settings.
func TestRealisticConfigIsChorias(t *testing.T) {
	known := map[string]bool{
		// Read with Option by the actionpolicy authorizer.
		"plugin.actionpolicy.allow_unconfigured": true,
		"plugin.actionpolicy.enable_default":     true,
	}
	var walk func(reflect.Type)
	walk = func(rt reflect.Type) {
		for i := range rt.NumField() {
			f := rt.Field(i)
			if k := f.Tag.Get("confkey"); k != "" {
				known[k] = true
			}
			if ft := f.Type; ft.Kind() == reflect.Pointer && ft.Elem().Kind() == reflect.Struct {
				walk(ft.Elem())
			}
		}
	}
	walk(reflect.TypeFor[config.Config]())
	if !known["plugin.choria.stats_port"] || !known["loglevel"] {
		t.Fatalf("found %d Choria keys, not the expected ones", len(known))
	}
	b, err := os.ReadFile(filepath.Join("..", "..", "host", "config", "testdata", "choria-server.conf"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for line := range strings.Lines(string(b)) {
		key, _, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok || strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		n++
		if key = strings.TrimSpace(key); !known[key] {
			t.Errorf("%s is not a key Choria reads", key)
		}
	}
	if n < 30 {
		t.Errorf("read %d keys", n)
	}
}

// TestKeyMetadataIsChorias: a key agent-host shares with Choria points to
// the same page and is deprecated exactly when Choria's is, in what
// `agent-host config list -l` prints, as `choria tool config` shows them.
func TestKeyMetadataIsChorias(t *testing.T) {
	type meta struct {
		url        string
		deprecated bool
		declared   bool // a key agent-host implements, not one it ignores
	}
	choria := map[string]meta{}
	var walk func(reflect.Type)
	walk = func(rt reflect.Type) {
		for i := range rt.NumField() {
			f := rt.Field(i)
			if k := f.Tag.Get("confkey"); k != "" {
				d := f.Tag.Get("deprecated")
				choria[k] = meta{url: f.Tag.Get("url"), deprecated: d == "1" || d == "true", declared: true}
			}
			if ft := f.Type; ft.Kind() == reflect.Pointer && ft.Elem().Kind() == reflect.Struct {
				walk(ft.Elem())
			}
		}
	}
	walk(reflect.TypeFor[config.Config]())

	out, err := exec.Command(env.binary, "config", "list", "-l").Output()
	if err != nil {
		t.Fatalf("agent-host config list -l: %v", err)
	}
	// Each key starts a line of its own; its details are indented below it.
	ours := map[string]*meta{}
	var current *meta
	for line := range strings.Lines(string(out)) {
		switch {
		case strings.TrimSpace(line) == "":
		case !strings.HasPrefix(line, " "):
			current = &meta{}
			ours[strings.TrimSpace(line)] = current
		case current == nil:
			t.Fatalf("details before any key: %q", line)
		default:
			field, value, _ := strings.Cut(strings.TrimSpace(line), ":")
			switch field {
			case "URL":
				current.url = strings.TrimSpace(value)
			case "Deprecated":
				current.deprecated = strings.TrimSpace(value) == "yes"
			case "Type":
				current.declared = true
			}
		}
	}
	shared, linked := 0, 0
	for key, got := range ours {
		want, ok := choria[key]
		if !ok || !got.declared {
			continue
		}
		shared++
		if want.url != "" {
			linked++
		}
		if *got != want {
			t.Errorf("%s: url %q, deprecated %v; Choria's %q, %v", key, got.url, got.deprecated, want.url, want.deprecated)
		}
	}
	if shared < 30 || linked < 5 {
		t.Errorf("compared %d keys shared with Choria, %d with a URL: too few to mean anything", shared, linked)
	}
}
