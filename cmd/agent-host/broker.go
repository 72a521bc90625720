package main

import (
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// broker is an embedded NATS server, used when no middleware hosts are
// configured so that a single node works with nothing else installed.
type broker struct {
	srv *server.Server
}

// startBroker starts a NATS server listening on addr (host:port). It only
// binds loopback addresses: an embedded broker has no authentication, so
// exposing it would let anyone on the network publish requests. With tc,
// clients must speak TLS and present a certificate tc's ClientCAs vouch
// for, as Choria's broker requires.
func startBroker(addr string, tc *tls.Config) (*broker, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("embedded broker address %q: %w", addr, err)
	}
	ip := net.ParseIP(host)
	if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("embedded broker address %q: only loopback addresses are allowed", addr)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("embedded broker port %q: %w", portStr, err)
	}
	// nats-server reports a busy port only by never becoming ready.
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("embedded broker address %s is not free (another broker or agent-host running?): %w", addr, err)
	}
	l.Close()
	if port == 0 {
		// nats-server reads port 0 as its default, 4222.
		port = server.RANDOM_PORT
	}
	opts := &server.Options{Host: host, Port: port, NoSigs: true, NoLog: true, MaxPayload: 8 << 20}
	if tc != nil {
		if tc.ClientAuth != tls.RequireAndVerifyClientCert {
			return nil, fmt.Errorf("embedded broker TLS: client certificates must be required and verified")
		}
		opts.TLS, opts.TLSVerify, opts.TLSConfig, opts.TLSTimeout = true, true, tc, 5
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("creating embedded broker: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("embedded broker on %s did not start within 10s", addr)
	}
	return &broker{srv: srv}, nil
}

// URL is the nats:// address clients connect to; with TLS they upgrade
// the connection as the server asks.
func (b *broker) URL() string { return b.srv.ClientURL() }

// Port is the port the broker listens on, the free one picked for port 0.
func (b *broker) Port() int { return b.srv.Addr().(*net.TCPAddr).Port }

// brokerTLS is the server side of the broker's TLS: its certificate, and
// the CA client certificates must chain to.
func brokerTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: certFile, KeyFile: keyFile, CaFile: caFile, Verify: true})
	if err != nil {
		return nil, fmt.Errorf("embedded broker TLS: %w", err)
	}
	return tc, nil
}

// Close stops the broker and waits for it.
func (b *broker) Close() {
	b.srv.Shutdown()
	b.srv.WaitForShutdown()
}
