package host

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/agent-host/agent-host/host/config"
	"github.com/agent-host/agent-host/protocol/security"
)

// Where Choria's puppet provider looks when plugin.choria.ssldir is unset
// and Puppet cannot be asked: Puppet's own defaults for root and for
// other users (under $HOME).
const (
	puppetRootSSLDir = "/etc/puppetlabs/puppet/ssl"
	puppetUserSSLDir = ".puppetlabs/etc/puppet/ssl"
	// puppetAIOBin is where Puppet's all-in-one packages install it;
	// Choria looks there before PATH.
	puppetAIOBin = "/opt/puppetlabs/bin/puppet"
)

// puppetAskTimeout bounds `puppet apply --configprint ssldir`, which
// starts a Ruby interpreter: seconds on a busy node, never minutes.
const puppetAskTimeout = 30 * time.Second

// newVerifier builds the verifier plugin.security.provider names and
// returns the files an x509 provider presents to the broker (none for
// insecure).
func newVerifier(ctx context.Context, cfg *config.Config, log *slog.Logger) (security.Verifier, security.Files, error) {
	fc := security.FileConfig{
		CAFile:            cfg.FileCA,
		CertnameAllowList: cfg.CertnameWhitelist,
		PrivilegedUsers:   cfg.PrivilegedUsers,

		SupportLegacyCertificates: cfg.SupportLegacyCertificates,
	}
	switch cfg.SecurityProvider {
	case "insecure":
		log.Warn("SECURITY DISABLED: plugin.security.provider = insecure; requests are NOT verified and anyone who can publish to the broker can run agents")
		return security.Insecure{}, security.Files{}, nil
	case "file":
		for _, k := range []struct{ key, value string }{
			{"plugin.security.file.certificate", cfg.FileCertificate},
			{"plugin.security.file.key", cfg.FileKey},
			{"plugin.security.file.ca", cfg.FileCA},
		} {
			if k.value == "" {
				return nil, security.Files{}, fmt.Errorf("host: %s is not set: plugin.security.provider = file needs this node's certificate, its key and the CA", k.key)
			}
		}
		v, err := security.NewFileVerifier(fc)
		if err != nil {
			return nil, security.Files{}, fmt.Errorf("host: file security: %w", err)
		}
		return v, security.Files{Certificate: cfg.FileCertificate, Key: cfg.FileKey, CA: cfg.FileCA}, nil
	case "puppet":
		pc, err := PuppetSecurity(ctx, cfg)
		if err != nil {
			return nil, security.Files{}, err
		}
		v, files, err := security.NewPuppetVerifier(pc, fc)
		if err != nil {
			return nil, security.Files{}, fmt.Errorf("host: plugin.security.provider = puppet: %w", err)
		}
		log.Info("puppet security: using Puppet's SSL directory", "ssldir", pc.SSLDir, "certname", pc.Certname,
			"certificate", files.Certificate, "key", files.Key, "ca", files.CA)
		return v, files, nil
	default:
		return nil, security.Files{}, fmt.Errorf("host: plugin.security.provider %q is not supported; use puppet, file or insecure", cfg.SecurityProvider)
	}
}

// PuppetSecurity is where Choria's puppet provider finds this node's
// certificate, key and CA: plugin.choria.ssldir, else Puppet's SSL
// directory (see config.Config.SSLDir); the certname is
// MCOLLECTIVE_CERTNAME when set, else identity, as for a Choria server.
func PuppetSecurity(ctx context.Context, cfg *config.Config) (security.PuppetConfig, error) {
	pc := security.PuppetConfig{SSLDir: cfg.SSLDir, Certname: cfg.Identity}
	if cn := os.Getenv("MCOLLECTIVE_CERTNAME"); cn != "" {
		pc.Certname = cn
	}
	if pc.SSLDir != "" {
		return pc, nil
	}
	dir, err := puppetSSLDir(ctx, os.Geteuid() == 0, os.Getenv("HOME"))
	if err != nil {
		return pc, fmt.Errorf("host: plugin.security.provider = puppet: %w", err)
	}
	pc.SSLDir = dir
	return pc, nil
}

// puppetSSLDir is Choria's default SSL directory. As root Choria asks
// Puppet (`puppet apply --environment production --configprint ssldir`);
// here that is bounded by puppetAskTimeout, and a node without Puppet
// gets Puppet's default rather than an error. Other users get the
// directory under their home, which Puppet uses for them too.
func puppetSSLDir(ctx context.Context, root bool, home string) (string, error) {
	if !root {
		if home == "" {
			return "", fmt.Errorf("HOME is not set, so Puppet's SSL directory for this user is unknown: set plugin.choria.ssldir")
		}
		return filepath.Join(home, puppetUserSSLDir), nil
	}
	puppet := puppetAIOBin
	if _, err := os.Stat(puppet); err != nil {
		if puppet, err = exec.LookPath("puppet"); err != nil {
			return puppetRootSSLDir, nil
		}
	}
	ctx, cancel := context.WithTimeout(ctx, puppetAskTimeout)
	defer cancel()
	args := []string{"apply", "--environment", "production", "--configprint", "ssldir"}
	cmd := exec.CommandContext(ctx, puppet, args...)
	var out, errOut cappedBuffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	// Whatever the child leaves holding its pipes, Wait returns.
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("asking Puppet for its SSL directory (%s %s): %w: %s; set plugin.choria.ssldir",
			puppet, strings.Join(args, " "), err, strings.TrimSpace(errOut.String()))
	}
	dir := strings.TrimSpace(out.String())
	if !filepath.IsAbs(dir) {
		return "", fmt.Errorf("%s %s printed %q, not an absolute directory: set plugin.choria.ssldir", puppet, strings.Join(args, " "), dir)
	}
	return dir, nil
}

// cappedBuffer keeps the first 4 KiB written to it and discards the rest,
// so a misbehaving puppet cannot grow the host's memory.
type cappedBuffer struct{ bytes.Buffer }

const capBytes = 4 << 10

func (b *cappedBuffer) Write(p []byte) (int, error) {
	if room := capBytes - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
