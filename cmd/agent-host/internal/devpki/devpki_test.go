package devpki_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agent-host/agent-host/cmd/agent-host/internal/devpki"
	"github.com/agent-host/agent-host/protocol/security"
	v1 "github.com/agent-host/agent-host/protocol/v1"
)

func ensure(t *testing.T, cfg devpki.Config) *devpki.PKI {
	t.Helper()
	p, err := devpki.Ensure(cfg)
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	return p
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("%s: no PEM block", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestChains: every certificate chains to the CA for server and client
// authentication and carries the names Choria and TLS check.
func TestChains(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	p := ensure(t, devpki.Config{Dir: dir, Node: "dev1.example.net", Client: "alice.mcollective"})
	roots := x509.NewCertPool()
	roots.AddCert(readCert(t, p.CA))
	for _, tc := range []struct {
		pair devpki.Pair
		host string
	}{
		{p.Broker, "localhost"},
		{p.Broker, "127.0.0.1"},
		{p.Broker, "::1"},
		{p.Node, "dev1.example.net"},
		{p.Client, "alice.mcollective"},
	} {
		c := readCert(t, tc.pair.Cert)
		for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
			if _, err := c.Verify(x509.VerifyOptions{Roots: roots, DNSName: tc.host, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
				t.Errorf("%s for %s, usage %v: %v", tc.pair.Cert, tc.host, usage, err)
			}
		}
		if _, err := tls.LoadX509KeyPair(tc.pair.Cert, tc.pair.Key); err != nil {
			t.Errorf("%s and %s are not a TLS key pair: %v", tc.pair.Cert, tc.pair.Key, err)
		}
	}
	if got := readCert(t, p.Client.Cert).Subject.CommonName; got != "alice.mcollective" {
		t.Errorf("client certificate CN %q", got)
	}
	if got, want := filepath.Base(p.Node.Cert), "dev1.example.net.pem"; got != want {
		t.Errorf("node certificate file %s, want %s", got, want)
	}
}

// TestFileVerifierAccepts: a request signed with the client's key, as
// Choria's client signs it, passes protocol/security's file verifier with
// Choria's default allow-list; one from another CA's identical client
// does not.
func TestFileVerifierAccepts(t *testing.T) {
	p := ensure(t, devpki.Config{Dir: t.TempDir(), Node: "dev1.example.net", Client: "alice.mcollective"})
	other := ensure(t, devpki.Config{Dir: t.TempDir(), Node: "dev1.example.net", Client: "alice.mcollective"})
	v, err := security.NewFileVerifier(security.FileConfig{CAFile: p.CA})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		client  devpki.Pair
		wantErr bool
	}{
		{"own CA", p.Client, false},
		{"other CA", other.Client, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			signer, certPEM, err := security.LoadSigner(tc.client.Cert, tc.client.Key)
			if err != nil {
				t.Fatal(err)
			}
			id, err := v1.NewRequestID()
			if err != nil {
				t.Fatal(err)
			}
			req := v1.NewRequest(v1.RequestEnvelope{
				RequestID: id, SenderID: "alice.mcollective", CallerID: "choria=alice.mcollective", Collective: "mcollective",
				Agent: "rpcutil", TTL: 60, Time: time.Now().Unix(),
			}, []byte(`{"agent":"rpcutil","action":"ping","data":{}}`))
			sr, err := req.Seal(signer, certPEM)
			if err != nil {
				t.Fatal(err)
			}
			decoded, err := sr.Request()
			if err != nil {
				t.Fatal(err)
			}
			err = v.Verify(sr, decoded)
			if tc.wantErr != (err != nil) {
				t.Errorf("Verify: %v, want error %v", err, tc.wantErr)
			}
		})
	}
}

