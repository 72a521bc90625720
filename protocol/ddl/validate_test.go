package ddl

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const vectorDir = "../../testdata/vectors/ddl_validation"

// vector is one shared validation case; the Python SDK runs the same files.
type vector struct {
	file      string
	Note      string          `json:"note"`
	DDLAction json.RawMessage `json:"ddl_action"`
	Input     json.RawMessage `json:"input"`
	WantError *string         `json:"want_error"`
}

func loadVectors(tb testing.TB) []vector {
	tb.Helper()
	files, err := filepath.Glob(filepath.Join(vectorDir, "*.json"))
	if err != nil {
		tb.Fatal(err)
	}
	if len(files) < 40 {
		tb.Fatalf("found %d vectors in %s, want at least 40", len(files), vectorDir)
	}
	var out []vector
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		var keys map[string]json.RawMessage
		if err := json.Unmarshal(b, &keys); err != nil {
			tb.Fatalf("%s: %v", f, err)
		}
		for _, k := range []string{"note", "ddl_action", "input", "want_error"} {
			if _, ok := keys[k]; !ok {
				tb.Fatalf("%s: key %q is missing", f, k)
			}
		}
		v := vector{file: filepath.Base(f)}
		if err := json.Unmarshal(b, &v); err != nil {
			tb.Fatalf("%s: %v", f, err)
		}
		out = append(out, v)
	}
	return out
}

// parseAction wraps one action in a minimal agent DDL and parses it, as
// the catalog would load it.
func parseAction(actionJSON []byte) (*Action, *DDL, error) {
	var doc bytes.Buffer
	doc.WriteString(`{"$schema":"` + SchemaURL + `","metadata":{"name":"vector","version":"1.0.0","timeout":10,"provider":"external"},"actions":[`)
	doc.Write(actionJSON)
	doc.WriteString(`]}`)
	d, err := Parse(doc.Bytes())
	if err != nil {
		return nil, nil, err
	}
	if len(d.Actions) != 1 {
		return nil, nil, errors.New("wrapper did not produce one action")
	}
	return d.Actions[0], d, nil
}

func TestValidateInputsVectors(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(strings.TrimSuffix(v.file, ".json"), func(t *testing.T) {
			if v.Note == "" {
				t.Error("vector has no note")
			}
			action, _, err := parseAction(v.DDLAction)
			if err != nil {
				t.Fatalf("parsing ddl_action: %v", err)
			}
			checkVector(t, "parsed", v, action.ValidateInputs(v.Input))

			// An Action decoded without Parse prepares itself per call;
			// it must agree with the prepared one.
			var raw Action
			if err := json.Unmarshal(v.DDLAction, &raw); err != nil {
				t.Fatal(err)
			}
			checkVector(t, "unprepared", v, raw.ValidateInputs(v.Input))
		})
	}
}

func checkVector(t *testing.T, how string, v vector, err error) {
	t.Helper()
	if v.WantError == nil {
		if err != nil {
			t.Errorf("%s: %s\ngot error %q, want none", how, v.Note, err)
		}
		return
	}
	if err == nil {
		t.Errorf("%s: %s\ngot no error, want %q", how, v.Note, *v.WantError)
		return
	}
	if err.Error() != *v.WantError {
		t.Errorf("%s: %s\ngot  %q\nwant %q", how, v.Note, err.Error(), *v.WantError)
	}
	if !errors.Is(err, ErrValidation) {
		t.Errorf("%s: error %v does not match ErrValidation", how, err)
	}
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("%s: error %T is not a *ValidationError", how, err)
	}
	if _, rest, ok := strings.Cut(ve.Message, "input '"); ok {
		if name, _, _ := strings.Cut(rest, "'"); ve.Input != name {
			t.Errorf("%s: ValidationError.Input = %q, want %q", how, ve.Input, name)
		}
	}
}

