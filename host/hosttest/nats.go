package hosttest

import (
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// readyTimeout is generous: a loaded CI machine can be slow to start the
// server, and waiting longer costs nothing when it is fast.
const readyTimeout = 20 * time.Second

// natsSpec is what NATS starts a server from; NATSOptions change it.
type natsSpec struct {
	pki        *PKI
	maxPayload int32
}

// NATSOption changes the server NATS starts.
type NATSOption func(*natsSpec)

// WithTLS serves TLS with a certificate from pki for DNS localhost and IP
// 127.0.0.1, like a broker set up for the stock Choria client. Client
// certificates are not required (verify: false) and plain connections are
// still accepted (allow_non_tls), so a TLS client and a plain one can share
// the server.
func WithTLS(pki *PKI) NATSOption {
	return func(s *natsSpec) { s.pki = pki }
}

// WithMaxPayload sets the largest message the server accepts, in bytes
// (NATS' default is 1 MiB).
func WithMaxPayload(n int32) NATSOption {
	return func(s *natsSpec) { s.maxPayload = n }
}

// Server is an embedded nats-server on 127.0.0.1. It keeps its port
// across Restart, so clients can reconnect to the same URL.
type Server struct {
	mu         sync.Mutex
	srv        *server.Server
	port       int
	tls        *tls.Config
	maxPayload int32
}

// NATS starts an embedded nats-server on a random loopback port and shuts
// it down when the test ends.
func NATS(tb testing.TB, opts ...NATSOption) *Server {
	tb.Helper()
	var spec natsSpec
	for _, opt := range opts {
		opt(&spec)
	}
	s := &Server{port: server.RANDOM_PORT, maxPayload: spec.maxPayload}
	if spec.pki != nil {
		certFile, keyFile := spec.pki.Issue(tb, "localhost", WithIPs(net.IPv4(127, 0, 0, 1)))
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: certFile, KeyFile: keyFile, CaFile: spec.pki.CAFile})
		if err != nil {
			tb.Fatalf("hosttest: NATS TLS configuration: %v", err)
		}
		s.tls = tc
	}
	s.Start(tb)
	tb.Cleanup(s.Shutdown)
	return s
}

// URL is nats://127.0.0.1:<port>; also with WithTLS, since a nats.go
// client given a TLS configuration upgrades on its own, while a tls://
// URL would stop plain clients from connecting.
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("nats://127.0.0.1:%d", s.port)
}

// Server returns the running nats-server, which changes on Restart; nil
// while shut down.
func (s *Server) Server() *server.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.srv
}

// Start starts the server again after Shutdown, on the same port. It
// retries while the port is still being released.
func (s *Server) Start(tb testing.TB) {
	tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		tb.Fatalf("hosttest: NATS server on port %d is already running", s.port)
	}
	deadline := time.Now().Add(readyTimeout)
	for {
		srv, err := s.start()
		if err == nil {
			s.srv = srv
			if s.port == server.RANDOM_PORT {
				s.port = srv.Addr().(*net.TCPAddr).Port
			}
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("hosttest: starting NATS server: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *Server) start() (*server.Server, error) {
	if s.port != server.RANDOM_PORT {
		// nats-server reports a busy port only by never becoming ready,
		// so find out first, cheaply.
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", s.port))
		if err != nil {
			return nil, err
		}
		l.Close()
	}
	opts := &server.Options{
		Host:       "127.0.0.1",
		Port:       s.port,
		NoLog:      true,
		NoSigs:     true,
		MaxPayload: s.maxPayload,
	}
	if s.tls != nil {
		opts.TLS = true
		opts.TLSConfig = s.tls.Clone()
		opts.TLSTimeout = readyTimeout.Seconds()
		opts.AllowNonTLS = true
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, err
	}
	srv.Start()
	if !srv.ReadyForConnections(readyTimeout) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("not ready for connections on 127.0.0.1:%d within %s", s.port, readyTimeout)
	}
	return srv, nil
}

// Shutdown stops the server and waits until it has; clients see a
// disconnect. It does nothing when the server is not running.
func (s *Server) Shutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv == nil {
		return
	}
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
	s.srv = nil
}

// Restart shuts the server down and starts it again on the same port.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	s.Shutdown()
	s.Start(tb)
}
