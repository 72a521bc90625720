package host_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/agent-host/agent-host/host"
	"github.com/agent-host/agent-host/host/config"
	"github.com/agent-host/agent-host/host/hosttest"
	"github.com/agent-host/agent-host/protocol"
	v1 "github.com/agent-host/agent-host/protocol/v1"
)

// freePort is a TCP port nothing listens on now, for a statistics
// server: plugin.choria.stats_port 0 turns it off, as in Choria.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// scrape fetches url and parses it as Prometheus' text format.
func scrape(t testing.TB, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scraping: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("scraping %s: %s\n%s", url, resp.Status, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing %s: %v", url, err)
	}
	return families
}

// metricValues lists a family's series as "label=value,... value", sorted,
// so that a whole family is compared at once; a histogram's value is its
// count.
func metricValues(families map[string]*dto.MetricFamily, name string) []string {
	var out []string
	for _, m := range families[name].GetMetric() {
		var labels []string
		for _, l := range m.GetLabel() {
			labels = append(labels, l.GetName()+"="+l.GetValue())
		}
		var v float64
		switch {
		case m.GetCounter() != nil:
			v = m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			v = m.GetGauge().GetValue()
		case m.GetHistogram() != nil:
			v = float64(m.GetHistogram().GetSampleCount())
		}
		out = append(out, strings.Join(labels, ",")+" "+strconv.FormatFloat(v, 'f', -1, 64))
	}
	slices.Sort(out)
	return out
}

