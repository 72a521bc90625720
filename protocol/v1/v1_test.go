package v1_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agent-host/agent-host/protocol"
	v1 "github.com/agent-host/agent-host/protocol/v1"
)

type captured struct {
	Note    string `json:"note"`
	Subject string `json:"subject"`
	Payload string `json:"payload"`
}

func loadCaptured(tb testing.TB, pattern string) map[string]captured {
	tb.Helper()
	files, err := filepath.Glob(filepath.Join("..", "..", "testdata", "captured", pattern))
	if err != nil || len(files) == 0 {
		tb.Fatalf("no captured vectors match %s: %v", pattern, err)
	}
	out := map[string]captured{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		var c captured
		if err := json.Unmarshal(b, &c); err != nil {
			tb.Fatalf("%s: %v", f, err)
		}
		out[filepath.Base(f)] = c
	}
	return out
}

// TestCapturedRequestsRoundTrip decodes every request the real choria
// client sent and re-encodes each layer byte for byte, so the Go types
// lose nothing Choria puts on the wire.
func TestCapturedRequestsRoundTrip(t *testing.T) {
	for name, c := range loadCaptured(t, "*.json") {
		t.Run(name, func(t *testing.T) {
			tr, err := v1.DecodeTransport([]byte(c.Payload))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(tr.Headers.ReplyTo, "mcollective.reply.") || tr.Headers.MCSender != "rip.mcollective" {
				t.Errorf("headers = %+v", tr.Headers)
			}
			sreq, err := tr.SecureRequest()
			if err != nil {
				t.Fatal(err)
			}
			req, err := sreq.Request()
			if err != nil {
				t.Fatal(err)
			}
			if req.Envelope.CallerID != "choria=rip.mcollective" || req.Envelope.TTL != 60 || req.Envelope.Collective != "mcollective" {
				t.Errorf("envelope = %+v", req.Envelope)
			}
			if !strings.HasSuffix(c.Subject, req.Envelope.Agent) && !strings.HasPrefix(c.Subject, "mcollective.node.") {
				t.Errorf("agent %s published on %s", req.Envelope.Agent, c.Subject)
			}
			same(t, "request", mustJSON(t, req), []byte(sreq.Message))
			same(t, "secure request", mustJSON(t, sreq), tr.Data)
			same(t, "transport", mustJSON(t, tr), []byte(c.Payload))
		})
	}
}

func TestCapturedBodies(t *testing.T) {
	vectors := loadCaptured(t, "*.json")
	request := func(name string) *v1.Request {
		req, err := decodeAll([]byte(vectors[name].Payload))
		if err != nil {
			t.Fatal(err)
		}
		return req
	}
	body := func(name string) []byte { return request(name).Body() }
	if got := body("discovery_ping.json"); string(got) != "ping" {
		t.Errorf("discovery body = %q, want ping (base64-decoded)", got)
	}
	rpc, err := protocol.DecodeRPCRequest(body("direct_rpc_request_get_fact.json"))
	if err != nil {
		t.Fatal(err)
	}
	if rpc.Agent != "rpcutil" || rpc.Action != "get_fact" || string(rpc.Data) != `{"fact":"os.family"}` {
		t.Errorf("rpc body = %+v data %s", rpc, rpc.Data)
	}
	f := request("discovery_with_complex_filter.json").Envelope.Filter
	if len(f.Fact) != 1 || f.Fact[0] != (protocol.FactFilter{Fact: "os.family", Operator: "==", Value: "Debian"}) ||
		len(f.Class) != 1 || f.Class[0] != "/web/" || len(f.Compound) != 1 || f.Compound[0][0]["expr"] != "facts.x == 1" {
		t.Errorf("filter = %+v", f)
	}
}

// TestRepliesMatchReferenceServer encodes the reference server's replies
// from their parts and expects its payload, byte for byte.
func TestRepliesMatchReferenceServer(t *testing.T) {
	for name, c := range loadCaptured(t, "replies/*.json") {
		t.Run(name, func(t *testing.T) {
			tr, ref, err := v1.DecodeReply([]byte(c.Payload))
			if err != nil {
				t.Fatal(err)
			}
			req := &v1.Request{Envelope: v1.RequestEnvelope{RequestID: ref.Envelope.RequestID, Agent: ref.Envelope.Agent}}
			server := tr.Headers.SeenBy[0][0]
			headers := v1.ReplyHeaders(&v1.Transport{}, ref.Envelope.SenderID, server)
			payload, err := v1.EncodeReply(req, headers, ref.Envelope.Time, []byte(ref.Message))
			if err != nil {
				t.Fatal(err)
			}
			same(t, "reply payload", payload, []byte(c.Payload))
		})
	}
}