func TestValidateInputsData(t *testing.T) {
	action, _, err := parseAction([]byte(`{"action":"a","input":{"m":{"type":"string","optional":true,"maxlength":3}}}`))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		data    string
		wantErr string
	}{
		{name: "empty means {}", data: ""},
		{name: "null means {}", data: "null"},
		{name: "whitespace around object", data: " \n{\"m\":\"ab\"}\t"},
		{name: "array", data: `[1]`, wantErr: "json: cannot unmarshal array into Go value of type map[string]interface {}"},
		{name: "string", data: `"x"`, wantErr: "json: cannot unmarshal string into Go value of type map[string]interface {}"},
		{name: "truncated", data: `{"m":`, wantErr: "unexpected end of JSON input"},
		{name: "duplicate keys, last wins", data: `{"m":"abcdef","m":"ab"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := action.ValidateInputs(json.RawMessage(tt.data))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("got %v, want no error", err)
				}
				return
			}
			if err == nil || err.Error() != tt.wantErr {
				t.Fatalf("got %v, want %q", err, tt.wantErr)
			}
			if !errors.Is(err, ErrValidation) {
				t.Errorf("%v does not match ErrValidation", err)
			}
		})
	}
}

func TestValidateInputsLeavesDataAlone(t *testing.T) {
	action, _, err := parseAction([]byte(`{"action":"a","input":{"m":{"type":"string","maxlength":3}}}`))
	if err != nil {
		t.Fatal(err)
	}
	data := json.RawMessage(`{"m":"ab","process_results":true}`)
	orig := slices.Clone(data)
	if err := action.ValidateInputs(data); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data, orig) {
		t.Errorf("data changed to %s", data)
	}
}

func TestParseWarnings(t *testing.T) {
	doc := `{"metadata":{"name":"w","timeout":5,"provider":"external"},"actions":[
		{"action":"one","input":{
			"host":{"type":"string","maxlength":10,"validation":"hostname"},
			"re":{"type":"string","maxlength":10,"validation":"^(x"},
			"quirk":{"type":"string","validation":"shellsafe"},
			"odd":{"type":"object","optional":true},
			"fine":{"type":"string","maxlength":10,"validation":"shellsafe"},
			"num":{"type":"integer","validation":"^x$"}
		}}]}`
	d, err := Parse([]byte(doc))
	if err != nil {
		t.Fatalf("a DDL with unusable validators must still load: %v", err)
	}
	want := []string{
		"action one input host: unsupported validator 'hostname' is ignored",
		"action one input odd: type 'object' is not supported",
		"action one input quirk: validation 'shellsafe' is never applied because maxlength is 0",
		"action one input re: validation regular expression '^(x' does not compile",
	}
	got := d.Warnings()
	if len(got) != len(want) {
		t.Fatalf("got %d warnings %q, want %d", len(got), got, len(want))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("warning %d = %q, want prefix %q", i, got[i], want[i])
		}
	}
	got[0] = "changed"
	if d.Warnings()[0] == "changed" {
		t.Error("Warnings returned the DDL's own slice")
	}

	err = d.Action("one").ValidateInputs(json.RawMessage(`{"fine":"ok","host":"h;$","re":"x","quirk":"x;$","odd":{},"num":1}`))
	if err == nil || err.Error() != "validation failed for input 'odd': unsupported input type 'object'" {
		t.Errorf("got %v", err)
	}
	err = d.Action("one").ValidateInputs(json.RawMessage(`{"fine":"ok","host":"h;$","re":"x","quirk":"x;$","num":1}`))
	if err == nil || err.Error() != "validation failed for input 're': invalid regex '^(x'" {
		t.Errorf("got %v", err)
	}
}

func TestParseRejectsNullItems(t *testing.T) {
	tests := []struct {
		name string
		doc  string
	}{
		{name: "input", doc: `{"metadata":{"name":"x"},"actions":[{"action":"a","input":{"i":null}}]}`},
		{name: "output", doc: `{"metadata":{"name":"x"},"actions":[{"action":"a","output":{"o":null}}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Parse([]byte(tt.doc)); !errors.Is(err, ErrInvalidDDL) {
				t.Fatalf("got %v, want ErrInvalidDDL", err)
			}
		})
	}
}

func FuzzValidateInputs(f *testing.F) {
	for _, v := range loadVectors(f) {
		f.Add([]byte(v.DDLAction), []byte(v.Input))
	}
	f.Fuzz(func(t *testing.T, actionJSON, input []byte) {
		action, _, err := parseAction(actionJSON)
		if err != nil {
			return
		}
		err = action.ValidateInputs(input)

		var raw Action
		if json.Unmarshal(actionJSON, &raw) == nil {
			if err2 := raw.ValidateInputs(input); errString(err) != errString(err2) {
				t.Fatalf("prepared and unprepared disagree: %v vs %v", err, err2)
			}
		}
		if err != nil {
			if !errors.Is(err, ErrValidation) {
				t.Fatalf("error %v does not match ErrValidation", err)
			}
			return
		}

		// Accepted: every input is declared and every required one present.
		var data map[string]any
		if len(input) > 0 {
			if err := json.Unmarshal(input, &data); err != nil {
				t.Fatalf("accepted undecodable data %q: %v", input, err)
			}
		}
		delete(data, processResults)
		for name := range data {
			if _, ok := action.Input[name]; !ok {
				t.Fatalf("accepted undeclared input %q", name)
			}
		}
		for name, item := range action.Input {
			if _, ok := data[name]; !ok && !item.Optional {
				t.Fatalf("accepted a request without required input %q", name)
			}
		}
	})
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func BenchmarkValidateInputs(b *testing.B) {
	action, _, err := parseAction([]byte(`{"action":"deploy","input":{
		"message":{"type":"string","maxlength":4096,"validation":"shellsafe"},
		"version":{"type":"string","maxlength":64,"validation":"^v?[0-9]+\\.[0-9]+\\.[0-9]+$"},
		"host":{"type":"string","maxlength":64,"validation":"ipaddress"},
		"count":{"type":"integer","optional":true},
		"mode":{"type":"list","list":["fast","safe"]},
		"force":{"type":"boolean","optional":true}
	}}`))
	if err != nil {
		b.Fatal(err)
	}
	data := json.RawMessage(`{"message":"deploying the new release","version":"v1.24.3","host":"192.0.2.15","count":3,"mode":"safe","force":false,"process_results":true}`)
	if err := action.ValidateInputs(data); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := action.ValidateInputs(data); err != nil {
			b.Fatal(err)
		}
	}
}
