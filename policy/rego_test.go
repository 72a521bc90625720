package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"
)

const regoHeader = "package io.choria.mcorpc.authpolicy\n\n"

// sampleInput is a request as the host gives it to an authorizer.
func sampleInput() *Input {
	return &Input{
		Agent:      "myco",
		Action:     "deploy",
		CallerID:   "choria=alice.mcollective",
		Collective: "production",
		Data:       json.RawMessage(`{"component":"web","count":3,"force":false}`),
		TTL:        60,
		Time:       time.Date(2025, 1, 22, 15, 52, 40, 0, time.UTC),
		Facts:      json.RawMessage(`{"os":{"family":"RedHat"},"role":"web"}`),
		Classes:    []string{"common", "webserver"},
		Agents:     []string{"myco", "rpcutil"},
	}
}

// writeFile writes a file at once, as an editor that saves in place does.
func writeFile(tb testing.TB, dir, name, content string) string {
	tb.Helper()
	file := filepath.Join(dir, name)
	if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
		tb.Fatal(err)
	}
	return file
}

// replaceFile writes a file beside it and renames it into place, as most
// editors and configuration tools do.
func replaceFile(tb testing.TB, dir, name, content string) {
	tb.Helper()
	tmp, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := tmp.WriteString(content); err != nil {
		tb.Fatal(err)
	}
	if err := tmp.Close(); err != nil {
		tb.Fatal(err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
		tb.Fatal(err)
	}
}

func newTestRego(tb testing.TB, o RegoOptions) *Rego {
	tb.Helper()
	r := NewRego(o)
	tb.Cleanup(func() { _ = r.Close() })
	return r
}

// record is one captured log record with its attributes as strings.
type record struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

// recorder is a slog.Handler that keeps every record at or above level.
type recorder struct {
	level slog.Level
	mu    sync.Mutex
	recs  []record
}

func (r *recorder) Enabled(_ context.Context, l slog.Level) bool { return l >= r.level }

func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	attrs := map[string]string{}
	rec.Attrs(func(a slog.Attr) bool {
		attrs[a.Key] = a.Value.String()
		return true
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, record{rec.Level, rec.Message, attrs})
	return nil
}

func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

// find returns the records with message msg and, when file is not empty,
// attribute policy = file.
func (r *recorder) find(msg, file string) []record {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []record
	for _, rec := range r.recs {
		if rec.msg == msg && (file == "" || rec.attrs["policy"] == file) {
			out = append(out, rec)
		}
	}
	return out
}

const patience = 10 * time.Second

func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	for deadline := time.Now().Add(patience); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			tb.Fatalf("%s did not happen within %s", what, patience)
		}
	}
}

// TestRegoInputDocument pins the input document, as JSON and as the value
// OPA gives policies, against what go-choria's regoInputs produces for the
// same request.
func TestRegoInputDocument(t *testing.T) {
	tests := []struct {
		name    string
		in      func(*Input)
		want    string
		wantErr string
	}{{
		name: "full request",
		in:   func(*Input) {},
		want: `{"action":"deploy","agent":"myco","agents":["myco","rpcutil"],"callerid":"choria=alice.mcollective",` +
			`"classes":["common","webserver"],"collective":"production","data":{"component":"web","count":3,"force":false},` +
			`"facts":{"os":{"family":"RedHat"},"role":"web"},"provision_mode":false,"time":"2025-01-22T15:52:40Z","ttl":60}`,
	}, {
		// Choria sends [] for no classes and {} for no facts; OPA would
		// turn nil lists and maps into them too, JSON into null.
		name: "nothing known of the node",
		in: func(in *Input) {
			in.Data, in.Facts, in.Classes, in.Agents = nil, nil, nil, nil
			in.ProvisionMode = true
		},
		want: `{"action":"deploy","agent":"myco","agents":[],"callerid":"choria=alice.mcollective",` +
			`"classes":[],"collective":"production","data":{},` +
			`"facts":{},"provision_mode":true,"time":"2025-01-22T15:52:40Z","ttl":60}`,
	}, {
		name: "null data and facts",
		in:   func(in *Input) { in.Data, in.Facts = json.RawMessage(`null`), json.RawMessage(`null`) },
		want: `{"action":"deploy","agent":"myco","agents":["myco","rpcutil"],"callerid":"choria=alice.mcollective",` +
			`"classes":["common","webserver"],"collective":"production","data":{},` +
			`"facts":{},"provision_mode":false,"time":"2025-01-22T15:52:40Z","ttl":60}`,
	}, {
		name: "data and facts that are not objects",
		in:   func(in *Input) { in.Data, in.Facts = json.RawMessage(`[1,2]`), json.RawMessage(`{"os":`) },
		want: `{"action":"deploy","agent":"myco","agents":["myco","rpcutil"],"callerid":"choria=alice.mcollective",` +
			`"classes":["common","webserver"],"collective":"production","data":{},` +
			`"facts":{},"provision_mode":false,"time":"2025-01-22T15:52:40Z","ttl":60}`,
		wantErr: "decoding the request data: json: cannot unmarshal array into Go value of type map[string]interface {}\n" +
			"decoding the facts: unexpected end of JSON input",
	}, {
		// Choria's request time is time.Unix in the server's zone.
		name: "time with a zone and nanoseconds",
		in: func(in *Input) {
			in.Time = time.Date(2025, 1, 22, 16, 52, 40, 5, time.FixedZone("CET", 3600))
		},
		want: `{"action":"deploy","agent":"myco","agents":["myco","rpcutil"],"callerid":"choria=alice.mcollective",` +
			`"classes":["common","webserver"],"collective":"production","data":{"component":"web","count":3,"force":false},` +
			`"facts":{"os":{"family":"RedHat"},"role":"web"},"provision_mode":false,"time":"2025-01-22T16:52:40.000000005+01:00","ttl":60}`,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := sampleInput()
			tt.in(in)
			doc, err := RegoInput(in)
			if tt.wantErr == "" && err != nil {
				t.Fatalf("RegoInput: %v", err)
			}
			if tt.wantErr != "" && (err == nil || err.Error() != tt.wantErr) {
				t.Fatalf("RegoInput error = %v, want %q", err, tt.wantErr)
			}
			got, err := json.Marshal(doc)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Fatalf("input JSON\n got %s\nwant %s", got, tt.want)
			}
			// What OPA makes of the Go document is what it makes of
			// the JSON: printing the document shows what policies see.
			opa, err := ast.InterfaceToValue(doc)
			if err != nil {
				t.Fatal(err)
			}
			want := ast.MustParseTerm(tt.want).Value
			if opa.Compare(want) != 0 {
				t.Fatalf("OPA's input\n got %s\nwant %s", opa, want)
			}
		})
	}
}

