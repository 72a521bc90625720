package config

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/keys.golden")

// untagged are the exported Config fields that are not settings.
var untagged = []string{"ConfigFile", "ParsedFiles"}

// TestKeysDocumented fails when a setting is added without tags or without
// a doc comment, or when docstrings.go lists keys that no longer exist.
func TestKeysDocumented(t *testing.T) {
	keys := Keys()
	byKey := map[string]KeyDoc{}
	for _, k := range keys {
		byKey[k.Key] = k
	}
	if len(byKey) != len(keys) {
		t.Errorf("Keys() repeats keys")
	}
	if !slices.IsSortedFunc(keys, func(a, b KeyDoc) int { return strings.Compare(a.Key, b.Key) }) {
		t.Errorf("Keys() is not sorted")
	}

	ct := reflect.TypeFor[Config]()
	tagged := 0
	for i := range ct.NumField() {
		sf := ct.Field(i)
		key, ok := sf.Tag.Lookup("confkey")
		if !ok {
			if sf.IsExported() && !slices.Contains(untagged, sf.Name) {
				t.Errorf("exported field %s has no confkey tag", sf.Name)
			}
			continue
		}
		tagged++
		k, ok := byKey[key]
		switch {
		case !ok:
			t.Errorf("field %s: key %s missing from Keys()", sf.Name, key)
		case k.Description == "":
			t.Errorf("field %s: key %s has no description: add a doc comment and run go generate ./host/config", sf.Name, key)
		case k.Type == "":
			t.Errorf("field %s: key %s has no type", sf.Name, key)
		}
	}
	if tagged != len(keys) {
		t.Errorf("Keys() lists %d keys for %d tagged fields", len(keys), tagged)
	}
	for key := range descriptions {
		if _, ok := byKey[key]; !ok {
			t.Errorf("docstrings.go describes %s, which is not declared: run go generate ./host/config", key)
		}
	}
}

// TestKeysGolden keeps types, defaults, validation rules and the docs'
// links reviewable: a
// change shows up as a diff of testdata/keys.golden (go test -update).
func TestKeysGolden(t *testing.T) {
	var b bytes.Buffer
	for _, k := range Keys() {
		fmt.Fprintf(&b, "%s\n\ttype: %s\n\tdefault: %q\n\tvalidation: %q\n", k.Key, k.Type, k.Default, k.Validation)
		if k.Secret {
			b.WriteString("\tsecret\n")
		}
		if k.URL != "" {
			fmt.Fprintf(&b, "\turl: %s\n", k.URL)
		}
		if k.Deprecated {
			b.WriteString("\tdeprecated\n")
		}
	}
	golden := filepath.Join("testdata", "keys.golden")
	if *update {
		if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v: run go test ./host/config -update", err)
	}
	if !bytes.Equal(b.Bytes(), want) {
		t.Errorf("Keys() differs from %s; review and run go test ./host/config -update. Got:\n%s", golden, b.String())
	}
}

func TestKeyDefaultsParse(t *testing.T) {
	for _, k := range Keys() {
		if k.Default == "" {
			continue
		}
		// A default must be a value the file could hold too.
		path := writeConfig(t, k.Key+" = "+k.Default, nil)
		if _, err := Load(path); err != nil {
			t.Errorf("default of %s as a file value: %v", k.Key, err)
		}
	}
}

func TestDeclareFieldsRefusesBadTags(t *testing.T) {
	tests := []struct {
		name string
		typ  reflect.Type
		f    field
	}{
		{"list without split type", reflect.TypeFor[[]string](), field{}},
		{"duration without type", reflect.TypeFor[int64](), field{typ: "duration"}},
		{"split on a string", reflect.TypeFor[string](), field{typ: "comma_split"}},
		{"path_string on an int", reflect.TypeFor[int](), field{typ: "path_string"}},
		{"min on a string", reflect.TypeFor[string](), field{validate: "min=1", rule: rule{name: "min", min: 1}}},
		{"enum on an int", reflect.TypeFor[int](), field{validate: "enum=1", rule: rule{name: "enum", enum: []string{"1"}}}},
		{"unsupported Go type", reflect.TypeFor[float64](), field{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.f.checkTags(tc.typ); err == nil {
				t.Errorf("checkTags accepted %+v on %s", tc.f, tc.typ)
			}
		})
	}
	for _, tag := range []string{"between=1,2", "min=x", "regexp=x"} {
		if _, err := parseRule(tag); err == nil {
			t.Errorf("parseRule(%q) accepted", tag)
		}
	}
}
