package interop

import (
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/choria-io/go-choria/statistics"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TestStatsAsChoria: a node's status file is read by go-choria's own
// statistics package and passes the checks Choria's status watchers make,
// and its choria_* metrics have the names, types, help and labels of the
// real Choria server's, so that dashboards and alerts made for Choria
// work unchanged.
func TestStatsAsChoria(t *testing.T) {
	// The real Choria server's counters, in this process's default
	// registry as go-choria keeps them, have series once it has handled
	// a request.
	client := newReferenceClient(t, "stats-reference-client")
	libdir := installChoriaAgents(t, filepath.Join(env.dir, "stats-choria.example.net"), false)
	srv := startChoriaServer(t, writeChoriaConfig(t, "stats-choria.example.net", libdir))
	res := req(t, client, "rpcutil", "ping", nil, filters{})
	checkOK(t, res.bySender(t, "stats-choria.example.net"))
	choriaFamilies, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Stop(srv.ShutdownGrace()); err != nil {
		t.Fatal(err)
	}

	const identity = "stats1.example.net"
	port := freePort(t)
	cfg, err := env.writeNodeConfig(env.ca, identity, `{"role": "stats"}`, "")
	if err != nil {
		t.Fatal(err)
	}
	status := filepath.Join(filepath.Dir(cfg), "status.json")
	// A collective of its own keeps the node out of the other tests'.
	appendConfig(t, cfg, fmt.Sprintf("collectives = stats\nplugin.choria.stats_port = %d\nplugin.choria.status_file_path = %s\nplugin.choria.status_update_interval = 1\n", port, status))
	out, err := os.Create(filepath.Join(filepath.Dir(cfg), "output.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(env.binary, "run", "--config", cfg, "--plugins", t.TempDir())
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(stopTimeout):
			_ = cmd.Process.Kill()
			t.Error("agent-host did not stop")
		}
		if t.Failed() {
			b, _ := os.ReadFile(out.Name())
			t.Logf("agent-host output:\n%s", b)
		}
	}()

	// The status file, as Choria's nagios watcher reads it.
	var st *statistics.InstanceStatus
	deadline := time.Now().Add(readyTimeout)
	for {
		st, err = statistics.LoadInstanceStatus(status)
		if err == nil && st.ConnectedServer != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no status file of a connected node: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for name, err := range map[string]error{
		"connection":  st.CheckConnection(),
		"file age":    st.CheckFileAge(3 * time.Second),
		"certificate": st.CheckCertValidity(time.Hour),
		"token":       st.CheckTokenValidity(time.Hour),
	} {
		if err != nil {
			t.Errorf("Choria's %s check: %v", name, err)
		}
	}
	if st.Identity != identity || st.CertificateExpires.Before(time.Now().Add(time.Hour)) || st.Stats == nil || st.Provisioning {
		t.Errorf("status %+v", st)
	}
	raw, err := os.ReadFile(status)
	if err != nil {
		t.Fatal(err)
	}
	want, err := json.Marshal(statistics.InstanceStatus{Stats: &statistics.ServerStats{}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := jsonShape(t, raw), jsonShape(t, want); !slices.Equal(got, want) {
		t.Errorf("status file fields %v, Choria's %v", got, want)
	}
	// The next write replaces it.
	first := st.Uptime
	deadline = time.Now().Add(10 * time.Second)
	for st.Uptime == first {
		if time.Now().After(deadline) {
			t.Fatalf("the status file was not rewritten: uptime still %d", first)
		}
		time.Sleep(200 * time.Millisecond)
		if s, err := statistics.LoadInstanceStatus(status); err == nil {
			st = s
		}
	}

	// The metrics, against the Choria server's.
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/choria/prometheus", port))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	ours, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	compared := 0
	for _, theirs := range choriaFamilies {
		if !strings.HasPrefix(theirs.GetName(), "choria_server_") {
			continue
		}
		compared++
		mine, ok := ours[theirs.GetName()]
		if !ok {
			t.Errorf("agent-host has no %s", theirs.GetName())
			continue
		}
		if mine.GetType() != theirs.GetType() || mine.GetHelp() != theirs.GetHelp() || !slices.Equal(labelNames(mine), labelNames(theirs)) {
			t.Errorf("%s: agent-host's %v %q %v, Choria's %v %q %v", theirs.GetName(), mine.GetType(), mine.GetHelp(), labelNames(mine), theirs.GetType(), theirs.GetHelp(), labelNames(theirs))
		}
		if got := mine.GetMetric()[0].GetLabel()[0].GetValue(); got != identity {
			t.Errorf("%s: identity %q, want %q", theirs.GetName(), got, identity)
		}
	}
	// Choria counts only what happened: a ping and its startup event.
	if compared < 5 {
		t.Errorf("only %d of Choria's choria_server_* counters to compare with", compared)
	}
	if b := ours["choria_build_info"]; b == nil || !slices.Equal(labelNames(b), []string{"identity", "sha", "version"}) {
		t.Errorf("choria_build_info %v, want Choria's labels identity, sha and version", b)
	}
}

// labelNames are the label names of a family's first series.
func labelNames(f *dto.MetricFamily) []string {
	var names []string
	for _, l := range f.GetMetric()[0].GetLabel() {
		names = append(names, l.GetName())
	}
	slices.Sort(names)
	return names
}

// jsonShape lists the keys of a JSON object and of the objects in it, as
// key or key.subkey, sorted.
func jsonShape(t *testing.T, b []byte) []string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	var keys []string
	for k, v := range m {
		keys = append(keys, k)
		if sub, ok := v.(map[string]any); ok {
			for sk := range maps.Keys(sub) {
				keys = append(keys, k+"."+sk)
			}
		}
	}
	slices.Sort(keys)
	return keys
}

// freePort is a TCP port nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