func TestRegoAuthorize(t *testing.T) {
	tests := []struct {
		name string
		// files are written into Dir; "default.rego" unless named.
		files map[string]string
		v0    bool
		in    func(*Input)
		// want is the file that decides, and whether it allows.
		want        string
		wantAllowed bool
		wantErr     error
		// wantMsg is the error's exact text, with DIR for Dir.
		wantMsg string
	}{{
		name:        "allow by caller",
		files:       map[string]string{"default.rego": regoHeader + "default allow := false\n\nallow if input.callerid == \"choria=alice.mcollective\"\n"},
		in:          func(*Input) {},
		want:        "default.rego",
		wantAllowed: true,
	}, {
		name:  "deny another caller",
		files: map[string]string{"default.rego": regoHeader + "default allow := false\n\nallow if input.callerid == \"choria=alice.mcollective\"\n"},
		in:    func(in *Input) { in.CallerID = "choria=bob.mcollective" },
		want:  "default.rego",
	}, {
		name: "agent and action",
		files: map[string]string{"default.rego": regoHeader + "default allow := false\n\n" +
			"allow if {\n\tinput.agent == \"myco\"\n\tinput.action in {\"deploy\", \"status\"}\n}\n"},
		in:          func(*Input) {},
		want:        "default.rego",
		wantAllowed: true,
	}, {
		name: "an action not listed",
		files: map[string]string{"default.rego": regoHeader + "default allow := false\n\n" +
			"allow if {\n\tinput.agent == \"myco\"\n\tinput.action in {\"deploy\", \"status\"}\n}\n"},
		in:   func(in *Input) { in.Action = "destroy" },
		want: "default.rego",
	}, {
		name:        "argument allows",
		files:       map[string]string{"default.rego": regoHeader + "default allow := false\n\nallow if {\n\tinput.data.component == \"web\"\n\tinput.data.count <= 3\n\tnot input.data.force\n}\n"},
		in:          func(*Input) {},
		want:        "default.rego",
		wantAllowed: true,
	}, {
		name:  "argument denies",
		files: map[string]string{"default.rego": regoHeader + "default allow := false\n\nallow if {\n\tinput.data.component == \"web\"\n\tinput.data.count <= 3\n\tnot input.data.force\n}\n"},
		in:    func(in *Input) { in.Data = json.RawMessage(`{"component":"web","count":4,"force":false}`) },
		want:  "default.rego",
	}, {
		name:  "data that does not decode is an empty object",
		files: map[string]string{"default.rego": regoHeader + "default allow := false\n\nallow if count(input.data) == 0\n"},
		in:    func(in *Input) { in.Data = json.RawMessage(`"not an object"`) },
		want:  "default.rego", wantAllowed: true,
	}, {
		name:        "ttl within bound",
		files:       map[string]string{"default.rego": regoHeader + "default allow := false\n\nallow if input.ttl <= 60\n"},
		in:          func(*Input) {},
		want:        "default.rego",
		wantAllowed: true,
	}, {
		name:  "ttl beyond bound",
		files: map[string]string{"default.rego": regoHeader + "default allow := false\n\nallow if input.ttl <= 60\n"},
		in:    func(in *Input) { in.TTL = 61 },
		want:  "default.rego",
	}, {
		name:  "collective",
		files: map[string]string{"default.rego": regoHeader + "default allow := false\n\nallow if input.collective == \"production\"\n"},
		in:    func(in *Input) { in.Collective = "staging" },
		want:  "default.rego",
	}, {
		name:        "time is the JSON string",
		files:       map[string]string{"default.rego": regoHeader + "default allow := false\n\nallow if input.time == \"2025-01-22T15:52:40Z\"\n"},
		in:          func(*Input) {},
		want:        "default.rego",
		wantAllowed: true,
	}, {
		name:        "facts",
		files:       map[string]string{"default.rego": regoHeader + "default allow := false\n\nallow if {\n\tinput.facts.os.family == \"RedHat\"\n\tinput.facts.role == \"web\"\n}\n"},
		in:          func(*Input) {},
		want:        "default.rego",
		wantAllowed: true,
	}, {
		name:  "facts that differ",
		files: map[string]string{"default.rego": regoHeader + "default allow := false\n\nallow if {\n\tinput.facts.os.family == \"RedHat\"\n\tinput.facts.role == \"web\"\n}\n"},
		in:    func(in *Input) { in.Facts = json.RawMessage(`{"os":{"family":"Debian"},"role":"web"}`) },
		want:  "default.rego",
	}, {
		name:        "classes",
		files:       map[string]string{"default.rego": regoHeader + "default allow := false\n\nallow if \"webserver\" in input.classes\n"},
		in:          func(*Input) {},
		want:        "default.rego",
		wantAllowed: true,
	}, {
		// [] rather than null: the rule is false, not an error.
		name:  "no classes",
		files: map[string]string{"default.rego": regoHeader + "default allow := false\n\nallow if \"webserver\" in input.classes\n"},
		in:    func(in *Input) { in.Classes = nil },
		want:  "default.rego",
	}, {
		name:        "agents",
		files:       map[string]string{"default.rego": regoHeader + "default allow := false\n\nallow if input.agents[_] == \"rpcutil\"\n"},
		in:          func(*Input) {},
		want:        "default.rego",
		wantAllowed: true,
	}, {
		name:  "an agent not installed",
		files: map[string]string{"default.rego": regoHeader + "default allow := false\n\nallow if input.agents[_] == \"puppet\"\n"},
		in:    func(*Input) {},
		want:  "default.rego",
	}, {
		name:        "provision mode",
		files:       map[string]string{"default.rego": regoHeader + "default allow := false\n\nallow if input.provision_mode\n"},
		in:          func(in *Input) { in.ProvisionMode = true },
		want:        "default.rego",
		wantAllowed: true,
	}, {
		name:  "not in provision mode",
		files: map[string]string{"default.rego": regoHeader + "default allow := false\n\nallow if input.provision_mode\n"},
		in:    func(*Input) {},
		want:  "default.rego",
	}, {
		// Choria's multiple.rego: bodies are alternatives.
		name: "several bodies",
		files: map[string]string{"default.rego": regoHeader + "default allow = false\n\n" +
			"allow if {\n   input.agent = \"ginkgo\"\n   input.action = \"boop\"\n}\n\n" +
			"allow if {\n   input.agent = \"myco\"\n   input.action = \"deploy\"\n}\n"},
		in:          func(*Input) {},
		want:        "default.rego",
		wantAllowed: true,
	}, {
		name: "the agent's file before default.rego",
		files: map[string]string{
			"default.rego": regoHeader + "default allow := false\n",
			"myco.rego":    regoHeader + "default allow := false\n\nallow if input.agent == \"myco\"\n",
		},
		in:          func(*Input) {},
		want:        "myco.rego",
		wantAllowed: true,
	}, {
		name: "another agent's file is not used",
		files: map[string]string{
			"default.rego": regoHeader + "default allow := false\n",
			"myco.rego":    regoHeader + "default allow := true\n",
		},
		in:   func(in *Input) { in.Agent = "other" },
		want: "default.rego",
	}, {
		// One file decides: default.rego's rules are not merged in.
		name: "no merging with default.rego",
		files: map[string]string{
			"default.rego": regoHeader + "default allow := false\n\nallow if input.callerid == \"choria=alice.mcollective\"\n",
			"myco.rego":    regoHeader + "default allow := false\n",
		},
		in:   func(*Input) {},
		want: "myco.rego",
	}, {
		name:    "no policy",
		files:   map[string]string{"other.rego": regoHeader + "default allow := true\n"},
		in:      func(*Input) {},
		wantErr: ErrNoPolicy,
		wantMsg: "no policy DIR/default.rego found for myco in DIR",
	}, {
		name:    "parse error",
		files:   map[string]string{"default.rego": regoHeader + "default allow := false\n\nallow if {\n\tinput.agent == \"myco\"\n"},
		in:      func(*Input) {},
		want:    "default.rego",
		wantErr: ErrPolicyInvalid,
		wantMsg: "rego policy DIR/default.rego does not compile: DIR/default.rego:7: rego_parse_error: unexpected eof token",
	}, {
		name:    "compile error",
		files:   map[string]string{"default.rego": regoHeader + "default allow := false\n\nallow if x == 1\n"},
		in:      func(*Input) {},
		want:    "default.rego",
		wantErr: ErrPolicyInvalid,
		wantMsg: "rego policy DIR/default.rego does not compile: DIR/default.rego:5: rego_unsafe_var_error: var x is unsafe",
	}, {
		name:    "empty file",
		files:   map[string]string{"default.rego": ""},
		in:      func(*Input) {},
		want:    "default.rego",
		wantErr: ErrPolicyInvalid,
		wantMsg: "rego policy DIR/default.rego does not compile: DIR/default.rego:0: rego_parse_error: empty module",
	}, {
		name:    "v0 syntax without the opt-in",
		files:   map[string]string{"default.rego": regoHeader + "default allow = false\n\nallow {\n\tinput.agent == \"myco\"\n}\n"},
		in:      func(*Input) {},
		want:    "default.rego",
		wantErr: ErrPolicyInvalid,
		wantMsg: "rego policy DIR/default.rego does not compile: DIR/default.rego:5: rego_parse_error: `if` keyword is required before rule body; " +
			"it is written in OPA's pre-1.0 (v0) syntax, which Choria no longer reads: add `if` before each rule body " +
			"(and `contains` to partial set rules; `opa fmt --write --v0-v1 FILE` rewrites it), " +
			"or set plugin.agent_host.rego_v0_compatible = true",
	}, {
		name:        "v0 syntax with the opt-in",
		files:       map[string]string{"default.rego": regoHeader + "default allow = false\n\nallow {\n\tinput.agent == \"myco\"\n}\n"},
		v0:          true,
		in:          func(*Input) {},
		want:        "default.rego",
		wantAllowed: true,
	}, {
		name:  "v0 syntax with the opt-in denies",
		files: map[string]string{"default.rego": regoHeader + "default allow = false\n\nallow {\n\tinput.agent == \"myco\"\n}\n"},
		v0:    true,
		in:    func(in *Input) { in.Agent = "other" },
		want:  "default.rego",
	}, {
		name:        "v1 syntax with the opt-in",
		files:       map[string]string{"default.rego": regoHeader + "default allow := false\n\nallow if input.agent == \"myco\"\n"},
		v0:          true,
		in:          func(*Input) {},
		want:        "default.rego",
		wantAllowed: true,
	}, {
		name:    "neither v1 nor v0 with the opt-in",
		files:   map[string]string{"default.rego": regoHeader + "allow if {\n\tinput.agent ==\n}\n"},
		v0:      true,
		in:      func(*Input) {},
		want:    "default.rego",
		wantErr: ErrPolicyInvalid,
		wantMsg: "rego policy DIR/default.rego does not compile: DIR/default.rego:5: rego_parse_error: unexpected } token",
	}, {
		name:    "allow undefined",
		files:   map[string]string{"default.rego": regoHeader + "allow if input.agent == \"other\"\n"},
		in:      func(*Input) {},
		want:    "default.rego",
		wantErr: ErrPolicyResult,
		wantMsg: "invalid result from rego policy DIR/default.rego: expected 1 received 0: allow is undefined (declare `default allow := false`)",
	}, {
		name:    "another package",
		files:   map[string]string{"default.rego": "package io.choria.aaasvc\n\ndefault allow := true\n"},
		in:      func(*Input) {},
		want:    "default.rego",
		wantErr: ErrPolicyResult,
		wantMsg: "invalid result from rego policy DIR/default.rego: expected 1 received 0: allow is undefined " +
			"(the policy's package is io.choria.aaasvc, and data.io.choria.mcorpc.authpolicy.allow is queried)",
	}, {
		name:    "a string",
		files:   map[string]string{"default.rego": regoHeader + "allow := \"yes\"\n"},
		in:      func(*Input) {},
		want:    "default.rego",
		wantErr: ErrPolicyResult,
		wantMsg: "did not receive a boolean for 'allow' from rego evaluation of DIR/default.rego: received \"yes\"",
	}, {
		name:    "a set",
		files:   map[string]string{"default.rego": regoHeader + "allow contains input.agent\n"},
		in:      func(*Input) {},
		want:    "default.rego",
		wantErr: ErrPolicyResult,
		wantMsg: "did not receive a boolean for 'allow' from rego evaluation of DIR/default.rego: received [\"myco\"]",
	}, {
		name:    "evaluation error",
		files:   map[string]string{"default.rego": regoHeader + "allow := true if input.ttl > 0\n\nallow := false if input.collective == \"production\"\n"},
		in:      func(*Input) {},
		want:    "default.rego",
		wantErr: &topdown.Error{Code: topdown.ConflictErr},
		wantMsg: "could not evaluate rego policy DIR/default.rego: DIR/default.rego:5: eval_conflict_error: " +
			"rule data.io.choria.mcorpc.authpolicy.allow produced conflicting values:\n" +
			"  true at DIR/default.rego:3\n  false at DIR/default.rego:5",
	}, {
		name:    "agent name with a path",
		files:   map[string]string{"default.rego": regoHeader + "default allow := true\n"},
		in:      func(in *Input) { in.Agent = "../rego/default" },
		wantMsg: `policy: invalid agent name "../rego/default"`,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, src := range tt.files {
				writeFile(t, dir, name, src)
			}
			r := newTestRego(t, RegoOptions{Dir: dir, V0Compatible: tt.v0})
			in := sampleInput()
			tt.in(in)
			d, err := r.Authorize(t.Context(), in)

			wantPolicy := ""
			if tt.want != "" {
				wantPolicy = filepath.Join(dir, tt.want)
			}
			if d.Policy != wantPolicy || d.Allowed != tt.wantAllowed {
				t.Errorf("decision %+v, want Policy %q and Allowed %v", d, wantPolicy, tt.wantAllowed)
			}
			if tt.wantMsg == "" {
				if err != nil {
					t.Fatalf("error: %v", err)
				}
				wantReason := "denied by " + wantPolicy
				if tt.wantAllowed {
					wantReason = "allowed by " + wantPolicy
				}
				if d.Reason != wantReason {
					t.Errorf("reason %q, want %q", d.Reason, wantReason)
				}
				return
			}
			wantMsg := strings.ReplaceAll(tt.wantMsg, "DIR", dir)
			if err == nil || err.Error() != wantMsg {
				t.Fatalf("error\n got %v\nwant %s", err, wantMsg)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("error %v is not %v", err, tt.wantErr)
			}
			if d.Reason != err.Error() {
				t.Errorf("reason %q, want the error", d.Reason)
			}
		})
	}
}