func wantSeries(t *testing.T, families map[string]*dto.MetricFamily, name string, want ...string) {
	t.Helper()
	slices.Sort(want)
	if got := metricValues(families, name); !slices.Equal(got, want) {
		t.Errorf("%s =\n\t%s\nwant\n\t%s", name, strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
	}
}

// TestMetrics: after real requests of every outcome, Choria's counters
// and agent-host's own are scraped over HTTP with the values they should
// have, under Choria's names, labels and paths.
func TestMetrics(t *testing.T) {
	port := freePort(t)
	authz := &authorizer{deny: []string{"shagent#detach"}}
	h := start(t, setup{
		agents: []string{"shagent"}, pooltest: poolAgents[0].exe, longTimeout: true,
		hostOpts: []host.Option{host.WithAuthorizer(authz)},
		configure: func(c *config.Config) {
			c.StatsPort = port
			c.MaxInFlight = 1
			c.QueueLimit = 2 // 1 per agent
			c.ReplyMaxBytes = 4096
			c.PoolMaxRequests = 2
		},
	})
	id := "identity=" + node

	wantStatus(t, h.call("shagent", "echo", `{"message":"a"}`), protocol.OK, "OK")
	wantStatus(t, h.call("shagent", "echo", `{"message":"b"}`), protocol.OK, "OK")
	wantStatus(t, h.call("shagent", "nosuch", `{}`), protocol.UnknownAction, "Unknown action nosuch for agent shagent")
	wantDenied(t, h.call("shagent", "detach", `{}`), "detach")
	if r := h.call("shagent", "exit", `{"code":3}`); r.Statuscode != protocol.Aborted {
		t.Errorf("exit 3: %d %q", r.Statuscode, r.Statusmsg)
	}
	if r := h.call("shagent", "big", `{"bytes":10000}`); r.Statuscode != protocol.Aborted || !strings.Contains(r.Statusmsg, "larger than the 4096 bytes") {
		t.Errorf("big: %d %q", r.Statuscode, r.Statusmsg)
	}
	wantStatus(t, h.call("rpcutil", "ping", `{}`), protocol.OK, "OK")
	// A pooled worker retired after 2 requests, one that dies, and the
	// one started after it.
	pid(t, h.call("pooltest", "echo", `{}`))
	pid(t, h.call("pooltest", "echo", `{}`))
	if r := h.call("pooltest", "crash", `{"message":"x"}`); r.Statuscode != protocol.Aborted {
		t.Errorf("crash: %d %q", r.Statuscode, r.Statusmsg)
	}
	pid(t, h.call("pooltest", "echo", `{}`))

	f := protocol.NewFilter()
	f.Identity = []string{"elsewhere.example.net"}
	if h.discovers(t, f) {
		t.Fatal("a node elsewhere was discovered")
	}
	if !h.discovers(t, protocol.NewFilter()) {
		t.Fatal("the node was not discovered")
	}
	old, oldID := unsignedWith(t, "shagent", `{"agent":"shagent","action":"echo","data":{"message":"x"}}`, nil, func(e *v1.RequestEnvelope) { e.Time -= 3600 })
	h.publish(t, old, oldID, false)
	before := h.host.Stats().Unvalidated
	if err := h.nc.Publish("mcollective.node."+node, []byte("not a request")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the garbage was not counted", func() bool { return h.host.Stats().Unvalidated == before+1 })
	if err := h.host.Publish("choria.lifecycle.event.test", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	// One request holds the only slot, one waits, and the next is busy.
	h.sendHang(t)
	eventually(t, 10*time.Second, "the hang did not take the slot", func() bool { return h.host.Stats().Running == 1 })
	waits, waitsID := unsigned(t, "shagent", `{"agent":"shagent","action":"hang","data":{}}`, nil)
	h.send(t, waits, waitsID, "mcollective.node."+node)
	eventually(t, 10*time.Second, "the second hang did not wait", func() bool { return h.host.Stats().Waiting == 1 })
	busy, busyID := unsigned(t, "shagent", `{"agent":"shagent","action":"hang","data":{}}`, nil)
	if r := h.publish(t, busy, busyID, true); r.Statuscode != protocol.Aborted || !strings.Contains(r.Statusmsg, "is busy") {
		t.Errorf("busy: %d %q", r.Statuscode, r.Statusmsg)
	}
	// A reply is counted once published, which may be just after the
	// client has it.
	eventually(t, 10*time.Second, "the last reply was not counted", func() bool { return h.host.Stats().Replies == 13 })
	eventually(t, 10*time.Second, "the recycled worker did not exit", func() bool {
		return slices.Contains(metricValues(scrape(t, fmt.Sprintf("http://127.0.0.1:%d/choria/prometheus", port)), "agent_host_pool_worker_retirements_total"), "agent=pooltest,"+id+",reason=recycle 1")
	})

	// 18 messages: 11 requests answered by shagent, rpcutil and pooltest,
	// 2 discovery pings (one filtered), 1 expired, 1 garbage and 3 hangs
	// (running, waiting, busy); 13 replies: the 11, a pong and busy.
	for _, path := range []string{"/choria/prometheus", "/choria/metrics"} {
		t.Run(path, func(t *testing.T) {
			m := scrape(t, fmt.Sprintf("http://127.0.0.1:%d%s", port, path))
			for name, want := range map[string]int{
				"choria_server_total": 18, "choria_server_unvalidated": 1, "choria_server_filtered": 1,
				"choria_server_passed": 16, "choria_server_ttlexpired": 1, "choria_server_validated": 15,
				"choria_server_replies": 13, "choria_server_events": 1,
			} {
				wantSeries(t, m, name, fmt.Sprintf("%s %d", id, want))
			}
			wantSeries(t, m, "choria_build_info", id+",sha=unknown,version="+host.Version+" 1")
			wantSeries(t, m, "agent_host_requests_total",
				"action=echo,agent=shagent,"+id+",statuscode=0 2",
				"action=(unknown),agent=shagent,"+id+",statuscode=2 1",
				"action=detach,agent=shagent,"+id+",statuscode=1 1",
				"action=exit,agent=shagent,"+id+",statuscode=1 1",
				"action=big,agent=shagent,"+id+",statuscode=1 1",
				"action=hang,agent=shagent,"+id+",statuscode=1 1",
				"action=ping,agent=rpcutil,"+id+",statuscode=0 1",
				"action=echo,agent=pooltest,"+id+",statuscode=0 3",
				"action=crash,agent=pooltest,"+id+",statuscode=1 1",
			)
			wantSeries(t, m, "agent_host_request_duration_seconds",
				"action=echo,agent=shagent,"+id+" 2",
				"action=(unknown),agent=shagent,"+id+" 1",
				"action=detach,agent=shagent,"+id+" 1",
				"action=exit,agent=shagent,"+id+" 1",
				"action=big,agent=shagent,"+id+" 1",
				"action=ping,agent=rpcutil,"+id+" 1",
				"action=echo,agent=pooltest,"+id+" 3",
				"action=crash,agent=pooltest,"+id+" 1",
			)
			// Every request that reached a slot: the hang holding it too.
			wantSeries(t, m, "agent_host_queue_wait_seconds", "agent=shagent,"+id+" 7", "agent=pooltest,"+id+" 4")
			wantSeries(t, m, "agent_host_authorization_denials_total", "action=detach,agent=shagent,"+id+" 1")
			wantSeries(t, m, "agent_host_agent_failures_total",
				"agent=shagent,cause=exit,"+id+" 1",
				"agent=shagent,cause=reply_too_large,"+id+" 1",
				"agent=pooltest,cause=worker_died,"+id+" 1",
			)
			wantSeries(t, m, "agent_host_busy_total", id+" 1")
			wantSeries(t, m, "agent_host_refused_total", id+" 1")
			wantSeries(t, m, "agent_host_requests_waiting", id+" 1")
			wantSeries(t, m, "agent_host_requests_running", id+" 1")
			wantSeries(t, m, "agent_host_unknown_agent_total", id+" 0")
			wantSeries(t, m, "agent_host_dropped_total", "by=intake,"+id+" 0", "by=nats,"+id+" 0")
			wantSeries(t, m, "agent_host_agents", id+" 5") // with rpcutil, choria_util and discovery
			wantSeries(t, m, "agent_host_pool_workers", "agent=pooltest,"+id+" 1")
			wantSeries(t, m, "agent_host_pool_busy_workers", "agent=pooltest,"+id+" 0")
			wantSeries(t, m, "agent_host_pool_worker_starts_total", "agent=pooltest,"+id+" 3")
			wantSeries(t, m, "agent_host_pool_worker_failures_total", "agent=pooltest,"+id+" 1")
			wantSeries(t, m, "agent_host_pool_worker_retirements_total", "agent=pooltest,"+id+",reason=recycle 1")
			wantSeries(t, m, "agent_host_pool_failed", "agent=pooltest,"+id+" 0")
			if m["process_resident_memory_bytes"] == nil || m["go_goroutines"] == nil {
				t.Error("the process's and Go's metrics are missing")
			}
		})
	}

	// The Choria counters agree with what rpcutil and Stats report.
	s := h.host.Stats()
	if s.Total != 18 || s.Replies != 13 {
		t.Errorf("Stats %+v; want total 18 and 13 replies", s)
	}

	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/choria/", port))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var info host.Info
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		t.Fatalf("/choria/: %v", err)
	}
	if info.Identity != node || info.Build.Version != host.Version || info.Build.Secure || info.System.RSS <= 0 || info.System.Cores <= 0 {
		t.Errorf("/choria/ = %+v", info)
	}

	// The server goes with the host.
	h.stop()
	if resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/choria/prometheus", port)); err == nil {
		resp.Body.Close()
		t.Errorf("the statistics server still answers after the host stopped: %s", resp.Status)
	}
}

// TestStatsPortTaken: with a statistics port already taken the host does
// not start, and says why.
func TestStatsPortTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	cfg := config.Default()
	cfg.Identity = node
	cfg.SecurityProvider = "insecure"
	cfg.StatsPort = port
	h, err := host.New(cfg, host.WithBrokerURL(hosttest.NATS(t).URL()))
	if err != nil {
		t.Fatal(err)
	}
	err = h.Run(t.Context())
	if err == nil || !strings.Contains(err.Error(), "plugin.choria.stats_address, stats_port") || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("Run with a taken stats port = %v, want the listen error", err)
	}
}

