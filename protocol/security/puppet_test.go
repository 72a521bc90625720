package security

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agent-host/agent-host/host/hosttest"
)

func TestPuppetFiles(t *testing.T) {
	got := PuppetConfig{SSLDir: "/etc/puppetlabs/puppet/ssl", Certname: "node1.example.net"}.Files()
	want := Files{
		Certificate: "/etc/puppetlabs/puppet/ssl/certs/node1.example.net.pem",
		Key:         "/etc/puppetlabs/puppet/ssl/private_keys/node1.example.net.pem",
		CA:          "/etc/puppetlabs/puppet/ssl/certs/ca.pem",
	}
	if got != want {
		t.Errorf("Files() = %+v, want %+v", got, want)
	}
}

func TestNewPuppetVerifier(t *testing.T) {
	pki := hosttest.NewPKI(t)
	dir := pki.PuppetSSLDir(t, "node1.example.net")

	v, files, err := NewPuppetVerifier(PuppetConfig{SSLDir: dir, Certname: "node1.example.net"}, FileConfig{CAFile: "/ignored"})
	if err != nil {
		t.Fatalf("NewPuppetVerifier: %v", err)
	}
	if files.CA != filepath.Join(dir, "certs", "ca.pem") {
		t.Errorf("CA = %s", files.CA)
	}
	// The file provider's verifier over Puppet's CA: a caller of this CA
	// is trusted, one of another CA is not.
	now := time.Now()
	sr, req := signed(t, issue(t, pki, "rip.mcollective"), "choria=rip.mcollective", now, nil)
	if err := v.Verify(sr, req); err != nil {
		t.Errorf("request from the Puppet CA's rip.mcollective: %v", err)
	}
	sr, req = signed(t, issue(t, hosttest.NewPKI(t), "rip.mcollective"), "choria=rip.mcollective", now, nil)
	checkErr(t, v.Verify(sr, req), ErrCertificate)
	// The node's certificate and key are a TLS pair for the broker.
	if _, err := TLSConfig(files.Certificate, files.Key, files.CA); err != nil {
		t.Errorf("TLSConfig over Puppet's files: %v", err)
	}
}

func TestPuppetMissingFiles(t *testing.T) {
	pki := hosttest.NewPKI(t)
	cases := []struct {
		name     string
		remove   string // relative to the SSL directory
		certname string
		want     string
	}{
		{"certificate", "certs/node1.example.net.pem", "node1.example.net", "the node's certificate"},
		{"key", "private_keys/node1.example.net.pem", "node1.example.net", "the node's private key"},
		{"ca", "certs/ca.pem", "node1.example.net", "the CA"},
		{"another certname", "", "node2.example.net", "certs/node2.example.net.pem"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := pki.PuppetSSLDir(t, "node1.example.net")
			if tc.remove != "" {
				if err := os.Remove(filepath.Join(dir, tc.remove)); err != nil {
					t.Fatal(err)
				}
			}
			_, _, err := NewPuppetVerifier(PuppetConfig{SSLDir: dir, Certname: tc.certname}, FileConfig{})
			if !errors.Is(err, ErrMissingFile) || !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("err = %v, want ErrMissingFile and fs.ErrNotExist", err)
			}
			for _, s := range []string{tc.want, "plugin.choria.ssldir", dir, tc.certname} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not name %q", err, s)
				}
			}
		})
	}

	if _, _, err := NewPuppetVerifier(PuppetConfig{Certname: "n"}, FileConfig{}); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "plugin.choria.ssldir") {
		t.Errorf("no SSL directory: err = %v, want ErrConfig naming plugin.choria.ssldir", err)
	}
	if _, _, err := NewPuppetVerifier(PuppetConfig{SSLDir: "/x"}, FileConfig{}); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "identity") {
		t.Errorf("no certname: err = %v, want ErrConfig naming identity", err)
	}
}

func TestPuppetBadCA(t *testing.T) {
	dir := hosttest.NewPKI(t).PuppetSSLDir(t, "node1.example.net")
	if err := os.WriteFile(filepath.Join(dir, "certs", "ca.pem"), []byte("not PEM"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err := NewPuppetVerifier(PuppetConfig{SSLDir: dir, Certname: "node1.example.net"}, FileConfig{})
	if err == nil || !strings.Contains(err.Error(), "the CA in plugin.choria.ssldir") || strings.Contains(err.Error(), "plugin.security.file.ca") {
		t.Errorf("err = %v, want one naming Puppet's CA, not the file provider's key", err)
	}
}

// TestPuppetCertnameStaysInTheSSLDir: a certname from the environment
// cannot name files outside Puppet's SSL directory.
func TestPuppetCertnameStaysInTheSSLDir(t *testing.T) {
	pki := hosttest.NewPKI(t)
	dir := pki.PuppetSSLDir(t, "node1.example.net")
	for _, name := range []string{"../../../../tmp/evil", "..", ".", "certs/node1.example.net", `a\b`, "a\x00b"} {
		err := PuppetConfig{SSLDir: dir, Certname: name}.Check()
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "MCOLLECTIVE_CERTNAME") {
			t.Errorf("certname %q: %v, want ErrConfig naming MCOLLECTIVE_CERTNAME", name, err)
		}
	}
	if err := (PuppetConfig{SSLDir: dir, Certname: "node1.example.net"}).Check(); err != nil {
		t.Errorf("a plain certname: %v", err)
	}
}
