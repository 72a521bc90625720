package refserver

import (
	"os"
	"regexp"
	"testing"
)

// TestGoChoriaVersion: the version the server reports is the one go.mod
// requires.
func TestGoChoriaVersion(t *testing.T) {
	b, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*github\.com/choria-io/go-choria v(\S+)`).FindSubmatch(b)
	if m == nil {
		t.Fatal("go.mod does not require github.com/choria-io/go-choria")
	}
	if string(m[1]) != GoChoriaVersion {
		t.Errorf("go.mod requires go-choria %s, GoChoriaVersion is %s", m[1], GoChoriaVersion)
	}
}
