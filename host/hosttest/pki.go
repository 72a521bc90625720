// Package hosttest provides test helpers for code that talks to Choria
// clients and servers, in the spirit of net/http/httptest: a throwaway
// certificate authority that issues certificates on demand, and an
// embedded NATS server on a random loopback port.
//
// Everything is created below tb.TempDir() and torn down with tb.Cleanup;
// failures end the test with tb.Fatal.
package hosttest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// PKI is a certificate authority in a temporary directory.
type PKI struct {
	// Dir holds the CA and every issued certificate and key.
	Dir string
	// CAFile is the PEM of the root certificate, the trust anchor to give
	// verifiers and TLS clients.
	CAFile string

	signer crypto.Signer
	cert   *x509.Certificate
	chain  []byte      // PEM of the issuing intermediates, appended to issued certificates
	mu     *sync.Mutex // shared with intermediates, which write to the same Dir
}

// NewPKI creates a fresh RSA-2048 root CA, valid from an hour ago for a day.
func NewPKI(tb testing.TB) *PKI {
	tb.Helper()
	key := generateRSA(tb)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(tb),
		Subject:               pkix.Name{CommonName: "agent-host test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		tb.Fatalf("hosttest: creating CA certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatalf("hosttest: parsing CA certificate: %v", err)
	}
	p := &PKI{Dir: tb.TempDir(), signer: key, cert: cert, mu: &sync.Mutex{}}
	p.CAFile = filepath.Join(p.Dir, "ca.pem")
	writeFile(tb, p.CAFile, pemBytes("CERTIFICATE", der), 0o644)
	return p
}

// Intermediate creates an intermediate CA signed by p and returns a PKI
// that issues through it. The returned PKI shares p's Dir and CAFile (the
// root stays the trust anchor); each certificate file it issues holds the
// leaf followed by the intermediate, as Choria callers send their chain.
func (p *PKI) Intermediate(tb testing.TB, name string) *PKI {
	tb.Helper()
	key := generateRSA(tb)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(tb),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             p.cert.NotBefore,
		NotAfter:              p.cert.NotAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, key.Public(), p.signer)
	if err != nil {
		tb.Fatalf("hosttest: creating intermediate %s: %v", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatalf("hosttest: parsing intermediate %s: %v", name, err)
	}
	chain := append(pemBytes("CERTIFICATE", der), p.chain...)
	return &PKI{Dir: p.Dir, CAFile: p.CAFile, signer: key, cert: cert, chain: chain, mu: p.mu}
}

// certSpec is what a certificate is issued from; CertOptions change it.
type certSpec struct {
	cn        string
	dns       []string
	ips       []net.IP
	noSANs    bool
	notBefore time.Time
	notAfter  time.Time
	ecdsa     bool
	pkcs8     bool
	ekus      []x509.ExtKeyUsage
}

// CertOption changes a certificate issued by PKI.Issue.
type CertOption func(*certSpec)

// WithDNSNames adds DNS subject alternative names besides the certificate's name.
func WithDNSNames(names ...string) CertOption {
	return func(s *certSpec) { s.dns = append(s.dns, names...) }
}

// WithCommonName sets the subject common name instead of the
// certificate's name (which stays its first DNS name).
func WithCommonName(cn string) CertOption {
	return func(s *certSpec) { s.cn = cn }
}

// WithIPs adds IP subject alternative names.
func WithIPs(ips ...net.IP) CertOption {
	return func(s *certSpec) { s.ips = append(s.ips, ips...) }
}

// WithoutSANs issues a legacy certificate with no subject alternative
// names at all, whatever other options ask for; only the common name
// carries the name.
func WithoutSANs() CertOption {
	return func(s *certSpec) { s.noSANs = true }
}

// WithValidity sets the validity window (default: from an hour ago for a day).
func WithValidity(notBefore, notAfter time.Time) CertOption {
	return func(s *certSpec) { s.notBefore, s.notAfter = notBefore, notAfter }
}

// Expired issues a certificate whose validity ended a day ago.
func Expired() CertOption {
	now := time.Now()
	return WithValidity(now.Add(-48*time.Hour), now.Add(-24*time.Hour))
}

// NotYetValid issues a certificate whose validity starts in a day.
func NotYetValid() CertOption {
	now := time.Now()
	return WithValidity(now.Add(24*time.Hour), now.Add(48*time.Hour))
}

// WithECDSA gives the certificate a P-256 ECDSA key instead of RSA-2048.
func WithECDSA() CertOption {
	return func(s *certSpec) { s.ecdsa = true }
}

// WithPKCS8 writes the private key as PKCS#8 ("PRIVATE KEY") instead of
// PKCS#1 ("RSA PRIVATE KEY") or SEC 1 ("EC PRIVATE KEY").
func WithPKCS8() CertOption {
	return func(s *certSpec) { s.pkcs8 = true }
}

