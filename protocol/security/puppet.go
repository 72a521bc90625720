package security

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ErrMissingFile reports a certificate, key or CA that is not where the
// configuration says it is; the message names the file and the setting
// that locates it.
var ErrMissingFile = errors.New("security: file not found")

// Files are the PEM files of an x509 security provider: the node's
// certificate and private key, presented to the broker, and the CA bundle
// callers and the broker must chain to.
type Files struct {
	Certificate string
	Key         string
	CA          string
}

// PuppetConfig locates a node's files in Puppet's SSL directory, as
// Choria's puppet security provider does; verification is then the file
// provider's.
type PuppetConfig struct {
	// SSLDir is Puppet's SSL directory (plugin.choria.ssldir). Required:
	// finding Puppet's default is the caller's business, as it may mean
	// asking Puppet.
	SSLDir string
	// Certname names the node's certificate and key. Choria's server uses
	// MCOLLECTIVE_CERTNAME when set, else its identity. Required.
	Certname string
}

// Files returns where Puppet keeps the node's material:
// <ssldir>/certs/<certname>.pem, <ssldir>/private_keys/<certname>.pem
// and <ssldir>/certs/ca.pem.
func (c PuppetConfig) Files() Files {
	return Files{
		Certificate: filepath.Join(c.SSLDir, "certs", c.Certname+".pem"),
		Key:         filepath.Join(c.SSLDir, "private_keys", c.Certname+".pem"),
		CA:          filepath.Join(c.SSLDir, "certs", "ca.pem"),
	}
}

// Check reports the first of the files that is missing or not a regular
// file, saying which setting decides where it is looked for.
func (c PuppetConfig) Check() error {
	if c.SSLDir == "" {
		return fmt.Errorf("%w: the puppet provider needs an SSL directory: set plugin.choria.ssldir", ErrConfig)
	}
	if c.Certname == "" {
		return fmt.Errorf("%w: the puppet provider needs the node's certname: set identity (or MCOLLECTIVE_CERTNAME)", ErrConfig)
	}
	// The certname names files inside the SSL directory: it may not lead
	// out of it (MCOLLECTIVE_CERTNAME is not checked as identity is).
	if c.Certname == "." || c.Certname == ".." || strings.ContainsAny(c.Certname, `/\`) || strings.ContainsRune(c.Certname, 0) {
		return fmt.Errorf("%w: the certname %q is not a file name in the SSL directory: check identity and MCOLLECTIVE_CERTNAME", ErrConfig, c.Certname)
	}
	f := c.Files()
	for _, file := range []struct{ what, path, fix string }{
		{"the node's certificate", f.Certificate, "the certname is identity, or MCOLLECTIVE_CERTNAME when set"},
		{"the node's private key", f.Key, "the certname is identity, or MCOLLECTIVE_CERTNAME when set"},
		{"the CA", f.CA, "Puppet's CA certificate"},
	} {
		if err := regularFile(file.path); err != nil {
			return fmt.Errorf("%w: %s %s (certname %q in plugin.choria.ssldir %s; %s): %w",
				ErrMissingFile, file.what, file.path, c.Certname, c.SSLDir, file.fix, err)
		}
	}
	return nil
}

func regularFile(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file: %w", path, fs.ErrInvalid)
	}
	return nil
}

// NewPuppetVerifier checks that the node's certificate, key and CA are in
// Puppet's layout and returns the file provider's verifier over that CA,
// with the other settings of fc (its CAFile is replaced), and the files.
func NewPuppetVerifier(pc PuppetConfig, fc FileConfig, opts ...Option) (*FileVerifier, Files, error) {
	if err := pc.Check(); err != nil {
		return nil, Files{}, err
	}
	files := pc.Files()
	fc.CAFile, fc.caSetting = files.CA, "the CA in plugin.choria.ssldir"
	v, err := NewFileVerifier(fc, opts...)
	if err != nil {
		return nil, Files{}, err
	}
	return v, files, nil
}
