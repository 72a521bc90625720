package hosttest_test

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/agent-host/agent-host/host/hosttest"
	"github.com/agent-host/agent-host/protocol/security"
)

// waitTimeout is generous for a loaded machine; waits poll, never sleep.
const waitTimeout = 20 * time.Second

func TestNATSWithTLS(t *testing.T) {
	pki := hosttest.NewPKI(t)
	srv := hosttest.NATS(t, hosttest.WithTLS(pki))
	certFile, keyFile := pki.Issue(t, "rip.mcollective")

	t.Run("TLS client with a certificate from the PKI", func(t *testing.T) {
		tc, err := security.TLSConfig(certFile, keyFile, pki.CAFile)
		if err != nil {
			t.Fatalf("TLSConfig: %v", err)
		}
		nc := connect(t, srv.URL(), nats.Secure(tc))
		state, err := nc.TLSConnectionState()
		if err != nil {
			t.Fatalf("connection is not TLS: %v", err)
		}
		if len(state.VerifiedChains) == 0 {
			t.Fatal("the broker certificate was not verified")
		}
		leaf := state.PeerCertificates[0]
		if !slices.Contains(leaf.DNSNames, "localhost") || !slices.ContainsFunc(leaf.IPAddresses, func(ip net.IP) bool { return ip.Equal(net.IPv4(127, 0, 0, 1)) }) {
			t.Fatalf("broker certificate names: DNS %v, IP %v; want localhost and 127.0.0.1", leaf.DNSNames, leaf.IPAddresses)
		}
		roundTrip(t, nc)
	})

	t.Run("plain client is allowed", func(t *testing.T) {
		nc := connect(t, srv.URL())
		if _, err := nc.TLSConnectionState(); !errors.Is(err, nats.ErrConnectionNotTLS) {
			t.Fatalf("TLSConnectionState error = %v, want %v", err, nats.ErrConnectionNotTLS)
		}
		roundTrip(t, nc)
	})

	t.Run("TLS client trusting another CA is refused", func(t *testing.T) {
		other := hosttest.NewPKI(t)
		tc, err := security.TLSConfig(certFile, keyFile, other.CAFile)
		if err != nil {
			t.Fatalf("TLSConfig: %v", err)
		}
		nc, err := nats.Connect(srv.URL(), nats.Secure(tc), nats.Timeout(waitTimeout))
		if err == nil {
			nc.Close()
			t.Fatal("connected although the broker's CA is not trusted")
		}
		if !errors.As(err, new(x509.UnknownAuthorityError)) {
			t.Fatalf("error = %v, want an unknown authority error", err)
		}
	})
}

func TestNATSRestart(t *testing.T) {
	srv := hosttest.NATS(t)
	url := srv.URL()
	reconnected := make(chan struct{}, 1)
	nc := connect(t, url,
		nats.MaxReconnects(-1),
		nats.ReconnectWait(20*time.Millisecond),
		nats.ReconnectHandler(func(*nats.Conn) { reconnected <- struct{}{} }),
	)
	roundTrip(t, nc)
	first := srv.Server()

	srv.Restart(t)

	if srv.URL() != url {
		t.Fatalf("URL after restart = %s, want %s", srv.URL(), url)
	}
	if srv.Server() == first || srv.Server() == nil {
		t.Fatal("Server() did not change to the restarted server")
	}
	select {
	case <-reconnected:
	case <-time.After(waitTimeout):
		t.Fatalf("client did not reconnect within %s", waitTimeout)
	}
	roundTrip(t, nc)

	srv.Shutdown()
	if srv.Server() != nil {
		t.Fatal("Server() is not nil after Shutdown")
	}
	srv.Shutdown() // a second call must be harmless
}