// TestRegoCompileErrorKeepsOPAErrors lets callers find OPA's errors, with
// their locations, in a compile error.
func TestRegoCompileErrorKeepsOPAErrors(t *testing.T) {
	dir := t.TempDir()
	file := writeFile(t, dir, "default.rego", regoHeader+"default allow := false\n\nallow if x == 1\n")
	_, err := newTestRego(t, RegoOptions{Dir: dir}).Authorize(t.Context(), sampleInput())
	var errs ast.Errors
	if !errors.As(err, &errs) || len(errs) != 1 {
		t.Fatalf("error %v has no ast.Errors", err)
	}
	if e := errs[0]; e.Code != ast.UnsafeVarErr || e.Location.File != file || e.Location.Row != 5 {
		t.Fatalf("OPA error %+v at %v, want %s at %s:5", e, e.Location, ast.UnsafeVarErr, file)
	}
}

// TestRegoAllowFrom covers result sets no policy file can produce.
func TestRegoAllowFrom(t *testing.T) {
	p := &compiledPolicy{file: "/p/default.rego", pkg: RegoPackage}
	result := func(v any) rego.Result { return rego.Result{Expressions: []*rego.ExpressionValue{{Value: v}}} }
	tests := []struct {
		name    string
		rs      rego.ResultSet
		want    bool
		wantMsg string
	}{
		{name: "true", rs: rego.ResultSet{result(true)}, want: true},
		{name: "false", rs: rego.ResultSet{result(false)}},
		{name: "two results", rs: rego.ResultSet{result(true), result(true)},
			wantMsg: "invalid result from rego policy /p/default.rego: expected 1 received 2"},
		{name: "no expression", rs: rego.ResultSet{{}},
			wantMsg: "invalid result from rego policy /p/default.rego: expected 1 received 1"},
		{name: "a number", rs: rego.ResultSet{result(json.Number("1"))},
			wantMsg: "did not receive a boolean for 'allow' from rego evaluation of /p/default.rego: received 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := allowFrom(tt.rs, p)
			if tt.wantMsg == "" {
				if err != nil || got != tt.want {
					t.Fatalf("allowFrom = %v, %v; want %v", got, err, tt.want)
				}
				return
			}
			if got || err == nil || err.Error() != tt.wantMsg || !errors.Is(err, ErrPolicyResult) {
				t.Fatalf("allowFrom = %v, %v; want false, %q (ErrPolicyResult)", got, err, tt.wantMsg)
			}
		})
	}
}

