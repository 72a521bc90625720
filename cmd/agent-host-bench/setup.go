package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// pki is a throwaway RSA-2048 certificate authority writing PEM files
// laid out as Choria's file security provider expects them.
type pki struct {
	dir    string
	caFile string
	key    *rsa.PrivateKey
	cert   *x509.Certificate
}

func newPKI(dir string) (*pki, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generating the CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "agent-host bench CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	p := &pki{dir: dir, caFile: filepath.Join(dir, "ca.pem"), key: key, cert: cert}
	return p, writePEM(p.caFile, "CERTIFICATE", der, 0o644)
}

// issue writes name.pem and name.key: CN and a DNS SAN of name, the given
// IP SANs, server and client authentication, as Choria's certificates.
func (p *pki) issue(name string, ips ...net.IP) (certFile, keyFile string, err error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", "", err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		DNSNames:              []string{name},
		IPAddresses:           ips,
		NotBefore:             p.cert.NotBefore,
		NotAfter:              p.cert.NotAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(p.dir, name+".pem"), filepath.Join(p.dir, name+".key")
	if err := writePEM(certFile, "CERTIFICATE", der, 0o644); err != nil {
		return "", "", err
	}
	return certFile, keyFile, writePEM(keyFile, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key), 0o600)
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode)
}

// startBroker runs a TLS NATS server on a free loopback port that asks
// every client for a certificate of the CA, as Choria's brokers do.
func startBroker(p *pki) (*server.Server, string, error) {
	cert, key, err := p.issue("broker", net.ParseIP("127.0.0.1"))
	if err != nil {
		return nil, "", err
	}
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: cert, KeyFile: key, CaFile: p.caFile, Verify: true})
	if err != nil {
		return nil, "", err
	}
	srv, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT, TLS: true, TLSVerify: true, TLSConfig: tc, TLSTimeout: 5,
		NoLog: true, NoSigs: true, MaxPayload: 8 << 20,
	})
	if err != nil {
		return nil, "", err
	}
	go srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return nil, "", errors.New("the bench's NATS broker did not start")
	}
	return srv, fmt.Sprintf("nats://127.0.0.1:%d", srv.Addr().(*net.TCPAddr).Port), nil
}

// installAgent copies the agent directory src (X/X.json and X/X, or the
// multi-arch X/X/X-<os>_<arch>) to libdir/mcollective/agent/name, renaming
// it and its DDL's name to name. Files are copied, not linked: Choria's
// provider does not follow links to directories. The DDL is dated in the
// past so that agent-host's wait for files to settle does not apply.
func installAgent(libdir, src, name string) error {
	from := filepath.Base(src)
	dst := filepath.Join(libdir, "mcollective", "agent", name)
	err := filepath.Walk(src, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		// Rename X, X.json, X/ and X-<os>_<arch> to the new name.
		parts := strings.Split(rel, string(filepath.Separator))
		for i, part := range parts {
			if part == from || strings.HasPrefix(part, from+".") || strings.HasPrefix(part, from+"-") {
				parts[i] = name + part[len(from):]
			}
		}
		target := filepath.Join(append([]string{dst}, parts...)...)
		if info.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if rel == from+".json" {
			return writeDDL(path, target, name)
		}
		return copyFile(path, target, info.Mode().Perm())
	})
	if err != nil {
		return fmt.Errorf("installing agent %s from %s: %w", name, src, err)
	}
	past := time.Now().Add(-time.Hour)
	return os.Chtimes(filepath.Join(dst, name+".json"), past, past)
}

// writeDDL copies a DDL with its metadata.name set to name.
func writeDDL(src, dst, name string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	var ddl map[string]any
	if err := json.Unmarshal(b, &ddl); err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	meta, ok := ddl["metadata"].(map[string]any)
	if !ok {
		return fmt.Errorf("%s has no metadata", src)
	}
	meta["name"] = name
	out, err := json.MarshalIndent(ddl, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(dst, out, 0o644)
}

func copyFile(src, dst string, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// writeConfig writes "key = value" lines from alternating keys and values.
func writeConfig(path string, kv ...string) error {
	var b strings.Builder
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(&b, "%s = %s\n", kv[i], kv[i+1])
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}