func TestIssue(t *testing.T) {
	pki := hosttest.NewPKI(t)
	inter := pki.Intermediate(t, "agent-host test intermediate")
	now := time.Now()

	tests := []struct {
		name  string
		pki   *hosttest.PKI
		opts  []hosttest.CertOption
		check func(t *testing.T, cert *x509.Certificate, key any, verifyErr error)
	}{
		{
			name: "defaults",
			check: func(t *testing.T, cert *x509.Certificate, key any, verifyErr error) {
				if verifyErr != nil {
					t.Fatalf("does not verify: %v", verifyErr)
				}
				if cert.Subject.CommonName != "node.example.net" || !slices.Equal(cert.DNSNames, []string{"node.example.net"}) {
					t.Errorf("names: CN %q DNS %v", cert.Subject.CommonName, cert.DNSNames)
				}
				if !slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
					t.Errorf("EKUs %v", cert.ExtKeyUsage)
				}
				if k, ok := key.(*rsa.PrivateKey); !ok || k.N.BitLen() != 2048 {
					t.Errorf("key %T, want RSA-2048", key)
				}
			},
		},
		{
			name: "extra SANs",
			opts: []hosttest.CertOption{hosttest.WithDNSNames("alias.example.net"), hosttest.WithIPs(net.IPv4(10, 0, 0, 1))},
			check: func(t *testing.T, cert *x509.Certificate, _ any, _ error) {
				if !slices.Equal(cert.DNSNames, []string{"node.example.net", "alias.example.net"}) || len(cert.IPAddresses) != 1 {
					t.Errorf("DNS %v IP %v", cert.DNSNames, cert.IPAddresses)
				}
			},
		},
		{
			name: "without SANs",
			opts: []hosttest.CertOption{hosttest.WithoutSANs(), hosttest.WithDNSNames("alias.example.net")},
			check: func(t *testing.T, cert *x509.Certificate, _ any, _ error) {
				if len(cert.DNSNames) != 0 || len(cert.IPAddresses) != 0 || cert.Subject.CommonName != "node.example.net" {
					t.Errorf("CN %q DNS %v IP %v", cert.Subject.CommonName, cert.DNSNames, cert.IPAddresses)
				}
			},
		},
		{
			name: "expired",
			opts: []hosttest.CertOption{hosttest.Expired()},
			check: func(t *testing.T, cert *x509.Certificate, _ any, verifyErr error) {
				if !cert.NotAfter.Before(now) || verifyErr == nil {
					t.Errorf("NotAfter %s, verify error %v", cert.NotAfter, verifyErr)
				}
			},
		},
		{
			name: "not yet valid",
			opts: []hosttest.CertOption{hosttest.NotYetValid()},
			check: func(t *testing.T, cert *x509.Certificate, _ any, verifyErr error) {
				if !cert.NotBefore.After(now) || verifyErr == nil {
					t.Errorf("NotBefore %s, verify error %v", cert.NotBefore, verifyErr)
				}
			},
		},
		{
			name: "ECDSA",
			opts: []hosttest.CertOption{hosttest.WithECDSA()},
			check: func(t *testing.T, _ *x509.Certificate, key any, verifyErr error) {
				if _, ok := key.(*ecdsa.PrivateKey); !ok || verifyErr != nil {
					t.Errorf("key %T, verify error %v", key, verifyErr)
				}
			},
		},
		{
			name: "PKCS#8",
			opts: []hosttest.CertOption{hosttest.WithPKCS8()},
			check: func(t *testing.T, _ *x509.Certificate, key any, _ error) {
				if _, ok := key.(*rsa.PrivateKey); !ok {
					t.Errorf("key %T", key)
				}
			},
		},
		{
			name: "server auth only",
			opts: []hosttest.CertOption{hosttest.WithExtKeyUsages(x509.ExtKeyUsageServerAuth)},
			check: func(t *testing.T, _ *x509.Certificate, _ any, verifyErr error) {
				if verifyErr == nil {
					t.Error("verified for client auth")
				}
			},
		},
		{
			name: "through an intermediate",
			pki:  inter,
			check: func(t *testing.T, cert *x509.Certificate, _ any, verifyErr error) {
				if verifyErr != nil {
					t.Fatalf("does not verify: %v", verifyErr)
				}
				if cert.Issuer.CommonName != "agent-host test intermediate" {
					t.Errorf("issuer %q", cert.Issuer.CommonName)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.pki
			if p == nil {
				p = pki
			}
			certFile, keyFile := p.Issue(t, "node.example.net", tt.opts...)
			certs := readCerts(t, certFile)
			roots := x509.NewCertPool()
			roots.AddCert(readCerts(t, pki.CAFile)[0])
			intermediates := x509.NewCertPool()
			for _, c := range certs[1:] {
				intermediates.AddCert(c)
			}
			_, verifyErr := certs[0].Verify(x509.VerifyOptions{
				Roots: roots, Intermediates: intermediates,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			})
			pair, err := tls.LoadX509KeyPair(certFile, keyFile)
			if err != nil {
				t.Fatalf("key does not match certificate: %v", err)
			}
			tt.check(t, certs[0], pair.PrivateKey, verifyErr)
		})
	}

	t.Run("same name twice gets new files", func(t *testing.T) {
		c1, k1 := pki.Issue(t, "twice.example.net")
		c2, k2 := pki.Issue(t, "twice.example.net")
		if c1 == c2 || k1 == k2 {
			t.Fatalf("second Issue reused %s, %s", c1, k1)
		}
		if readCerts(t, c1)[0].SerialNumber.Cmp(readCerts(t, c2)[0].SerialNumber) == 0 {
			t.Fatal("second certificate has the first one's serial")
		}
	})
}

func connect(t *testing.T, url string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, append(opts, nats.Timeout(waitTimeout))...)
	if err != nil {
		t.Fatalf("connecting to %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// roundTrip proves the connection carries messages both ways.
func roundTrip(t *testing.T, nc *nats.Conn) {
	t.Helper()
	subject := nats.NewInbox()
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) { _ = m.Respond(m.Data) })
	if err != nil {
		t.Fatalf("subscribing: %v", err)
	}
	defer sub.Unsubscribe()
	reply, err := nc.Request(subject, []byte("ping"), waitTimeout)
	if err != nil {
		t.Fatalf("request over %s: %v", nc.ConnectedUrlRedacted(), err)
	}
	if string(reply.Data) != "ping" {
		t.Fatalf("reply %q, want ping", reply.Data)
	}
}

func readCerts(t *testing.T, file string) []*x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		t.Fatalf("%s holds no certificate", file)
	}
	return certs
}
