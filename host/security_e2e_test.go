package host_test

import (
	"crypto"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agent-host/agent-host/host"
	"github.com/agent-host/agent-host/host/config"
	"github.com/agent-host/agent-host/host/hosttest"
	"github.com/agent-host/agent-host/protocol"
	"github.com/agent-host/agent-host/protocol/security"
	v1 "github.com/agent-host/agent-host/protocol/v1"
)

// caller is a certificate and key a request can be signed with.
type caller struct {
	signer crypto.Signer
	cert   []byte
}

func newCaller(t *testing.T, pki *hosttest.PKI, name string, opts ...hosttest.CertOption) caller {
	t.Helper()
	certFile, keyFile := pki.Issue(t, name, opts...)
	signer, cert, err := security.LoadSigner(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return caller{signer, cert}
}

// signedEcho builds a signed shagent echo request from callerID.
func signedEcho(t *testing.T, c caller, callerID string, sent time.Time) (*v1.SecureRequest, string) {
	t.Helper()
	id, err := v1.NewRequestID()
	if err != nil {
		t.Fatal(err)
	}
	f := protocol.NewFilter()
	f.Agent = []string{"shagent"}
	req := v1.NewRequest(v1.RequestEnvelope{
		RequestID: id, SenderID: strings.TrimPrefix(callerID, "choria="), CallerID: callerID, Collective: "mcollective",
		Agent: "shagent", TTL: 60, Time: sent.Unix(), Filter: f,
	}, []byte(`{"agent":"shagent","action":"echo","data":{"message":"hello"}}`))
	sreq, err := req.Seal(c.signer, c.cert)
	if err != nil {
		t.Fatal(err)
	}
	return sreq, id
}

func TestSecurity(t *testing.T) {
	pki := hosttest.NewPKI(t)
	nodeCert, nodeKey := pki.Issue(t, node)
	h := start(t, setup{
		agents:   []string{"shagent"},
		natsOpts: []hosttest.NATSOption{hosttest.WithTLS(pki)},
		configure: func(c *config.Config) {
			c.SecurityProvider = "file"
			c.FileCertificate, c.FileKey, c.FileCA = nodeCert, nodeKey, pki.CAFile
		},
	})

	rip := newCaller(t, pki, "rip.mcollective")
	bob := newCaller(t, pki, "bob.mcollective")
	admin := newCaller(t, pki, "admin.privileged.mcollective")
	stranger := newCaller(t, pki, "rip.example.com")
	foreign := newCaller(t, hosttest.NewPKI(t), "rip.mcollective")
	now := time.Now()

	cases := []struct {
		name    string
		request func() (*v1.SecureRequest, string)
		ok      bool
	}{
		{"valid request", func() (*v1.SecureRequest, string) { return signedEcho(t, rip, "choria=rip.mcollective", now) }, true},
		{"privileged caller with another caller id", func() (*v1.SecureRequest, string) {
			return signedEcho(t, admin, "choria=someone.mcollective", now)
		}, true},
		{"tampered message", func() (*v1.SecureRequest, string) {
			s, id := signedEcho(t, rip, "choria=rip.mcollective", now)
			s.Message = strings.Replace(s.Message, "hello", "hellx", 1)
			return s, id
		}, false},
		{"signature by another key", func() (*v1.SecureRequest, string) {
			s, id := signedEcho(t, caller{bob.signer, rip.cert}, "choria=rip.mcollective", now)
			return s, id
		}, false},
		{"certificate from another CA", func() (*v1.SecureRequest, string) { return signedEcho(t, foreign, "choria=rip.mcollective", now) }, false},
		{"certname does not match the caller id", func() (*v1.SecureRequest, string) {
			return signedEcho(t, rip, "choria=bob.mcollective", now)
		}, false},
		{"certname outside the allow-list", func() (*v1.SecureRequest, string) {
			return signedEcho(t, stranger, "choria=rip.example.com", now)
		}, false},
		{"unsigned (insecure markers)", func() (*v1.SecureRequest, string) {
			s, id := signedEcho(t, caller{}, "choria=rip.mcollective", now)
			return s, id
		}, false},
		{"expired TTL", func() (*v1.SecureRequest, string) {
			return signedEcho(t, rip, "choria=rip.mcollective", now.Add(-2*time.Minute))
		}, false},
		{"from the future", func() (*v1.SecureRequest, string) {
			return signedEcho(t, rip, "choria=rip.mcollective", now.Add(2*time.Minute))
		}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.Remove(h.plugins + "/shagent/runs"); err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
			before := h.host.Stats()
			sreq, id := tc.request()
			if !tc.ok {
				h.publish(t, sreq, id, false)
				if runs := h.runs("shagent"); runs != "" {
					t.Errorf("a rejected request was executed: runs = %q", runs)
				}
				after := h.host.Stats()
				if after.Unvalidated+after.TTLExpired <= before.Unvalidated+before.TTLExpired {
					t.Errorf("the rejection was not counted: before %+v after %+v", before, after)
				}
				return
			}
			r := h.publish(t, sreq, id, true)
			wantStatus(t, r, protocol.OK, "OK")
			if runs := h.runs("shagent"); !strings.Contains(runs, "echo") {
				t.Errorf("accepted request did not run the agent: runs = %q", runs)
			}
		})
	}
	if !strings.Contains(h.logs.String(), "request failed security verification; not executed") {
		t.Error("rejections are not logged")
	}
}

