package protocol_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/agent-host/agent-host/protocol"
)

func TestDecodeRPCRequest(t *testing.T) {
	cases := []struct {
		name, body, wantData string
		wantErr              bool
	}{
		{"with data", `{"agent":"parrot","action":"echo","data":{"message":"hi"}}`, `{"message":"hi"}`, false},
		{"no data", `{"agent":"parrot","action":"echo"}`, `{}`, false},
		{"null data", `{"agent":"parrot","action":"echo","data":null}`, `{}`, false},
		{"array data", `{"agent":"parrot","action":"echo","data":[1]}`, "", true},
		{"string data", `{"agent":"parrot","action":"echo","data":"x"}`, "", true},
		{"bad agent name", `{"agent":"Parrot!","action":"echo"}`, "", true},
		{"empty action", `{"agent":"parrot","action":""}`, "", true},
		{"not JSON", `ping`, "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := protocol.DecodeRPCRequest([]byte(tc.body))
			if tc.wantErr {
				if !errors.Is(err, protocol.ErrInvalidRPCRequest) {
					t.Fatalf("err = %v, want ErrInvalidRPCRequest", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(r.Data) != tc.wantData {
				t.Errorf("data = %s, want %s", r.Data, tc.wantData)
			}
		})
	}
}

func TestDecodeAgentReply(t *testing.T) {
	cases := []struct {
		name, body string
		want       protocol.AgentReply
		wantErr    error
	}{
		{"full", `{"statuscode":1,"statusmsg":"nope","data":{"a":1}}`, protocol.AgentReply{Statuscode: 1, Statusmsg: "nope", Data: json.RawMessage(`{"a":1}`)}, nil},
		{"defaults", `{"data":{}}`, protocol.AgentReply{Statusmsg: "OK", Data: json.RawMessage(`{}`)}, nil},
		{"py-mco-agent style", `{"statuscode": 0, "statusmsg": "", "data": {"message": "x"}}`, protocol.AgentReply{Data: json.RawMessage(`{"message": "x"}`)}, nil},
		{"action override", `{"action":"other","data":null}`, protocol.AgentReply{Action: "other", Statusmsg: "OK", Data: json.RawMessage(`{}`)}, nil},
		{"no data", `{"statuscode":0}`, protocol.AgentReply{}, protocol.ErrReplyDataFormat},
		{"array data", `{"data":[]}`, protocol.AgentReply{}, protocol.ErrReplyDataFormat},
		{"empty file", ``, protocol.AgentReply{}, protocol.ErrInvalidAgentReply},
		{"statuscode out of range", `{"statuscode":256,"data":{}}`, protocol.AgentReply{}, protocol.ErrInvalidAgentReply},
		{"negative statuscode", `{"statuscode":-1,"data":{}}`, protocol.AgentReply{}, protocol.ErrInvalidAgentReply},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := protocol.DecodeAgentReply([]byte(tc.body))
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Action != tc.want.Action || r.Statuscode != tc.want.Statuscode || r.Statusmsg != tc.want.Statusmsg || string(r.Data) != string(tc.want.Data) {
				t.Errorf("reply = %+v (data %s), want %+v (data %s)", r, r.Data, tc.want, tc.want.Data)
			}
		})
	}
	_, err := protocol.DecodeAgentReply([]byte(""))
	if want := "failed to decode reply json: unexpected end of JSON input"; err == nil || err.Error() != want {
		t.Errorf("empty reply error = %v, want Choria's %q", err, want)
	}
}

func FuzzDecodeAgentReply(f *testing.F) {
	for _, s := range []string{`{"statuscode":0,"statusmsg":"OK","data":{}}`, `{"data":null}`, `{}`, ``, `[]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := protocol.DecodeAgentReply(b)
		if err != nil {
			if !errors.Is(err, protocol.ErrInvalidAgentReply) && !errors.Is(err, protocol.ErrReplyDataFormat) {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			return
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(r.Data, &obj); err != nil {
			t.Fatalf("accepted data that is not an object: %s", r.Data)
		}
	})
}

func FuzzDecodeRPCRequest(f *testing.F) {
	f.Add([]byte(`{"agent":"rpcutil","action":"get_fact","data":{"fact":"os.family"}}`))
	f.Add([]byte(`{"agent":"a","action":"b"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := protocol.DecodeRPCRequest(b)
		if err != nil {
			if !errors.Is(err, protocol.ErrInvalidRPCRequest) {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			return
		}
		var obj map[string]json.RawMessage
		if r.Agent == "" || r.Action == "" || json.Unmarshal(r.Data, &obj) != nil {
			t.Fatalf("accepted %+v (data %s)", r, r.Data)
		}
	})
}

func TestCheckDepth(t *testing.T) {
	cases := []struct {
		name    string
		doc     string
		max     int
		wantErr bool
	}{
		{"flat", `{"a":1}`, 1, false},
		{"at the limit", `{"a":[{"b":[]}]}`, 4, false},
		{"over the limit", `{"a":[{"b":[[]]}]}`, 4, true},
		{"brackets in strings do not count", `{"a":"[[[[{{{{"}`, 1, false},
		{"escaped quotes stay in the string", `{"a":"\"[[[["}`, 1, false},
		{"escaped backslash ends the escape", `{"a":"\\"}`, 1, false},
		{"escaped backslash before a bracket outside", `["\\",[[]]]`, 2, true},
		{"deep arrays", strings.Repeat("[", 600_000) + strings.Repeat("]", 600_000), protocol.MaxDataDepth, true},
		{"deep objects", strings.Repeat(`{"a":`, 200) + "1" + strings.Repeat("}", 200), protocol.MaxDataDepth, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := protocol.CheckDepth([]byte(tc.doc), tc.max)
			if (err != nil) != tc.wantErr || (err != nil && !errors.Is(err, protocol.ErrTooDeep)) {
				t.Errorf("CheckDepth = %v, want error %v", err, tc.wantErr)
			}
		})
	}
}

// FuzzCheckDepth checks that, on documents encoding/json accepts,
// CheckDepth refuses exactly those nested deeper than the limit.
func FuzzCheckDepth(f *testing.F) {
	f.Add(`{"a":[1,{"b":"[x"}]}`, uint8(3))
	f.Add(`"\\"`, uint8(1))
	f.Fuzz(func(t *testing.T, doc string, max uint8) {
		err := protocol.CheckDepth([]byte(doc), int(max))
		if err != nil && !errors.Is(err, protocol.ErrTooDeep) {
			t.Fatalf("error %v does not wrap ErrTooDeep", err)
		}
		var v any
		if json.Unmarshal([]byte(doc), &v) != nil {
			return
		}
		if got := depthOf(v); (got > int(max)) != (err != nil) {
			t.Fatalf("protocol.CheckDepth(%q, %d) = %v, but the document is %d deep", doc, max, err, got)
		}
	})
}

func depthOf(v any) int {
	deepest := 0
	switch x := v.(type) {
	case []any:
		for _, e := range x {
			deepest = max(deepest, depthOf(e))
		}
		return deepest + 1
	case map[string]any:
		for _, e := range x {
			deepest = max(deepest, depthOf(e))
		}
		return deepest + 1
	}
	return 0
}