// WithExtKeyUsages replaces the default extended key usages (server and
// client authentication); none at all omits the extension.
func WithExtKeyUsages(ekus ...x509.ExtKeyUsage) CertOption {
	return func(s *certSpec) { s.ekus = ekus }
}

// Issue creates a key and a certificate with CN and DNS name = name
// (options can change both), valid for server and client authentication,
// signed by the CA, and returns the paths of the PEM files. Issuing the
// same name again creates new files, so earlier paths stay valid.
func (p *PKI) Issue(tb testing.TB, name string, opts ...CertOption) (certFile, keyFile string) {
	tb.Helper()
	if name == "" || strings.ContainsAny(name, `/\`) {
		tb.Fatalf("hosttest: %q cannot name a certificate file", name)
	}
	now := time.Now()
	spec := certSpec{
		cn:        name,
		dns:       []string{name},
		notBefore: now.Add(-time.Hour),
		notAfter:  now.Add(24 * time.Hour),
		ekus:      []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, opt := range opts {
		opt(&spec)
	}

	var key crypto.Signer
	var keyDER []byte
	var keyType string
	var err error
	if spec.ecdsa {
		ek, gerr := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if gerr != nil {
			tb.Fatalf("hosttest: generating ECDSA key: %v", gerr)
		}
		key, keyType = ek, "EC PRIVATE KEY"
		keyDER, err = x509.MarshalECPrivateKey(ek)
	} else {
		rk := generateRSA(tb)
		key, keyType = rk, "RSA PRIVATE KEY"
		keyDER = x509.MarshalPKCS1PrivateKey(rk)
	}
	if spec.pkcs8 {
		keyType = "PRIVATE KEY"
		keyDER, err = x509.MarshalPKCS8PrivateKey(key)
	}
	if err != nil {
		tb.Fatalf("hosttest: encoding key for %s: %v", name, err)
	}

	tmpl := &x509.Certificate{
		SerialNumber:          serial(tb),
		Subject:               pkix.Name{CommonName: spec.cn},
		NotBefore:             spec.notBefore,
		NotAfter:              spec.notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           spec.ekus,
		BasicConstraintsValid: true,
	}
	if _, ok := key.(*rsa.PrivateKey); ok {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	if !spec.noSANs {
		tmpl.DNSNames, tmpl.IPAddresses = spec.dns, spec.ips
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, key.Public(), p.signer)
	if err != nil {
		tb.Fatalf("hosttest: issuing certificate for %s: %v", name, err)
	}

	base := p.fileBase(tb, name)
	certFile = filepath.Join(p.Dir, base+".pem")
	keyFile = filepath.Join(p.Dir, base+".key")
	writeFile(tb, certFile, append(pemBytes("CERTIFICATE", der), p.chain...), 0o644)
	writeFile(tb, keyFile, pemBytes(keyType, keyDER), 0o600)
	return certFile, keyFile
}

// fileBase returns name, or name.N when files of that name exist already.
func (p *PKI) fileBase(tb testing.TB, name string) string {
	tb.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for n := 0; ; n++ {
		base := name
		if n > 0 {
			base = fmt.Sprintf("%s.%d", name, n)
		}
		_, errCert := os.Stat(filepath.Join(p.Dir, base+".pem"))
		_, errKey := os.Stat(filepath.Join(p.Dir, base+".key"))
		if errors.Is(errCert, fs.ErrNotExist) && errors.Is(errKey, fs.ErrNotExist) {
			// Reserve the name before unlocking.
			writeFile(tb, filepath.Join(p.Dir, base+".pem"), nil, 0o644)
			return base
		}
	}
}

func generateRSA(tb testing.TB) *rsa.PrivateKey {
	tb.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		tb.Fatalf("hosttest: generating RSA key: %v", err)
	}
	return k
}

func serial(tb testing.TB) *big.Int {
	tb.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		tb.Fatalf("hosttest: generating serial number: %v", err)
	}
	return n
}

func pemBytes(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func writeFile(tb testing.TB, path string, b []byte, mode os.FileMode) {
	tb.Helper()
	if err := os.WriteFile(path, b, mode); err != nil {
		tb.Fatalf("hosttest: %v", err)
	}
}

// PuppetSSLDir lays out what `puppet agent` leaves in its SSL directory
// for certname, issued by p: certs/<certname>.pem,
// private_keys/<certname>.pem and certs/ca.pem. It returns the directory.
func (p *PKI) PuppetSSLDir(tb testing.TB, certname string) string {
	tb.Helper()
	dir := tb.TempDir()
	cert, key := p.Issue(tb, certname)
	for src, dst := range map[string]string{
		cert:     filepath.Join(dir, "certs", certname+".pem"),
		key:      filepath.Join(dir, "private_keys", certname+".pem"),
		p.CAFile: filepath.Join(dir, "certs", "ca.pem"),
	} {
		b, err := os.ReadFile(src)
		if err != nil {
			tb.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o750); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	return dir
}
