package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDocstringsCurrent fails when a doc comment in config.go changed
// without regenerating docstrings.go.
func TestDocstringsCurrent(t *testing.T) {
	t.Chdir("../..")
	if err := run("config.go", "docstrings.go", true); err != nil {
		t.Fatal(err)
	}
}

func TestGenerate(t *testing.T) {
	tests := []struct {
		name    string
		src     string
		want    []string
		wantErr string
	}{
		{
			name: "documented keys sorted, untagged fields skipped",
			src: "package config\n\ntype Config struct {\n" +
				"\t// Second key,\n\t// over two lines.\n\tB int `confkey:\"b\" default:\"1\"`\n" +
				"\t// First key.\n\tA string `confkey:\"a\"`\n" +
				"\tPlain string\n}\n",
			want: []string{"\"a\": \"First key.\",\n\t\"b\": \"Second key, over two lines.\",\n"},
		},
		{
			name:    "undocumented key",
			src:     "package config\n\ntype Config struct {\n\tA string `confkey:\"a\"`\n}\n",
			wantErr: "the field for a has no doc comment",
		},
		{
			name:    "no Config",
			src:     "package config\n\ntype Other struct{}\n",
			wantErr: "no struct type Config",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.go")
			if err := os.WriteFile(path, []byte(tc.src), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := generate(path)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(got), w) {
					t.Errorf("output lacks %q:\n%s", w, got)
				}
			}
		})
	}
}
