package ddl

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/agent-host/agent-host/protocol"
)

func TestSetOutputDefaults(t *testing.T) {
	withDefaults, _, err := parseAction([]byte(`{"action":"a","output":{
		"message":{"display_as":"Message","default":"none"},
		"count":{"display_as":"Count","default":0},
		"nothing":{"display_as":"Nothing","default":null},
		"tags":{"display_as":"Tags","default":["x"]}
	}}`))
	if err != nil {
		t.Fatal(err)
	}
	without, _, err := parseAction([]byte(`{"action":"b","output":{"m":{"display_as":"M"}}}`))
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		action  *Action
		data    string
		want    string
		wantErr error
	}{
		{name: "all defaults added, sorted", action: withDefaults, data: `{}`, want: `{"count":0,"message":"none","tags":["x"]}`},
		{name: "null becomes {} with defaults", action: withDefaults, data: `null`, want: `{"count":0,"message":"none","tags":["x"]}`},
		{name: "present keys kept, even null", action: withDefaults, data: `{"message":null,"count":7,"tags":[]}`, want: `{"message":null,"count":7,"tags":[]}`},
		{name: "agent keys kept beside defaults", action: withDefaults, data: `{"extra":12345678901234567890,"message":"hi"}`, want: `{"count":0,"extra":12345678901234567890,"message":"hi","tags":["x"]}`},
		{name: "no defaults leaves bytes alone", action: without, data: ` {"z":1, "a":2.50} `, want: `{"z":1, "a":2.50}`},
		{name: "no defaults, null becomes {}", action: without, data: `null`, want: `{}`},
		{name: "absent data", action: withDefaults, data: ``, wantErr: protocol.ErrReplyDataFormat},
		{name: "array", action: withDefaults, data: `[1]`, wantErr: protocol.ErrReplyDataFormat},
		{name: "string", action: without, data: `"ok"`, wantErr: protocol.ErrReplyDataFormat},
		{name: "broken object without defaults", action: without, data: `{"a":`, wantErr: protocol.ErrReplyDataFormat},
		{name: "broken object with defaults", action: withDefaults, data: `{"a":`, wantErr: protocol.ErrReplyDataFormat},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.action.SetOutputDefaults(json.RawMessage(tt.data))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got %v, want %v", err, tt.wantErr)
				}
				if err.Error() != "reply data is in the wrong format" {
					t.Errorf("message %q is not Choria's", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}