// TestStatusFile: the status file appears at start-up in Choria's format,
// follows the requests at each interval, and is only ever replaced whole.
func TestStatusFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "status.json")
	h := start(t, setup{agents: []string{"shagent"}, configure: func(c *config.Config) {
		c.StatusFilePath = path
		c.StatusUpdateInterval = 50 * time.Millisecond
	}})
	read := func() (host.Status, map[string]any) {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("reading the status file: %v", err)
		}
		var st host.Status
		var raw map[string]any
		if err := json.Unmarshal(b, &st); err != nil {
			t.Fatalf("status file %q: %v", b, err)
		}
		if err := json.Unmarshal(b, &raw); err != nil {
			t.Fatal(err)
		}
		return st, raw
	}
	eventually(t, 10*time.Second, "no status file", func() bool { _, err := os.Stat(path); return err == nil })
	st, raw := read()
	// Choria's fields, all of them, as its status checks read them.
	var keys []string
	for k := range raw {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if want := []string{"certificate_expires", "connected_server", "identity", "last_message", "provisioning_mode", "stats", "token_expires", "uptime"}; !slices.Equal(keys, want) {
		t.Errorf("status keys %v, want %v", keys, want)
	}
	if st.Identity != node || st.ConnectedServer != h.nats.URL() || st.LastMessage != 0 || st.Stats == nil || st.Stats.Total != 0 || !st.CertificateExpires.IsZero() {
		t.Errorf("status at start-up %+v", st)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("status file mode %v (%v), want 0644 as Choria's", fi.Mode(), err)
	}

	// Readers racing the writer always see a whole document.
	stopReading := make(chan struct{})
	readErr := make(chan error, 1)
	go func() {
		defer close(readErr)
		for {
			select {
			case <-stopReading:
				return
			default:
			}
			b, err := os.ReadFile(path)
			var doc host.Status
			if err == nil {
				err = json.Unmarshal(b, &doc)
			}
			if err != nil {
				readErr <- fmt.Errorf("a reader saw %q: %w", b, err)
				return
			}
		}
	}()
	sent := time.Now().Unix()
	wantStatus(t, h.call("shagent", "echo", `{"message":"a"}`), protocol.OK, "OK")
	eventually(t, 10*time.Second, "the status file did not follow the request", func() bool {
		st, _ = read()
		return st.Stats.Total == 1 && st.Stats.Valid == 1 && st.Stats.Passed == 1 && st.Stats.Replies == 1
	})
	close(stopReading)
	if err := <-readErr; err != nil {
		t.Error(err)
	}
	if st.LastMessage < sent || st.LastMessage > time.Now().Unix() {
		t.Errorf("last_message %d, want the request's time about %d", st.LastMessage, sent)
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("temporary files left beside the status file: %v", entries)
	}
}