func TestRegoContext(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "default.rego", regoHeader+"default allow := true\n")
	// About nine million iterations: far longer than the deadline.
	writeFile(t, dir, "slow.rego", regoHeader+"default allow := false\n\n"+
		"allow if count([1 | some i in numbers.range(1, 3000); some j in numbers.range(1, 3000)]) > 0\n")
	r := newTestRego(t, RegoOptions{Dir: dir})

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	d, err := r.Authorize(ctx, sampleInput())
	want := "could not evaluate rego policy " + filepath.Join(dir, "default.rego") + ": context canceled"
	if d.Allowed || err == nil || err.Error() != want || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %+v, %v; want a denial with %q", d, err, want)
	}

	ctx, cancel = context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	in := sampleInput()
	in.Agent = "slow"
	d, err = r.Authorize(ctx, in)
	want = "could not evaluate rego policy " + filepath.Join(dir, "slow.rego") + ": context deadline exceeded"
	if d.Allowed || err == nil || err.Error() != want || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("deadline: %+v, %v; want a denial with %q", d, err, want)
	}

	// The cancelled evaluation left nothing behind.
	if d, err := r.Authorize(t.Context(), sampleInput()); err != nil || !d.Allowed {
		t.Fatalf("after the deadline: %+v, %v", d, err)
	}
}

