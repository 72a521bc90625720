package main

import (
	"net"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
)

func TestStartBroker(t *testing.T) {
	b, err := startBroker("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	nc, err := nats.Connect(b.URL())
	if err != nil {
		t.Fatalf("connecting to the embedded broker at %s: %v", b.URL(), err)
	}
	nc.Close()

	for _, addr := range []string{"0.0.0.0:4222", "192.0.2.1:4222", "example.com:4222", "nonsense"} {
		if _, err := startBroker(addr); err == nil {
			t.Errorf("StartBroker(%q) succeeded; only loopback addresses may be used", addr)
		}
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := startBroker(l.Addr().String()); err == nil || !strings.Contains(err.Error(), "not free") {
		t.Errorf("StartBroker on a busy port: err = %v, want it to say the address is not free", err)
	}
}