// TestFederatedReplyHeaders checks the headers Choria's server puts on the
// reply to a request relayed by a federation broker: the federation
// header and the hops so far are copied and the node adds its own.
func TestFederatedReplyHeaders(t *testing.T) {
	request := &v1.Transport{Headers: v1.TransportHeaders{
		ReplyTo:    "fed.reply.x",
		SeenBy:     [][3]string{{"nats://a:4222", "fedbroker", "nats://b:4222"}},
		Federation: &v1.FederationHeader{RequestID: "abc", ReplyTo: "mcollective.reply.x.abc", Targets: []string{"mcollective.node.n1"}},
	}}
	got := v1.ReplyHeaders(request, "n1", "nats://b:4222")
	want := v1.TransportHeaders{
		MCSender:   "n1",
		SeenBy:     [][3]string{{"nats://a:4222", "fedbroker", "nats://b:4222"}, {"nats://b:4222", "n1", "nats://b:4222"}},
		Federation: &v1.FederationHeader{RequestID: "abc", ReplyTo: "mcollective.reply.x.abc", Targets: []string{"mcollective.node.n1"}},
	}
	if g, w := mustJSON(t, got), mustJSON(t, want); !bytes.Equal(g, w) {
		t.Errorf("federated reply headers = %s, want %s", g, w)
	}
	plain := v1.ReplyHeaders(&v1.Transport{Headers: v1.TransportHeaders{SeenBy: request.Headers.SeenBy}}, "n1", "nats://b:4222")
	if plain.Federation != nil || len(plain.SeenBy) != 1 {
		t.Errorf("unfederated reply headers = %+v, want only the node's own hop", plain)
	}
}

func TestDecodeErrors(t *testing.T) {
	valid := loadCaptured(t, "direct_rpc_request_get_fact.json")["direct_rpc_request_get_fact.json"].Payload
	tr, _ := v1.DecodeTransport([]byte(valid))
	sreq, _ := tr.SecureRequest()
	reqWith := func(edit func(r *v1.Request)) string {
		r, _ := sreq.Request()
		edit(r)
		s := *sreq
		s.Message = string(mustJSON(t, r))
		t2 := *tr
		t2.Data = mustJSON(t, s)
		return string(mustJSON(t, t2))
	}
	cases := []struct {
		name    string
		payload string
		want    error
	}{
		{"not JSON", "{", v1.ErrInvalidTransport},
		{"wrong transport protocol", `{"protocol":"choria:transport:2","data":"e30="}`, v1.ErrInvalidTransport},
		{"no data", `{"protocol":"choria:transport:1"}`, v1.ErrInvalidTransport},
		{"data not base64", `{"protocol":"choria:transport:1","data":"!!!"}`, v1.ErrInvalidTransport},
		{"secure request not JSON", `{"protocol":"choria:transport:1","data":"bm90IGpzb24="}`, v1.ErrInvalidSecureRequest},
		{"secure request wrong protocol", `{"protocol":"choria:transport:1","data":"eyJwcm90b2NvbCI6InguMSIsIm1lc3NhZ2UiOiJ7fSJ9"}`, v1.ErrInvalidSecureRequest},
		{"short request id", reqWith(func(r *v1.Request) { r.Envelope.RequestID = "abc" }), v1.ErrInvalidRequest},
		{"no caller", reqWith(func(r *v1.Request) { r.Envelope.CallerID = "" }), v1.ErrInvalidRequest},
		{"zero ttl", reqWith(func(r *v1.Request) { r.Envelope.TTL = 0 }), v1.ErrInvalidRequest},
		{"wrong request protocol", reqWith(func(r *v1.Request) { r.Protocol = "choria:request:2" }), v1.ErrInvalidRequest},
		{"transport nested too deeply", `{"protocol":"choria:transport:1","data":"e30=","headers":{"seen-by":` + strings.Repeat("[", 20) + strings.Repeat("]", 20) + `}}`, protocol.ErrTooDeep},
		{"too many hops", `{"protocol":"choria:transport:1","data":"e30=","headers":{"seen-by":[` + strings.Repeat(`["a","b","c"],`, v1.MaxHops) + `["a","b","c"]]}}`, v1.ErrInvalidTransport},
		{"too many federation targets", `{"protocol":"choria:transport:1","data":"e30=","headers":{"federation":{"target":[` + strings.Repeat(`"x",`, v1.MaxFederationTargets) + `"x"]}}}`, v1.ErrInvalidTransport},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeAll([]byte(tc.payload))
			if !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestReplyHashChecked(t *testing.T) {
	c := loadCaptured(t, "replies/rpc_reply_ping.json")["rpc_reply_ping.json"]
	tr, _ := v1.DecodeTransport([]byte(c.Payload))
	var s v1.SecureReply
	if err := json.Unmarshal(tr.Data, &s); err != nil {
		t.Fatal(err)
	}
	s.Message = strings.Replace(s.Message, "ping", "pong", 1)
	tr.Data = mustJSON(t, s)
	if _, err := tr.SecureReply(); !errors.Is(err, v1.ErrHashMismatch) {
		t.Errorf("err = %v, want ErrHashMismatch", err)
	}
}

func decodeAll(b []byte) (*v1.Request, error) {
	tr, err := v1.DecodeTransport(b)
	if err != nil {
		return nil, err
	}
	sreq, err := tr.SecureRequest()
	if err != nil {
		return nil, err
	}
	return sreq.Request()
}

func FuzzDecodeRequest(f *testing.F) {
	for _, pattern := range []string{"*.json", "replies/*.json"} {
		for _, c := range loadCaptured(f, pattern) {
			f.Add([]byte(c.Payload))
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := decodeAll(b)
		if err != nil {
			for _, sentinel := range []error{v1.ErrInvalidTransport, v1.ErrInvalidSecureRequest, v1.ErrInvalidRequest} {
				if errors.Is(err, sentinel) {
					return
				}
			}
			t.Fatalf("error %v wraps no sentinel", err)
		}
		if len(req.Envelope.RequestID) != 32 || req.Envelope.TTL <= 0 {
			t.Fatalf("accepted an invalid envelope %+v", req.Envelope)
		}
		req.Body()
	})
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func same(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Errorf("%s re-encodes differently:\n got %s\nwant %s", what, got, want)
	}
}