func TestRegoNilInput(t *testing.T) {
	d, err := newTestRego(t, RegoOptions{Dir: t.TempDir()}).Authorize(t.Context(), nil)
	if d.Allowed || err == nil {
		t.Fatalf("nil input: %+v, %v", d, err)
	}
}

// TestRegoReload edits, breaks, fixes, adds and removes policies and checks
// each change reaches the very next request, with no wait for the watcher:
// while files are recent (read again on each request) and once they have
// settled (trusted on their stat).
func TestRegoReload(t *testing.T) {
	t.Run("recent", func(t *testing.T) { testRegoReload(t, regoSettle, 0) })
	// File times come from a clock that may tick every 10 ms: apart by
	// more than that, two writes differ in their stat.
	t.Run("settled", func(t *testing.T) { testRegoReload(t, -time.Hour, 20*time.Millisecond) })
}

func testRegoReload(t *testing.T, settle, apart time.Duration) {
	dir := t.TempDir()
	def, agentFile := filepath.Join(dir, "default.rego"), filepath.Join(dir, "myco.rego")
	r := newRego(RegoOptions{Dir: dir}, settle)
	t.Cleanup(func() { _ = r.Close() })
	// The two versions have the same size, so only the content tells.
	allowTTL := regoHeader + "allow := input.ttl == 60\n"
	denyTTL := regoHeader + "allow := input.ttl != 60\n"

	steps := []struct {
		name        string
		change      func()
		want        string
		wantAllowed bool
		wantErr     error
	}{
		{"create", func() { writeFile(t, dir, "default.rego", allowTTL) }, def, true, nil},
		{"edit in place", func() { writeFile(t, dir, "default.rego", denyTTL) }, def, false, nil},
		{"edit back", func() { writeFile(t, dir, "default.rego", allowTTL) }, def, true, nil},
		{"broken edit", func() { writeFile(t, dir, "default.rego", regoHeader+"allow := input.ttl ==\n") }, def, false, ErrPolicyInvalid},
		{"still broken", func() {}, def, false, ErrPolicyInvalid},
		{"fixed", func() { writeFile(t, dir, "default.rego", allowTTL) }, def, true, nil},
		{"replaced by rename", func() { replaceFile(t, dir, "default.rego", denyTTL) }, def, false, nil},
		{"replaced again", func() { replaceFile(t, dir, "default.rego", allowTTL) }, def, true, nil},
		{"agent file added", func() { writeFile(t, dir, "myco.rego", denyTTL) }, agentFile, false, nil},
		{"agent file edited", func() { writeFile(t, dir, "myco.rego", allowTTL) }, agentFile, true, nil},
		{"agent file broken", func() { writeFile(t, dir, "myco.rego", "package") }, agentFile, false, ErrPolicyInvalid},
		{"agent file removed", func() { os.Remove(agentFile) }, def, true, nil},
		{"default removed", func() { os.Remove(def) }, "", false, ErrNoPolicy},
		{"default back", func() { writeFile(t, dir, "default.rego", denyTTL) }, def, false, nil},
	}
	for _, s := range steps {
		time.Sleep(apart)
		s.change()
		d, err := r.Authorize(t.Context(), sampleInput())
		if d.Allowed != s.wantAllowed || d.Policy != s.want || !errors.Is(err, s.wantErr) || (s.wantErr == nil && err != nil) {
			t.Fatalf("%s: %+v, %v; want Allowed %v from %q, error %v", s.name, d, err, s.wantAllowed, s.want, s.wantErr)
		}
	}
}

