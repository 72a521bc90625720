package client_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/agent-host/agent-host/protocol"
	"github.com/agent-host/agent-host/protocol/client"
	v1 "github.com/agent-host/agent-host/protocol/v1"
)

func startNATS(t *testing.T) *nats.Conn {
	t.Helper()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(20 * time.Second) {
		t.Fatal("NATS server not ready")
	}
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// fakeNode answers requests on its node subject with what answer returns:
// one payload per reply to publish.
func fakeNode(t *testing.T, nc *nats.Conn, identity string, answer func(req *v1.Request, t *v1.Transport) [][]byte) {
	t.Helper()
	_, err := nc.Subscribe("mcollective.node."+identity, func(m *nats.Msg) {
		tr, err := v1.DecodeTransport(m.Data)
		if err != nil {
			return
		}
		sreq, err := tr.SecureRequest()
		if err != nil {
			return
		}
		req, err := sreq.Request()
		if err != nil {
			return
		}
		for _, p := range answer(req, tr) {
			_ = nc.Publish(tr.Headers.ReplyTo, p)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}

func okReply(t *testing.T, req *v1.Request, tr *v1.Transport, sender string) []byte {
	body, _ := json.Marshal(protocol.NewRPCReply("ping"))
	p, err := v1.EncodeReply(req, v1.ReplyHeaders(tr, sender, ""), time.Now().Unix(), body)
	if err != nil {
		t.Error(err)
	}
	return p
}

// TestRequestAccountsPerNode is the regression test for replies counted
// towards the expected total whoever sent them: a duplicate, an unreadable
// reply or one from a node not asked must not make a node that answers
// look like no response, nor a silent node look answered.
func TestRequestAccountsPerNode(t *testing.T) {
	nc := startNATS(t)
	fakeNode(t, nc, "a", func(req *v1.Request, tr *v1.Transport) [][]byte {
		// Twice, and a reply in the name of a node nobody asked.
		return [][]byte{okReply(t, req, tr, "a"), okReply(t, req, tr, "a"), okReply(t, req, tr, "x")}
	})
	fakeNode(t, nc, "b", func(req *v1.Request, tr *v1.Transport) [][]byte {
		// Late, after a's noise.
		time.Sleep(200 * time.Millisecond)
		bad, _ := json.Marshal(v1.Transport{Protocol: v1.TransportProtocol, Data: []byte(`{"protocol":"choria:secure:reply:1","message":"x","hash":"wrong"}`), Headers: v1.TransportHeaders{MCSender: "b"}})
		return [][]byte{bad}
	})
	fakeNode(t, nc, "c", func(req *v1.Request, tr *v1.Transport) [][]byte {
		time.Sleep(400 * time.Millisecond)
		return [][]byte{okReply(t, req, tr, "c")}
	})
	cl := client.New(nc, client.Config{Identity: "rip.mcollective"})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	res, err := cl.Request(ctx, []string{"a", "b", "c", "d"}, "rpcutil", "ping", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var senders []string
	for _, r := range res.Replies {
		senders = append(senders, r.Sender)
		if (r.Err != nil) != (r.Sender == "b") {
			t.Errorf("reply from %s: error %v; want an error for b's unreadable reply only", r.Sender, r.Err)
		}
	}
	if !slices.Equal(senders, []string{"a", "b", "c"}) || !slices.Equal(res.Missing, []string{"d"}) ||
		!slices.Equal(res.Unexpected, []string{"x"}) || res.Duplicates != 1 {
		t.Errorf("result %+v (senders %v); want a, b, c answered, d missing, x unexpected, 1 duplicate", res, senders)
	}
}

// TestRequestStopsWhenAllAnswered: once every node asked has answered the
// request returns, without waiting for the deadline.
func TestRequestStopsWhenAllAnswered(t *testing.T) {
	nc := startNATS(t)
	fakeNode(t, nc, "a", func(req *v1.Request, tr *v1.Transport) [][]byte { return [][]byte{okReply(t, req, tr, "a")} })
	cl := client.New(nc, client.Config{Identity: "rip.mcollective"})
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	res, err := cl.Request(ctx, []string{"a"}, "rpcutil", "ping", nil, nil)
	if err != nil || len(res.Replies) != 1 || len(res.Missing) != 0 {
		t.Fatalf("Request = %+v, %v", res, err)
	}
	if ctx.Err() != nil {
		t.Error("the request ran into its deadline")
	}
}
