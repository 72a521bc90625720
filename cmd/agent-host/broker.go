package main

import (
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
// exposing it would let anyone on the network publish requests.
func startBroker(addr string) (*broker, error) {
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
	srv, err := server.NewServer(&server.Options{Host: host, Port: port, NoSigs: true, NoLog: true, MaxPayload: 8 << 20})
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

// URL is the nats:// address clients connect to.
func (b *broker) URL() string { return b.srv.ClientURL() }

// Close stops the broker and waits for it.
func (b *broker) Close() {
	b.srv.Shutdown()
	b.srv.WaitForShutdown()
}
