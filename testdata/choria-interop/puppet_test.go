package interop

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/choria-io/go-choria/choria"
	rpc "github.com/choria-io/go-choria/providers/agent/mcorpc/client"
)

const puppetNode = "puppet.example.net"

// puppetSSLDir lays out certname's certificate and key and the CA the way
// `puppet agent` leaves them in its SSL directory.
func puppetSSLDir(t *testing.T, dir, certname string) {
	t.Helper()
	cert, key, err := env.ca.issue(certname, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for src, dst := range map[string]string{
		cert:          filepath.Join(dir, "certs", certname+".pem"),
		key:           filepath.Join(dir, "private_keys", certname+".pem"),
		env.ca.caFile: filepath.Join(dir, "certs", "ca.pem"),
	} {
		if err := copyFile(src, dst, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPuppetSecurity: a Choria node's configuration that names no security
// provider, so Choria's default puppet, with its SSL directory in Puppet's
// layout. agent-host connects to the TLS broker with the node's Puppet
// certificate and answers the real Choria client, using the puppet
// provider too and Puppet's files of its own.
func TestPuppetSecurity(t *testing.T) {
	dir := filepath.Join(t.TempDir(), puppetNode)
	nodeSSL := filepath.Join(dir, "ssl")
	puppetSSLDir(t, nodeSSL, puppetNode)
	cfg := filepath.Join(dir, "server.conf")
	err := writeConfig(cfg,
		"identity", puppetNode,
		"collectives", "mcollective",
		"plugin.choria.middleware_hosts", env.natsURL,
		"plugin.choria.ssldir", nodeSSL,
		"rpcauthorization", "0",
		"loglevel", "debug",
		"logfile", filepath.Join(dir, "agent-host.log"),
	)
	if err != nil {
		t.Fatal(err)
	}
	plugins := t.TempDir()
	if err := installAgent(plugins, "echo"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "output.txt"))
			t.Logf("output:\n%s", b)
		}
	})
	// The node, like a Choria server, takes its certname from
	// MCOLLECTIVE_CERTNAME when set, and TestMain set it for the client.
	t.Setenv("MCOLLECTIVE_CERTNAME", "")
	startExtraNode(t, puppetNode, "echo", cfg, plugins)
	os.Setenv("MCOLLECTIVE_CERTNAME", clientName)

	// The client's certname is MCOLLECTIVE_CERTNAME.
	clientSSL := filepath.Join(t.TempDir(), "ssl")
	puppetSSLDir(t, clientSSL, clientName)
	ccfg := filepath.Join(t.TempDir(), "client.conf")
	err = writeConfig(ccfg,
		"identity", clientName,
		"collectives", "mcollective",
		"plugin.security.provider", "puppet",
		"plugin.choria.ssldir", clientSSL,
		"plugin.choria.middleware_hosts", env.natsURL,
		"plugin.choria.use_srv", "false",
		"loglevel", "debug",
		"logfile", filepath.Join(filepath.Dir(ccfg), "client.log"),
	)
	if err != nil {
		t.Fatal(err)
	}
	fw, err := choria.New(ccfg)
	if err != nil {
		t.Fatalf("loading the Choria client configuration: %v", err)
	}
	if got := fw.Configuration().Choria.SecurityProvider; got != "puppet" {
		t.Fatalf("the client's security provider is %q, want puppet", got)
	}
	rep := do(t, fw, "rpcutil", "ping", struct{}{}, rpc.Targets([]string{puppetNode})).bySender(t, puppetNode)
	checkOK(t, rep)

	b, err := os.ReadFile(filepath.Join(dir, "agent-host.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"puppet security: using Puppet's SSL directory", filepath.Join(nodeSSL, "certs", puppetNode+".pem")} {
		if !strings.Contains(string(b), want) {
			t.Errorf("agent-host's log does not say %q", want)
		}
	}
}