func TestInsecureModeIsNamedAndLoud(t *testing.T) {
	h := start(t, setup{})
	if !strings.Contains(h.logs.String(), "SECURITY DISABLED") {
		t.Error("insecure mode started without a warning")
	}
	if config.Default().SecurityProvider != "puppet" {
		t.Errorf("default security provider is %q, want Choria's, puppet", config.Default().SecurityProvider)
	}
}

// TestPuppetSecurity: a Choria node's settings, plugin.security.provider =
// puppet and an SSL directory in Puppet's layout, are enough for the host
// to connect to a TLS broker with the node's certificate and to verify
// callers of Puppet's CA.
func TestPuppetSecurity(t *testing.T) {
	pki := hosttest.NewPKI(t)
	ssldir := pki.PuppetSSLDir(t, node)
	h := start(t, setup{
		agents:   []string{"shagent"},
		natsOpts: []hosttest.NATSOption{hosttest.WithTLS(pki)},
		configure: func(c *config.Config) {
			c.SecurityProvider = "puppet"
			c.SSLDir = ssldir
		},
	})
	rip := newCaller(t, pki, "rip.mcollective")
	sreq, id := signedEcho(t, rip, "choria=rip.mcollective", time.Now())
	wantStatus(t, h.publish(t, sreq, id, true), protocol.OK, "OK")

	foreign := newCaller(t, hosttest.NewPKI(t), "rip.mcollective")
	sreq, id = signedEcho(t, foreign, "choria=rip.mcollective", time.Now())
	h.publish(t, sreq, id, false)
	if !strings.Contains(h.logs.String(), "certs/ca.pem") {
		t.Errorf("the start-up log does not say which Puppet files are used:\n%s", h.logs.String())
	}
	// Choria's status checks read when the node's certificate expires.
	if exp := h.host.Status().CertificateExpires; time.Until(exp) < time.Hour {
		t.Errorf("status certificate_expires %v, want the node certificate's expiry", exp)
	}
}

func TestPuppetSecurityMissingCertificate(t *testing.T) {
	pki := hosttest.NewPKI(t)
	cfg := config.Default()
	cfg.Identity = "node2.example.net" // no certificate for it in the directory
	cfg.SecurityProvider = "puppet"
	cfg.SSLDir = pki.PuppetSSLDir(t, node)
	t.Setenv("MCOLLECTIVE_CERTNAME", "")
	_, err := host.New(cfg)
	if !errors.Is(err, security.ErrMissingFile) {
		t.Fatalf("host.New: err = %v, want security.ErrMissingFile", err)
	}
	for _, s := range []string{filepath.Join(cfg.SSLDir, "certs", "node2.example.net.pem"), "plugin.choria.ssldir", "identity"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not name %q", err, s)
		}
	}
	// MCOLLECTIVE_CERTNAME picks the certificate, as in Choria.
	t.Setenv("MCOLLECTIVE_CERTNAME", node)
	if _, err := host.New(cfg); err != nil {
		t.Errorf("host.New with MCOLLECTIVE_CERTNAME = %s: %v", node, err)
	}
}

func TestMissingCAStopsStartup(t *testing.T) {
	cfg := config.Default()
	cfg.Identity = node
	cfg.SecurityProvider = "file"
	cfg.FileCA = "/nonexistent/ca.pem"
	if _, err := host.New(cfg); err == nil || !strings.Contains(err.Error(), "ca") {
		t.Errorf("host.New with a missing CA: err = %v, want an error naming the CA", err)
	}
}
