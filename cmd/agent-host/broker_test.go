package main

import (
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/agent-host/agent-host/cmd/agent-host/internal/devpki"
)

func TestStartBroker(t *testing.T) {
	b, err := startBroker("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	nc, err := nats.Connect(b.URL())
	if err != nil {
		t.Fatalf("connecting to the embedded broker at %s: %v", b.URL(), err)
	}
	nc.Close()
	// Port 0 is a free port each time, not nats-server's default.
	b2, err := startBroker("127.0.0.1:0", nil)
	if err != nil {
		t.Fatalf("a second broker on port 0: %v", err)
	}
	t.Cleanup(b2.Close)
	if b.Port() == b2.Port() {
		t.Errorf("both brokers on port 0 report port %d", b.Port())
	}

	for _, addr := range []string{"0.0.0.0:4222", "192.0.2.1:4222", "example.com:4222", "nonsense"} {
		if _, err := startBroker(addr, nil); err == nil {
			t.Errorf("StartBroker(%q) succeeded; only loopback addresses may be used", addr)
		}
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := startBroker(l.Addr().String(), nil); err == nil || !strings.Contains(err.Error(), "not free") {
		t.Errorf("StartBroker on a busy port: err = %v, want it to say the address is not free", err)
	}
}

// TestStartBrokerTLS: with TLS the broker takes only clients presenting a
// certificate from its CA, as Choria's broker does.
func TestStartBrokerTLS(t *testing.T) {
	pki, err := devpki.Ensure(devpki.Config{Dir: t.TempDir(), Node: "n", Client: "c.mcollective"})
	if err != nil {
		t.Fatal(err)
	}
	other, err := devpki.Ensure(devpki.Config{Dir: t.TempDir(), Node: "n", Client: "c.mcollective"})
	if err != nil {
		t.Fatal(err)
	}
	tc, err := brokerTLS(pki.Broker.Cert, pki.Broker.Key, pki.CA)
	if err != nil {
		t.Fatal(err)
	}
	b, err := startBroker("127.0.0.1:0", tc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	url := fmt.Sprintf("nats://127.0.0.1:%d", b.Port())
	for _, tc := range []struct {
		name   string
		opts   []nats.Option
		wantOK bool
	}{
		{"client certificate", []nats.Option{nats.ClientCert(pki.Client.Cert, pki.Client.Key), nats.RootCAs(pki.CA)}, true},
		{"no client certificate", []nats.Option{nats.RootCAs(pki.CA)}, false},
		{"another CA's client", []nats.Option{nats.ClientCert(other.Client.Cert, other.Client.Key), nats.RootCAs(pki.CA)}, false},
		{"plain text", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := nats.Connect(url, append(tc.opts, nats.Timeout(5*time.Second), nats.NoReconnect())...)
			if err == nil {
				// A refused certificate can surface only at the first flush.
				err = nc.Flush()
				nc.Close()
			}
			if tc.wantOK != (err == nil) {
				t.Errorf("connect: %v, want success %v", err, tc.wantOK)
			}
		})
	}
	if _, err := startBroker("127.0.0.1:0", &tls.Config{}); err == nil {
		t.Error("a broker with TLS that does not verify clients started")
	}
}