// TestRegoRecentFileIsReread checks the rule that makes the stat check
// safe: a write the stat cannot see (file times come from a coarse clock)
// is still found while the file changed recently.
func TestRegoRecentFileIsReread(t *testing.T) {
	dir := t.TempDir()
	allowTTL := regoHeader + "allow := input.ttl == 60\n"
	denyTTL := regoHeader + "allow := input.ttl != 60\n"
	file := writeFile(t, dir, "default.rego", allowTTL)
	r := newTestRego(t, RegoOptions{Dir: dir})
	if d, err := r.Authorize(t.Context(), sampleInput()); err != nil || !d.Allowed {
		t.Fatalf("%+v, %v", d, err)
	}
	// The stat as it was before the write below: what a request would
	// see if the write left every time unchanged.
	before, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "default.rego", denyTTL)
	p, err := r.current(file, before)
	if err != nil {
		t.Fatal(err)
	}
	if string(p.src) != denyTTL {
		t.Fatalf("a recent file was trusted on a stale stat: using %q", p.src)
	}
}

// TestRegoCompilesOnce checks an unchanged file is compiled once however
// many requests use it, and that once it has settled a request only stats it.
func TestRegoCompilesOnce(t *testing.T) {
	dir := t.TempDir()
	file := writeFile(t, dir, "default.rego", regoHeader+"default allow := true\n")

	rec := &recorder{level: slog.LevelInfo}
	r := NewRego(RegoOptions{Dir: dir, Logger: slog.New(rec)})
	defer r.Close()
	for range 50 {
		if d, err := r.Authorize(t.Context(), sampleInput()); err != nil || !d.Allowed {
			t.Fatalf("%+v, %v", d, err)
		}
	}
	if n := len(rec.find("loaded Rego policy", file)); n != 1 {
		t.Fatalf("compiled %d times, want 1", n)
	}

	// A file whose change is older than the settle time is trusted on its
	// stat: the reads stop.
	settled := newRego(RegoOptions{Dir: dir}, -time.Hour)
	defer settled.Close()
	if _, err := settled.Authorize(t.Context(), sampleInput()); err != nil {
		t.Fatal(err)
	}
	before := settled.reads.Load()
	for range 50 {
		if _, err := settled.Authorize(t.Context(), sampleInput()); err != nil {
			t.Fatal(err)
		}
	}
	if after := settled.reads.Load(); after != before {
		t.Fatalf("a settled file was read %d more times", after-before)
	}
}

// TestRegoConcurrent runs requests from many goroutines while the policy
// is replaced under them; run it with -race.
func TestRegoConcurrent(t *testing.T) {
	dir := t.TempDir()
	versions := []string{
		regoHeader + "default allow := false\n\nallow if input.callerid == \"choria=alice.mcollective\"\n",
		regoHeader + "default allow := false\n\nallow if {\n\tinput.callerid == \"choria=alice.mcollective\"\n\tinput.ttl > 0\n}\n",
	}
	writeFile(t, dir, "default.rego", versions[0])
	writeFile(t, dir, "myco.rego", versions[1])
	r := newTestRego(t, RegoOptions{Dir: dir})

	ctx, stop := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			replaceFile(t, dir, "default.rego", versions[i%2])
			time.Sleep(time.Millisecond)
		}
	})
	errs := make(chan error, 16)
	var workers sync.WaitGroup
	for w := range 16 {
		workers.Go(func() {
			for i := range 300 {
				in := sampleInput()
				if i%2 == 1 {
					in.CallerID = "choria=bob.mcollective"
				}
				if (w+i)%3 == 0 {
					in.Agent = "other"
				}
				d, err := r.Authorize(t.Context(), in)
				if err != nil || d.Allowed != (i%2 == 0) {
					errs <- fmt.Errorf("worker %d request %d (%s, %s): %+v, %v", w, i, in.Agent, in.CallerID, d, err)
					return
				}
			}
		})
	}
	workers.Wait()
	stop()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestRegoWatcher checks the watcher compiles changes before any request
