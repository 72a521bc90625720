package main

import (
	"strings"
	"testing"

	"github.com/agent-host/agent-host/protocol/ddl"
)

const typedDDL = `{"$schema":"https://choria.io/schemas/mcorpc/ddl/v1/agent.json",
 "metadata":{"name":"typed","description":"x","author":"x","license":"x","version":"1","url":"x","timeout":2,"provider":"external"},
 "actions":[{"action":"go","description":"x","display":"always","input":{
   "count":{"prompt":"c","description":"c","type":"integer","optional":true},
   "ratio":{"prompt":"r","description":"r","type":"number","optional":true},
   "on":{"prompt":"o","description":"o","type":"boolean","optional":true},
   "opts":{"prompt":"o","description":"o","type":"hash","optional":true},
   "name":{"prompt":"n","description":"n","type":"string","optional":true}},"output":{}}]}`

// TestParseInputs: with a DDL, inputs take its types and a bad value says
// so in the user's words; without one they are typed by how they look,
// so that count=3 is still sent as a number.
func TestParseInputs(t *testing.T) {
	d, err := ddl.Parse([]byte(typedDDL))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		d       *ddl.DDL
		args    []string
		want    string
		wantErr string
	}{
		{"typed by the DDL", d, []string{"count=3", "ratio=0.5", "on=yes", `opts={"a":1}`, "name=007"}, `{"count":3,"name":"007","on":true,"opts":{"a":1},"ratio":0.5}`, ""},
		{"undeclared input is text", d, []string{"other=3"}, `{"other":"3"}`, ""},
		{"not an integer", d, []string{"count=abc"}, "", `input count: "abc" is not an integer`},
		{"not a number", d, []string{"ratio=half"}, "", `input ratio: "half" is not a number`},
		{"not a boolean", d, []string{"on=maybe"}, "", `input on: "maybe" is not a boolean: use true or false`},
		{"not a hash", d, []string{"opts=a:1"}, "", `input opts: "a:1" is not JSON; a hash input is written as JSON, such as {"a":1}`},
		{"not key=value", d, []string{"count"}, "", `input "count" is not key=value`},
		{"no DDL", nil, []string{"count=3", "neg=-2", "on=true", "version=1.10", "zip=01234", `list=[1,"a"]`, "text=hello"},
			`{"count":3,"list":[1,"a"],"neg":-2,"on":true,"text":"hello","version":"1.10","zip":"01234"}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, guessed, err := parseInputs(tc.args, tc.d, "go")
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "strconv") {
					t.Errorf("error %q leaks Go internals", err)
				}
				return
			}
			if err != nil || string(got) != tc.want {
				t.Errorf("parseInputs = %s, %v; want %s", got, err, tc.want)
			}
			if tc.d == nil && strings.Join(guessed, ", ") != "count as a number, neg as a number, on as a boolean, list as an array" {
				t.Errorf("guessed %q: want each input sent as other than text named", guessed)
			}
		})
	}
}
