// Package devpki creates and keeps a development certificate authority and
// the certificates a single-machine Choria setup needs: one for the NATS
// broker, one for the node and one for the user's client, laid out as
// Choria's file security provider expects them. It uses only Go's crypto.
//
// The material is meant for a developer's machine: the CA key sits beside
// the certificates so that a later run can reissue what has expired.
package devpki

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"
)

// Default lifetimes, and how close to its expiry a certificate is
// replaced rather than reused.
const (
	DefaultCAValidity   = 5 * 365 * 24 * time.Hour
	DefaultCertValidity = 365 * 24 * time.Hour
	RenewBefore         = 24 * time.Hour
)

// ErrConfig reports unusable settings.
var ErrConfig = errors.New("devpki: invalid configuration")

// Config says what to create.
type Config struct {
	// Dir holds the files; it is created with mode 0700. Required.
	Dir string
	// Node is the node's identity, the common name and DNS name of its
	// certificate. Required.
	Node string
	// Client is the caller's certname, such as alice.mcollective (Choria's
	// caller id is then choria=alice.mcollective). Required.
	Client string
	// BrokerHosts are the DNS names and IP addresses clients reach the
	// broker by; empty means localhost, 127.0.0.1 and ::1.
	BrokerHosts []string
	// CAValidity and CertValidity are the lifetimes of new certificates;
	// zero means DefaultCAValidity and DefaultCertValidity.
	CAValidity, CertValidity time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Pair names a certificate file and its private key file.
type Pair struct {
	Name string // the common name
	Cert string
	Key  string
}

// PKI is the set of files Ensure made sure of.
type PKI struct {
	// CA is the CA certificate, the plugin.security.file.ca of every party.
	CA string
	// CAKey is the CA's private key, kept to reissue certificates.
	CAKey  string
	Broker Pair
	Node   Pair
	Client Pair
	// Created lists the files written by this call; empty when everything
	// was reused.
	Created []string
}

// Private keys are readable by their owner only; certificates by anyone.
const (
	keyMode  os.FileMode = 0o600
	certMode os.FileMode = 0o644
	dirMode  os.FileMode = 0o700
)

// spec is what one leaf certificate must look like to be reused.
type spec struct {
	name string
	dns  []string
	ips  []net.IP
}

// Ensure creates in cfg.Dir whatever is missing, unusable or about to
// expire, and reuses the rest: the CA (ca.pem, ca.key), broker.pem and
// broker.key, <node>.pem and <node>.key, <client>.pem and <client>.key.
// A new CA means new certificates for all three. Every certificate is an
// RSA-2048 one (Choria signs requests only with RSA) whose common name is
// its name, with the node's and client's name as their DNS name (Choria
// matches a caller's certname against the DNS names) and the broker's
// hosts as the broker's, and both server and client authentication, as
// Choria's certificates carry. Files are written whole or not at all.
func Ensure(cfg Config) (*PKI, error) {
	if cfg.Dir == "" || cfg.Node == "" || cfg.Client == "" {
		return nil, fmt.Errorf("%w: Dir, Node and Client are required", ErrConfig)
	}
	names := []string{"ca", "broker", cfg.Node, cfg.Client}
	for i, n := range names {
		if filepath.Base(n) != n || n == "." || n == ".." {
			return nil, fmt.Errorf("%w: %q cannot name a file", ErrConfig, n)
		}
		if slices.Contains(names[:i], n) {
			return nil, fmt.Errorf("%w: the name %q is used twice (the CA and the broker take ca and broker)", ErrConfig, n)
		}
	}
	if cfg.CAValidity == 0 {
		cfg.CAValidity = DefaultCAValidity
	}
	if cfg.CertValidity == 0 {
		cfg.CertValidity = DefaultCertValidity
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if len(cfg.BrokerHosts) == 0 {
		cfg.BrokerHosts = []string{"localhost", "127.0.0.1", "::1"}
	}
	if err := os.MkdirAll(cfg.Dir, dirMode); err != nil {
		return nil, fmt.Errorf("devpki: creating %s: %w", cfg.Dir, err)
	}
	// What is in the directory is trusted: it must be ours alone, or
	// another user could have left a CA there whose clients the node
	// would then serve.
	if err := ownPrivately(cfg.Dir, dirMode); err != nil {
		return nil, err
	}
	now := cfg.Now()
	p := &PKI{CA: filepath.Join(cfg.Dir, "ca.pem"), CAKey: filepath.Join(cfg.Dir, "ca.key")}

	ca, caKey, err := loadCA(p.CA, p.CAKey, now)
	if err != nil {
		if ca, caKey, err = newCA(now, cfg.CAValidity); err != nil {
			return nil, err
		}
		if err := p.write(p.CA, "CERTIFICATE", ca.Raw, certMode); err != nil {
			return nil, err
		}
		if err := p.write(p.CAKey, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(caKey), keyMode); err != nil {
			return nil, err
		}
	}

	broker := spec{name: "broker"}
	for _, h := range cfg.BrokerHosts {
		if ip := net.ParseIP(h); ip != nil {
			broker.ips = append(broker.ips, ip)
		} else {
			broker.dns = append(broker.dns, h)
		}
	}
	leaves := []struct {
		s   spec
		out *Pair
	}{
		{broker, &p.Broker},
		{spec{name: cfg.Node, dns: []string{cfg.Node}}, &p.Node},
		{spec{name: cfg.Client, dns: []string{cfg.Client}}, &p.Client},
	}
	for _, l := range leaves {
		*l.out = Pair{Name: l.s.name, Cert: filepath.Join(cfg.Dir, l.s.name+".pem"), Key: filepath.Join(cfg.Dir, l.s.name+".key")}
		if err := p.ensureLeaf(*l.out, l.s, ca, caKey, now, cfg.CertValidity); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// loadCA reads a CA that can still sign for a while; any problem means a
// new one.
func loadCA(certFile, keyFile string, now time.Time) (*x509.Certificate, *rsa.PrivateKey, error) {
	cert, key, err := loadPair(certFile, keyFile)
	if err != nil {
		return nil, nil, err
	}
	if err := ownPrivately(keyFile, keyMode); err != nil {
		return nil, nil, err
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, nil, fmt.Errorf("%s is not a CA certificate", certFile)
	}
	if !fresh(cert, now) {
		return nil, nil, fmt.Errorf("%s has expired or is about to", certFile)
	}
	return cert, key, nil
}

// ownPrivately makes sure path, not a symbolic link, belongs to this
// process's user, and takes away what mode allows no one else; one that
// belongs to another user is refused.
func ownPrivately(path string, mode os.FileMode) error {
	st, err := os.Lstat(path)
	if err != nil {
		return fmt.Errorf("devpki: %w", err)
	}
	if st.Mode()&os.ModeSymlink != 0 {
		return fmt.Errorf("devpki: %s is a symbolic link: give --dir a directory of your own", path)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Geteuid() {
		return fmt.Errorf("devpki: %s belongs to user %d, not to you (%d): remove it or give --dir a directory of your own", path, sys.Uid, os.Geteuid())
	}
	if st.Mode().Perm()&^mode != 0 {
		if err := os.Chmod(path, mode); err != nil {
			return fmt.Errorf("devpki: %w", err)
		}
	}
	return nil
}

func newCA(now time.Time, validity time.Duration) (*x509.Certificate, *rsa.PrivateKey, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, fmt.Errorf("devpki: generating the CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "agent-host development CA", Organization: []string{"agent-host dev"}},
		// Back-dated a little for clocks slightly behind this one.
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("devpki: creating the CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("devpki: parsing the CA certificate: %w", err)
	}
	return cert, key, nil
}

// ensureLeaf reuses the pair when it is still what s asks for, issued by
// ca and fresh; otherwise it issues a new one.
func (p *PKI) ensureLeaf(pair Pair, s spec, ca *x509.Certificate, caKey *rsa.PrivateKey, now time.Time, validity time.Duration) error {
	if cert, _, err := loadPair(pair.Cert, pair.Key); err == nil && reusable(cert, s, ca, now) {
		// A key copied around may have lost its mode.
		return ownPrivately(pair.Key, keyMode)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("devpki: generating the key for %s: %w", s.name, err)
	}
	serial, err := newSerial()
	if err != nil {
		return err
	}
	notAfter := now.Add(validity)
	if notAfter.After(ca.NotAfter) {
		notAfter = ca.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: s.name},
		DNSNames:              s.dns,
		IPAddresses:           s.ips,
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("devpki: issuing the certificate for %s: %w", s.name, err)
	}
	// The key first: a certificate without its key would look reusable.
	if err := p.write(pair.Key, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key), keyMode); err != nil {
		return err
	}
	return p.write(pair.Cert, "CERTIFICATE", der, certMode)
}

// reusable says whether cert chains to ca for both usages, is fresh and
// names exactly what s does.
func reusable(cert *x509.Certificate, s spec, ca *x509.Certificate, now time.Time) bool {
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			return false
		}
	}
	return fresh(cert, now) && cert.Subject.CommonName == s.name &&
		slices.Equal(cert.DNSNames, s.dns) &&
		slices.EqualFunc(cert.IPAddresses, s.ips, func(a, b net.IP) bool { return a.Equal(b) })
}

func fresh(cert *x509.Certificate, now time.Time) bool {
	return !now.Before(cert.NotBefore) && now.Add(RenewBefore).Before(cert.NotAfter)
}

// loadPair reads a PEM certificate and the RSA key that belongs to it.
func loadPair(certFile, keyFile string) (*x509.Certificate, *rsa.PrivateKey, error) {
	cb, err := os.ReadFile(certFile)
	if err != nil {
		return nil, nil, err
	}
	block, _ := pem.Decode(cb)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("%s holds no PEM certificate", certFile)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", certFile, err)
	}
	kb, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, nil, err
	}
	block, _ = pem.Decode(kb)
	if block == nil || block.Type != "RSA PRIVATE KEY" {
		return nil, nil, fmt.Errorf("%s holds no PEM RSA private key", keyFile)
	}
	key, err := x509.ParsePKCS1PrivateKey(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", keyFile, err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, nil, fmt.Errorf("%s is not the key of %s", keyFile, certFile)
	}
	return cert, key, nil
}

func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return nil, fmt.Errorf("devpki: serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// write replaces path with one PEM block through a temporary file and a
// rename, so an interrupted run leaves the old file or the new one.
func (p *PKI) write(path, typ string, der []byte, mode os.FileMode) error {
	var b bytes.Buffer
	if err := pem.Encode(&b, &pem.Block{Type: typ, Bytes: der}); err != nil {
		return fmt.Errorf("devpki: encoding %s: %w", path, err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("devpki: %w", err)
	}
	defer os.Remove(f.Name())
	// CreateTemp makes the file 0600 before anything is written to it.
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("devpki: %w", err)
	}
	if _, err := f.Write(b.Bytes()); err != nil {
		f.Close()
		return fmt.Errorf("devpki: writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("devpki: writing %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("devpki: %w", err)
	}
	p.Created = append(p.Created, path)
	return nil
}