// asks, including in a directory made after start, and forgets removed
// files.
func TestRegoWatcher(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "etc", "policies", "rego")
	file := filepath.Join(dir, "default.rego")
	rec := &recorder{level: slog.LevelInfo}
	r := newTestRego(t, RegoOptions{Dir: dir, Logger: slog.New(rec)})
	if len(rec.find("the Rego policy directory does not exist: every request is denied until it does", "")) != 1 {
		t.Fatalf("no warning that %s is missing: %+v", dir, rec.recs)
	}
	if _, err := r.Authorize(t.Context(), sampleInput()); !errors.Is(err, ErrNoPolicy) {
		t.Fatalf("without the directory: %v", err)
	}

	// Made a level at a time, as a configuration tool might.
	for _, d := range []string{filepath.Join(base, "etc"), filepath.Join(base, "etc", "policies"), dir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	writeFile(t, dir, "default.rego", regoHeader+"default allow := true\n")
	waitFor(t, "the watcher compiling the new policy", func() bool { return len(rec.find("loaded Rego policy", file)) == 1 })

	writeFile(t, dir, "default.rego", regoHeader+"default allow := \n")
	waitFor(t, "the watcher reporting the broken policy", func() bool {
		return len(rec.find("Rego policy does not compile: the requests it decides are denied", file)) == 1
	})
	if got := rec.find("Rego policy does not compile: the requests it decides are denied", file)[0]; got.level != slog.LevelError ||
		!strings.HasPrefix(got.attrs["error"], "rego policy "+file+" does not compile: "+file+":4: rego_parse_error: ") {
		t.Fatalf("compile error logged as %+v", got)
	}

	// Test files are not policies; requests compile them if they ask.
	writeFile(t, dir, "default_test.rego", regoHeader+"test_x if true\n")
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the watcher forgetting the removed policy", func() bool { return len(rec.find("Rego policy removed", file)) == 1 })
	if n := len(rec.find("loaded Rego policy", filepath.Join(dir, "default_test.rego"))); n != 0 {
		t.Fatalf("a test file was compiled as a policy")
	}

	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "default.rego", regoHeader+"default allow := false\n")
	waitFor(t, "the watcher compiling the policy in the recreated directory", func() bool { return len(rec.find("loaded Rego policy", file)) == 2 })
	if d, err := r.Authorize(t.Context(), sampleInput()); err != nil || d.Allowed {
		t.Fatalf("recreated policy: %+v, %v", d, err)
	}

	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	// Requests still see changes after Close.
	writeFile(t, dir, "default.rego", regoHeader+"default allow := true\n")
	if d, err := r.Authorize(t.Context(), sampleInput()); err != nil || !d.Allowed {
		t.Fatalf("after Close: %+v, %v", d, err)
	}
}

func TestRegoTrace(t *testing.T) {
	dir := t.TempDir()
	file := writeFile(t, dir, "default.rego", regoHeader+"default allow := false\n\nallow if input.callerid == \"choria=alice.mcollective\"\n")
	tests := []struct {
		name      string
		trace     bool
		level     slog.Level
		wantLevel slog.Level
		want      bool
	}{
		{name: "tracing on", trace: true, level: slog.LevelInfo, wantLevel: slog.LevelInfo, want: true},
		{name: "debug logging", level: slog.LevelDebug, wantLevel: slog.LevelDebug, want: true},
		{name: "neither", level: slog.LevelInfo},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{level: tt.level}
			r := newTestRego(t, RegoOptions{Dir: dir, Trace: tt.trace, Logger: slog.New(rec)})
			if d, err := r.Authorize(t.Context(), sampleInput()); err != nil || !d.Allowed {
				t.Fatalf("%+v, %v", d, err)
			}
			got := rec.find("Rego policy evaluation", file)
			if !tt.want {
				if len(got) != 0 {
					t.Fatalf("traced without being asked: %+v", got)
				}
				return
			}
			if len(got) != 1 {
				t.Fatalf("%d trace records, want 1", len(got))
			}
			tr := got[0]
			if tr.level != tt.wantLevel || tr.attrs["allowed"] != "true" ||
				!strings.Contains(tr.attrs["trace"], "Enter data.io.choria.mcorpc.authpolicy.allow") ||
				!strings.Contains(tr.attrs["trace"], `input.callerid = "choria=alice.mcollective"`) || tr.attrs["input"] != "" {
				t.Fatalf("trace record %+v", tr)
			}
			// The input holds the request's data: at debug only.
			in := rec.find("Rego policy input", file)
			if debug := tt.level <= slog.LevelDebug; len(in) != map[bool]int{true: 1, false: 0}[debug] ||
				debug && !strings.Contains(in[0].attrs["input"], `"callerid": "choria=alice.mcollective"`) {
				t.Fatalf("input records %+v at level %v", in, tt.level)
			}
		})
	}
}

func TestRegoBadDataIsLogged(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "default.rego", regoHeader+"default allow := false\n\nallow if count(input.data) == 0\n")
	rec := &recorder{level: slog.LevelInfo}
	r := newTestRego(t, RegoOptions{Dir: dir, Logger: slog.New(rec)})
	in := sampleInput()
	in.Data = json.RawMessage(`{"broken"`)
	if d, err := r.Authorize(t.Context(), in); err != nil || !d.Allowed {
		t.Fatalf("%+v, %v", d, err)
	}
	got := rec.find("part of the request cannot be given to the Rego policy", "")
	if len(got) != 1 || got[0].level != slog.LevelError || got[0].attrs["error"] != "decoding the request data: unexpected end of JSON input" {
		t.Fatalf("logged %+v", got)
	}
}

