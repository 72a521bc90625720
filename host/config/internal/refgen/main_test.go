package main

import (
	"os"
	"strings"
	"testing"

	"github.com/agent-host/agent-host/host/config"
)

// TestReferenceCurrent fails when CONFIGURATION.md no longer matches the
// declared keys.
func TestReferenceCurrent(t *testing.T) {
	const path = "../../../../CONFIGURATION.md"
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v: run go generate ./host/config", err)
	}
	if string(got) != string(render(config.Keys(), config.Unsupported())) {
		t.Fatal("CONFIGURATION.md is stale: run go generate ./host/config")
	}
}

func TestRender(t *testing.T) {
	keys := []config.KeyDoc{
		{Key: "a", Type: "integer", Default: "1", Validation: "min=1", Description: "First key."},
		{Key: "b.pass", Type: "string", Description: "A password.", Secret: true},
		{Key: "c.old", Type: "boolean", Description: "Gone.", URL: "https://example.net/c", Deprecated: true},
	}
	got := string(render(keys, []config.UnsupportedKey{{Key: "plugin.x.", Reason: "x is elsewhere"}, {Key: "y", Reason: "why not"}}))
	for _, w := range []string{
		"go generate ./host/config",
		"### a\n\nFirst key.\n\n * **Type:** integer\n * **Default:** `1`\n * **Validation:** `min=1`\n",
		"### b.pass\n\nA password.\n\n * **Type:** string\n * **Secret:** the value is never shown\n",
		"### c.old\n\nGone.\n\n * **Type:** boolean\n * **Additional Information:** https://example.net/c\n\n**This setting is deprecated or already unused.**\n",
		"logs a warning",
		" * `plugin.x.*`: x is elsewhere.\n * `y`: why not.\n",
	} {
		if !strings.Contains(got, w) {
			t.Errorf("output lacks %q:\n%s", w, got)
		}
	}
	if strings.Index(got, "### a") > strings.Index(got, "### b.pass") {
		t.Error("keys are not in the order given")
	}
}
