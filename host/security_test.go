package host

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agent-host/agent-host/host/config"
)

// fakePuppet puts an executable named puppet, running script, first on
// PATH; the AIO path is not present on the test machines.
func fakePuppet(t *testing.T, script string) {
	t.Helper()
	if _, err := os.Stat(puppetAIOBin); err == nil {
		t.Fatalf("%s exists here, so the fake puppet on PATH would not be asked", puppetAIOBin)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "puppet"), []byte("#!/bin/sh\n"+script+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
}

func TestPuppetSSLDir(t *testing.T) {
	t.Run("user", func(t *testing.T) {
		got, err := puppetSSLDir(t.Context(), false, "/home/ada")
		if err != nil || got != "/home/ada/.puppetlabs/etc/puppet/ssl" {
			t.Errorf("got %q, %v; want Puppet's per-user directory", got, err)
		}
		if _, err := puppetSSLDir(t.Context(), false, ""); err == nil || !strings.Contains(err.Error(), "plugin.choria.ssldir") {
			t.Errorf("without HOME: err = %v, want advice to set plugin.choria.ssldir", err)
		}
	})
	t.Run("root asks puppet as Choria does", func(t *testing.T) {
		fakePuppet(t, `[ "$*" = "apply --environment production --configprint ssldir" ] || exit 3; echo /var/lib/puppet/ssl`)
		got, err := puppetSSLDir(t.Context(), true, "/root")
		if err != nil || got != "/var/lib/puppet/ssl" {
			t.Errorf("got %q, %v; want what puppet printed", got, err)
		}
	})
	t.Run("root without puppet", func(t *testing.T) {
		t.Setenv("PATH", t.TempDir())
		got, err := puppetSSLDir(t.Context(), true, "/root")
		if err != nil || got != "/etc/puppetlabs/puppet/ssl" {
			t.Errorf("got %q, %v; want Puppet's default for root", got, err)
		}
	})
	t.Run("puppet fails", func(t *testing.T) {
		fakePuppet(t, `echo "Error: no such environment" >&2; exit 1`)
		_, err := puppetSSLDir(t.Context(), true, "/root")
		if err == nil || !strings.Contains(err.Error(), "no such environment") || !strings.Contains(err.Error(), "plugin.choria.ssldir") {
			t.Errorf("err = %v, want puppet's message and advice to set plugin.choria.ssldir", err)
		}
	})
	t.Run("puppet prints nonsense", func(t *testing.T) {
		fakePuppet(t, `echo relative/ssl`)
		if _, err := puppetSSLDir(t.Context(), true, "/root"); err == nil || !strings.Contains(err.Error(), "not an absolute directory") {
			t.Errorf("err = %v, want a refusal of a relative directory", err)
		}
	})
	t.Run("puppet hangs", func(t *testing.T) {
		fakePuppet(t, `exec sleep 60`)
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := puppetSSLDir(ctx, true, "/root")
		if err == nil || time.Since(start) > 10*time.Second {
			t.Errorf("err = %v after %s, want a failure soon after the deadline", err, time.Since(start))
		}
	})
}

func TestPuppetSecurityCertname(t *testing.T) {
	cfg := config.Default()
	cfg.Identity = "node1.example.net"
	cfg.SSLDir = "/ssl"
	t.Setenv("MCOLLECTIVE_CERTNAME", "")
	pc, err := PuppetSecurity(t.Context(), cfg)
	if err != nil || pc.Certname != "node1.example.net" || pc.SSLDir != "/ssl" {
		t.Errorf("got %+v, %v; want the identity as certname and plugin.choria.ssldir", pc, err)
	}
	t.Setenv("MCOLLECTIVE_CERTNAME", "other.example.net")
	if pc, _ := PuppetSecurity(t.Context(), cfg); pc.Certname != "other.example.net" {
		t.Errorf("certname = %q, want MCOLLECTIVE_CERTNAME's", pc.Certname)
	}
}

func TestUnknownSecurityProvider(t *testing.T) {
	cfg := config.Default()
	cfg.SecurityProvider = "pkcs11"
	if _, _, err := newVerifier(t.Context(), cfg, nil); err == nil || !strings.Contains(err.Error(), "puppet, file or insecure") {
		t.Errorf("err = %v", err)
	}
}