// TestPermissions: the directory and private keys are the owner's only.
func TestPermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	p := ensure(t, devpki.Config{Dir: dir, Node: "n", Client: "c.mcollective"})
	want := map[string]os.FileMode{dir: 0o700, p.CA: 0o644, p.CAKey: 0o600}
	for _, pair := range []devpki.Pair{p.Broker, p.Node, p.Client} {
		want[pair.Cert], want[pair.Key] = 0o644, 0o600
	}
	for path, mode := range want {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode().Perm(), mode)
		}
	}
	// A key that lost its mode, the CA's too, and a directory opened to
	// others are tightened again on reuse.
	for path, mode := range map[string]os.FileMode{p.Client.Key: 0o644, p.CAKey: 0o644, dir: 0o777} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
	}
	ensure(t, devpki.Config{Dir: dir, Node: "n", Client: "c.mcollective"})
	for path, mode := range map[string]os.FileMode{p.Client.Key: 0o600, p.CAKey: 0o600, dir: 0o700} {
		if fi, _ := os.Stat(path); fi.Mode().Perm() != mode {
			t.Errorf("reused %s: mode %v, want %v", path, fi.Mode().Perm(), mode)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 8 {
		t.Errorf("%d files in %s, want 8 and no temporary ones: %v", len(entries), dir, entries)
	}
}

// TestIdempotent: a second run reuses every file; a changed node name,
// a broken key and expiry each replace only what they must.
func TestIdempotent(t *testing.T) {
	dir := t.TempDir()
	cfg := devpki.Config{Dir: dir, Node: "n1", Client: "c.mcollective"}
	first := ensure(t, cfg)
	if len(first.Created) != 8 {
		t.Fatalf("first run created %v, want 8 files", first.Created)
	}
	snapshot := func() map[string][]byte {
		m := map[string][]byte{}
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
			m[e.Name()] = b
		}
		return m
	}
	before := snapshot()
	if again := ensure(t, cfg); len(again.Created) != 0 {
		t.Errorf("second run created %v, want nothing", again.Created)
	}
	for name, b := range snapshot() {
		if !bytes.Equal(before[name], b) {
			t.Errorf("second run changed %s", name)
		}
	}

	t.Run("node renamed", func(t *testing.T) {
		cfg := cfg
		cfg.Node = "n2"
		p := ensure(t, cfg)
		if want := []string{filepath.Join(dir, "n2.key"), filepath.Join(dir, "n2.pem")}; !slices.Equal(p.Created, want) {
			t.Errorf("created %v, want %v", p.Created, want)
		}
	})
	t.Run("key of another certificate", func(t *testing.T) {
		b, err := os.ReadFile(first.Node.Key)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(first.Client.Key, b, 0o600); err != nil {
			t.Fatal(err)
		}
		p := ensure(t, cfg)
		if want := []string{first.Client.Key, first.Client.Cert}; !slices.Equal(p.Created, want) {
			t.Errorf("created %v, want %v", p.Created, want)
		}
		if _, _, err := security.LoadSigner(p.Client.Cert, p.Client.Key); err != nil {
			t.Errorf("the reissued client pair: %v", err)
		}
	})
	t.Run("certificates expire", func(t *testing.T) {
		cfg := cfg
		// Within a day of the leaves' expiry, but not of the CA's.
		cfg.Now = func() time.Time { return time.Now().Add(devpki.DefaultCertValidity - time.Hour) }
		p := ensure(t, cfg)
		if len(p.Created) != 6 || slices.Contains(p.Created, p.CA) {
			t.Errorf("created %v, want the three pairs and not the CA", p.Created)
		}
		if c := readCert(t, p.Node.Cert); !c.NotAfter.After(cfg.Now().Add(devpki.RenewBefore)) {
			t.Errorf("reissued node certificate expires %v", c.NotAfter)
		}
	})
	t.Run("CA expires", func(t *testing.T) {
		cfg := cfg
		cfg.Now = func() time.Time { return time.Now().Add(devpki.DefaultCAValidity) }
		p := ensure(t, cfg)
		if len(p.Created) != 8 {
			t.Errorf("created %v, want everything", p.Created)
		}
		roots := x509.NewCertPool()
		roots.AddCert(readCert(t, p.CA))
		if _, err := readCert(t, p.Client.Cert).Verify(x509.VerifyOptions{Roots: roots, CurrentTime: cfg.Now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("the client certificate does not chain to the new CA: %v", err)
		}
	})
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []devpki.Config{
		{Dir: t.TempDir(), Node: "n"},
		{Dir: t.TempDir(), Node: "broker", Client: "c.mcollective"},
		{Dir: t.TempDir(), Node: "n", Client: "n"},
		{Dir: t.TempDir(), Node: "../n", Client: "c.mcollective"},
	} {
		if _, err := devpki.Ensure(cfg); !errors.Is(err, devpki.ErrConfig) {
			t.Errorf("Ensure(%+v): %v, want ErrConfig", cfg, err)
		}
	}
}

// TestDoesNotTrustWhatOthersOwn: a directory that another user left is
// refused, and a CA whose key is another user's is replaced: either could
// issue the clients the node would serve.
func TestDoesNotTrustWhatOthersOwn(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("giving files to another user needs root")
	}
	const nobody = 65534
	cfg := func(dir string) devpki.Config { return devpki.Config{Dir: dir, Node: "n", Client: "c.mcollective"} }

	dir := filepath.Join(t.TempDir(), "dev")
	p := ensure(t, cfg(dir))
	before, err := os.ReadFile(p.CA)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p.CAKey, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	ensure(t, cfg(dir))
	if after, _ := os.ReadFile(p.CA); bytes.Equal(before, after) {
		t.Error("a CA whose key belongs to another user was reused")
	}
	if err := os.Chown(dir, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	if _, err := devpki.Ensure(cfg(dir)); err == nil || !strings.Contains(err.Error(), "belongs to user 65534") {
		t.Errorf("Ensure in another user's directory: %v, want it refused", err)
	}

	// Nor a symbolic link to a directory, whoever's it is.
	link := filepath.Join(t.TempDir(), "dev")
	if err := os.Symlink(t.TempDir(), link); err != nil {
		t.Fatal(err)
	}
	if _, err := devpki.Ensure(cfg(link)); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("Ensure in a symbolic link: %v, want it refused", err)
	}
}