func TestRunRegoTests(t *testing.T) {
	const (
		policy = regoHeader + "default allow := false\n\nallow if input.callerid == \"choria=alice.mcollective\"\n"
		tests  = "package io.choria.mcorpc.authpolicy_test\n\nimport data.io.choria.mcorpc.authpolicy\n\n" +
			"test_alice if authpolicy.allow with input as {\"callerid\": \"choria=alice.mcollective\"}\n\n" +
			"test_bob if not authpolicy.allow with input as {\"callerid\": \"choria=bob.mcollective\"}\n"
		// myco.rego denies bob too: its test expecting otherwise fails.
		mycoTests = "package io.choria.mcorpc.authpolicy_test\n\nimport data.io.choria.mcorpc.authpolicy\n\n" +
			"test_myco_alice if authpolicy.allow with input as {\"callerid\": \"choria=alice.mcollective\"}\n\n" +
			"test_myco_bob if authpolicy.allow with input as {\"callerid\": \"choria=bob.mcollective\"}\n"
	)
	type want struct {
		passed, failed int
		err            string
		// lines must appear in the report, in order (regular expressions).
		lines []string
	}
	cases := []struct {
		name    string
		files   map[string]string
		verbose bool
		v0      bool
		want    want
	}{{
		name:    "passing",
		files:   map[string]string{"default.rego": policy, "default_test.rego": tests},
		verbose: true,
		want: want{passed: 2, lines: []string{
			`^DIR/default.rego: compiles \(OPA v1 syntax\)$`,
			`^default_test.rego with default.rego$`,
			`^data.io.choria.mcorpc.authpolicy_test.test_alice: PASS \(`,
			`^data.io.choria.mcorpc.authpolicy_test.test_bob: PASS \(`,
			`^PASS: 2/2$`,
		}},
	}, {
		// Each test file with its agent's policy: both policies declare
		// default allow, which in one compile would clash.
		name: "failing",
		files: map[string]string{
			"default.rego": policy, "rpcutil_test.rego": tests,
			"myco.rego": policy, "myco_test.rego": mycoTests,
		},
		want: want{passed: 3, failed: 1, lines: []string{
			`^myco_test.rego with myco.rego$`,
			`^data.io.choria.mcorpc.authpolicy_test.test_myco_bob: FAIL \(`,
			`^FAIL: 1/2$`,
			`^rpcutil_test.rego with default.rego$`,
			`^PASS: 2/2$`,
			`^PASS: 3/4$`,
			`^FAIL: 1/4$`,
		}},
	}, {
		name: "broken policy",
		files: map[string]string{
			"default.rego": policy, "default_test.rego": tests,
			"broken.rego": regoHeader + "allow if {\n",
		},
		want: want{passed: 2, failed: 1, lines: []string{
			`^DIR/broken.rego: FAIL: rego policy DIR/broken.rego does not compile: DIR/broken.rego:4: rego_parse_error: unexpected eof token$`,
			`^PASS: 2/3$`,
		}},
	}, {
		name:  "broken test file",
		files: map[string]string{"default.rego": policy, "default_test.rego": tests + "test_x if {\n"},
		want: want{failed: 1, lines: []string{
			`^FAIL: DIR/default_test.rego does not compile: DIR/default_test.rego:9: rego_parse_error: unexpected eof token$`,
		}},
	}, {
		name:  "v0 without the opt-in",
		files: map[string]string{"default.rego": regoHeader + "default allow = false\n\nallow {\n\tinput.callerid == \"choria=alice.mcollective\"\n}\n", "default_test.rego": tests},
		want: want{passed: 0, failed: 2, lines: []string{
			"^DIR/default.rego: FAIL: .*`if` keyword is required before rule body; it is written in OPA's pre-1.0",
			"^FAIL: DIR/default.rego does not compile: .*plugin.agent_host.rego_v0_compatible = true$",
		}},
	}, {
		name:  "v0 with the opt-in",
		files: map[string]string{"default.rego": regoHeader + "default allow = false\n\nallow {\n\tinput.callerid == \"choria=alice.mcollective\"\n}\n", "default_test.rego": tests},
		v0:    true,
		want:  want{passed: 2, lines: []string{`^PASS: 2/2$`}},
	}, {
		name:  "no tests",
		files: map[string]string{"default.rego": policy},
		want:  want{err: "policy: no test files (*_test.rego) in DIR"},
	}}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, src := range tt.files {
				writeFile(t, dir, name, src)
			}
			var out strings.Builder
			passed, failed, err := RunRegoTests(t.Context(), dir, &out, tt.verbose, tt.v0)
			report := out.String()
			if tt.want.err != "" {
				if want := strings.ReplaceAll(tt.want.err, "DIR", dir); err == nil || err.Error() != want {
					t.Fatalf("error %v, want %q", err, want)
				}
			} else if err != nil {
				t.Fatalf("error: %v\n%s", err, report)
			}
			if passed != tt.want.passed || failed != tt.want.failed {
				t.Fatalf("passed %d, failed %d; want %d, %d\n%s", passed, failed, tt.want.passed, tt.want.failed, report)
			}
			lines := strings.Split(report, "\n")
			for _, l := range tt.want.lines {
				re := regexp.MustCompile(strings.ReplaceAll(l, "DIR", regexp.QuoteMeta(dir)))
				i := 0
				for i < len(lines) && !re.MatchString(lines[i]) {
					i++
				}
				if i == len(lines) {
					t.Fatalf("report lacks %q (in order):\n%s", l, report)
				}
				lines = lines[i+1:]
			}
		})
	}

	if _, _, err := RunRegoTests(t.Context(), filepath.Join(t.TempDir(), "missing"), &strings.Builder{}, false, false); err == nil {
		t.Fatal("a missing directory is not an error")
	}
}
