package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/agent-host/agent-host/host/hosttest"
	"github.com/agent-host/agent-host/protocol"
	"github.com/agent-host/agent-host/protocol/client"
)

// TestFleetOnNATSCluster runs three agent-host processes against a
// cluster of three NATS servers, every host given all three in
// plugin.choria.middleware_hosts, and a fourth on a leafnode server of
// the cluster, as at a remote site; every host is in two collectives.
// Through each cluster server, broadcast discovery finds every host and
// rpcutil ping and an agent action reach every host. Then the server most
// hosts are connected to is shut down: its hosts reconnect to the
// survivors, and through each survivor every host is again discovered and
// answers, in both collectives.
func TestFleetOnNATSCluster(t *testing.T) {
	cluster := hosttest.NATSCluster(t, 3)
	urls := cluster.URLs()
	hosts := []string{"host-0.example.net", "host-1.example.net", "host-2.example.net"}
	runs := map[string]*running{}
	for _, id := range hosts {
		runs[id], _ = startRun(t, "run", "--config", fleetConfig(t, id, urls), "--plugins", fleetPlugins(t))
	}
	// The server most hosts are on, so that losing it matters; the
	// leafnode joins through it too.
	victim, onVictim := 0, []string(nil)
	for _, i := range cluster.Running() {
		if on := hostsOn(t, cluster.Server(i)); len(on) > len(onVictim) {
			victim, onVictim = i, on
		}
	}
	if len(onVictim) == 0 {
		t.Fatalf("no NATS server has an agent-host client")
	}
	leaf, leafURL := cluster.AddLeaf(t, victim)
	site := "site-0.example.net"
	runs[site], _ = startRun(t, "run", "--config", fleetConfig(t, site, []string{leafURL}), "--plugins", fleetPlugins(t))
	hosts = append(hosts, site)

	for _, i := range cluster.Running() {
		reachEveryHost(t, urls[i], "mcollective", hosts)
	}

	start := time.Now()
	cluster.Shutdown(victim)
	cluster.WaitForRoutes(t)

	// Every host is back on a survivor, and the leafnode too, as the
	// brokers see it.
	deadline := time.Now().Add(15 * time.Second)
	for {
		back, leafBack := hostsOn(t, leaf), false
		for _, i := range cluster.Running() {
			back = append(back, hostsOn(t, cluster.Server(i))...)
			leafBack = leafBack || cluster.Server(i).NumLeafNodes() > 0
		}
		slices.Sort(back)
		if slices.Equal(back, hosts) && leafBack {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after nats-%d stopped, the survivors have hosts %v (want %v) and the leafnode: %v", victim, back, hosts, leafBack)
		}
		time.Sleep(20 * time.Millisecond)
	}
	reconnected := time.Since(start)
	for _, id := range onVictim {
		if logs := runs[id].logs.String(); !strings.Contains(logs, "reconnected to broker") {
			t.Errorf("%s was on nats-%d but did not log its reconnection:\n%s", id, victim, logs)
		}
	}
	t.Logf("nats-%d stopped with %d of 3 hosts and the leafnode on it; every host back on the survivors after %s", victim, len(onVictim), reconnected.Round(time.Millisecond))

	for _, i := range cluster.Running() {
		for _, collective := range []string{"mcollective", "europe"} {
			reachEveryHost(t, urls[i], collective, hosts)
		}
	}
	t.Logf("every host answering through every survivor %s after nats-%d stopped", time.Since(start).Round(time.Millisecond), victim)
	for _, id := range hosts {
		runs[id].stop(t)
	}
}

// reachEveryHost connects a client to url only, discovers by broadcast in
// collective until every host answered, then sends rpcutil ping and
// shagent echo to each and wants an OK reply from all of them.
func reachEveryHost(t *testing.T, url, collective string, hosts []string) {
	t.Helper()
	nc, err := nats.Connect(url, nats.DontRandomize(), nats.NoReconnect())
	if err != nil {
		t.Fatalf("connecting to %s: %v", url, err)
	}
	defer nc.Close()
	if got := nc.ConnectedUrl(); got != url {
		t.Fatalf("client connected to %s, want %s", got, url)
	}
	cl := client.New(nc, client.Config{Identity: "fleet.mcollective", Collective: collective})
	ctx := t.Context()

	// Interest travels between servers asynchronously: ask again until
	// every host answered, within a bound.
	var found []string
	rounds := 0
	start := time.Now()
	for deadline := time.Now().Add(10 * time.Second); ; {
		rounds++
		found, err = cl.Discover(ctx, protocol.NewFilter(), 500*time.Millisecond)
		if err != nil {
			t.Fatalf("discovery through %s in %s: %v", url, collective, err)
		}
		if slices.Equal(found, hosts) || time.Now().After(deadline) {
			break
		}
	}
	if !slices.Equal(found, hosts) {
		t.Fatalf("discovery through %s in %s found %v, want %v", url, collective, found, hosts)
	}
	t.Logf("through %s in %s: discovery found %d hosts (round %d, %s)", url, collective, len(found), rounds, time.Since(start).Round(time.Millisecond))

	for _, call := range []struct{ agent, action, data string }{
		{"rpcutil", "ping", `{}`},
		{"shagent", "echo", `{"message":"fleet"}`},
	} {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		res, err := cl.Request(rctx, found, call.agent, call.action, json.RawMessage(call.data), protocol.NewFilter())
		cancel()
		if err != nil {
			t.Fatalf("%s %s through %s: %v", call.agent, call.action, url, err)
		}
		if len(res.Missing) > 0 {
			t.Fatalf("%s %s through %s: no reply from %v", call.agent, call.action, url, res.Missing)
		}
		for _, r := range res.Replies {
			if r.Err != nil || r.Body.Statuscode != protocol.OK {
				t.Errorf("%s %s through %s: %s answered %d %q (%v)", call.agent, call.action, url, r.Sender, r.Body.Statuscode, r.Body.Statusmsg, r.Err)
			}
		}
		if len(res.Replies) != len(hosts) {
			t.Errorf("%s %s through %s: %d replies, want %d", call.agent, call.action, url, len(res.Replies), len(hosts))
		}
	}
}

// hostsOn lists the agent-host identities connected to srv, sorted; a
// host names its connection "agent-host <identity>".
func hostsOn(t *testing.T, srv *server.Server) []string {
	t.Helper()
	cz, err := srv.Connz(&server.ConnzOptions{})
	if err != nil {
		t.Fatalf("listing the connections of %s: %v", srv.Name(), err)
	}
	var out []string
	for _, c := range cz.Conns {
		if id, ok := strings.CutPrefix(c.Name, "agent-host "); ok {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// fleetConfig is one host of the fleet: the brokers as middleware hosts,
// two collectives, insecure, authorization off since the test is about
// reaching the hosts.
func fleetConfig(t *testing.T, identity string, urls []string) string {
	t.Helper()
	conf := fmt.Sprintf(`identity = %s
collectives = mcollective,europe
plugin.choria.middleware_hosts = %s
plugin.security.provider = insecure
rpcauthorization = false
loglevel = info
`, identity, strings.Join(urls, ","))
	path := filepath.Join(t.TempDir(), "server.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// fleetPlugins is a plugins directory of the host's own with shagent.
func fleetPlugins(t *testing.T) string {
	t.Helper()
	plugins := t.TempDir()
	src := filepath.Join(repoRoot, "testdata", "e2e", "agents", "shagent")
	if err := os.MkdirAll(filepath.Join(plugins, "shagent"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"shagent", "shagent.json"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(plugins, "shagent", f), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return plugins
}
