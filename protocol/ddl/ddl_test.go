package ddl_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/agent-host/agent-host/protocol/ddl"
)

// FuzzParse feeds DDL-shaped bytes to Parse, seeded from every DDL in
// testdata: a DDL on disk is operator input and must never crash the host.
func FuzzParse(f *testing.F) {
	for _, pattern := range []string{"../../testdata/agents/*/*.json", "../../testdata/e2e/agents/*.json", "../../testdata/e2e/agents/*/*.json"} {
		files, _ := filepath.Glob(pattern)
		for _, file := range files {
			if b, err := os.ReadFile(file); err == nil {
				f.Add(b)
			}
		}
	}
	f.Add([]byte(`{"metadata":{"name":"x"},"actions":[{"action":"a","input":{"i":{"type":"string","validation":"(","maxlength":1}}}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ddl.Parse(b)
		if err != nil {
			if !errors.Is(err, ddl.ErrInvalidDDL) {
				t.Fatalf("error %v does not wrap ErrInvalidDDL", err)
			}
			return
		}
		if d.Metadata.Name == "" {
			t.Fatal("accepted a DDL without a name")
		}
		for _, a := range d.Actions {
			_ = a.ValidateInputs(json.RawMessage(`{"i":"x"}`))
			if _, err := a.SetOutputDefaults(json.RawMessage(`{}`)); err != nil {
				t.Fatalf("output defaults of a parsed DDL on {}: %v", err)
			}
		}
	})
}

func TestParseExamples(t *testing.T) {
	files, err := filepath.Glob("../../testdata/agents/*/*.json")
	if err != nil || len(files) < 3 {
		t.Fatalf("example DDLs: %v %v", files, err)
	}
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		d, err := ddl.Parse(b)
		if err != nil {
			t.Errorf("%s: %v", file, err)
			continue
		}
		if d.Metadata.Provider != "external" || d.Metadata.Timeout < 1 || len(d.Actions) == 0 || len(d.Warnings()) != 0 {
			t.Errorf("%s: metadata %+v, %d actions, warnings %v", file, d.Metadata, len(d.Actions), d.Warnings())
		}
	}
}