// TestPoolMetricsSurviveReload: an agent's pool counters count on across
// the pools that replace each other when the agent changes on disk.
func TestPoolMetricsSurviveReload(t *testing.T) {
	port := freePort(t)
	exe := poolAgents[0].exe
	h := start(t, setup{pooltest: exe, configure: func(c *config.Config) { c.StatsPort = port }})
	url := fmt.Sprintf("http://127.0.0.1:%d/choria/metrics", port)
	id := "identity=" + node
	before := pid(t, h.call("pooltest", "echo", `{}`))

	target := filepath.Join(h.plugins, "pooltest", "pooltest")
	next := filepath.Join(h.plugins, "pooltest", ".pooltest.new")
	copyFile(t, exe, next)
	if err := os.Rename(next, target); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the pool was not replaced", func() bool {
		return strings.Contains(h.logs.String(), "retiring the agent's pool of workers")
	})
	waitGone(t, before)
	if after := pid(t, h.call("pooltest", "echo", `{}`)); after == before {
		t.Fatalf("still served by %d after the reload", before)
	}
	// The old pool is closed once its worker is gone.
	eventually(t, 10*time.Second, "the old pool's retirement was not counted", func() bool {
		return slices.Equal(metricValues(scrape(t, url), "agent_host_pool_worker_retirements_total"), []string{"agent=pooltest," + id + ",reason=reload 1"})
	})
	m := scrape(t, url)
	wantSeries(t, m, "agent_host_pool_worker_starts_total", "agent=pooltest,"+id+" 2")
	wantSeries(t, m, "agent_host_pool_worker_failures_total", "agent=pooltest,"+id+" 0")
	wantSeries(t, m, "agent_host_pool_workers", "agent=pooltest,"+id+" 1")
	wantSeries(t, m, "agent_host_requests_total", "action=echo,agent=pooltest,"+id+",statuscode=0 2")
}
