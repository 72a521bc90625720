package inventory

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"
)

// TestYAMLNumericKeys is the regression test for YAML facts whose map
// keys are numbers, which used to blank the whole facts file: they are
// converted as Choria converts them, keys becoming strings.
func TestYAMLNumericKeys(t *testing.T) {
	facts, _ := New([]string{"testdata/numeric-keys.yaml"}, "", nil).Snapshot()
	for path, want := range map[string]string{
		"os.family":        "Debian",
		"ports.22":         "ssh",
		"ports.8080":       "proxy",
		"flags.true":       "on",
		"versions.1":       "2.5",
		"date":             "2024-05-01",
		"os.release.major": "12",
	} {
		if got := gjson.GetBytes(facts, path); got.String() != want {
			t.Errorf("fact %s = %q, want %q (facts %s)", path, got.String(), want, facts)
		}
	}
}

func TestMergeAndReload(t *testing.T) {
	dir := t.TempDir()
	a, b, classes := filepath.Join(dir, "a.json"), filepath.Join(dir, "b.yaml"), filepath.Join(dir, "classes.txt")
	write(t, a, `{"role":"web","dc":"one"}`)
	write(t, b, "role: db\nextra: 1\n")
	write(t, classes, "roles::web\nbase\n")
	inv := New([]string{a, b, filepath.Join(dir, "missing.json")}, classes, nil)
	facts, cls := inv.Snapshot()
	var got map[string]any
	if err := json.Unmarshal(facts, &got); err != nil {
		t.Fatal(err)
	}
	if got["role"] != "db" || got["dc"] != "one" || got["extra"] != 1.0 || strings.Join(cls, ",") != "base,roles::web" {
		t.Errorf("facts %s classes %v: want later files to win and classes sorted", facts, cls)
	}

	write(t, a, `{"role":"web","dc":"two"}`)
	// The files are looked at again at most once a second.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(string(inv.Facts()), `"dc":"two"`) {
		if time.Now().After(deadline) {
			t.Fatalf("the changed facts file was not read again: %s", inv.Facts())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestBadFilesAreSkipped(t *testing.T) {
	dir := t.TempDir()
	good, bad, huge := filepath.Join(dir, "good.json"), filepath.Join(dir, "bad.yaml"), filepath.Join(dir, "huge.json")
	write(t, good, `{"ok":true}`)
	write(t, bad, "a: [unclosed\n")
	f, err := os.Create(huge)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(MaxFileBytes + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	facts, _ := New([]string{good, bad, huge}, "", nil).Snapshot()
	if string(facts) != `{"ok":true}` {
		t.Errorf("facts %s, want only the good file's", facts)
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestReloadNow: Reload reads the files at once, even when their size and
// modification time are what they were (a same-size edit with the time
// put back), and says what changed.
func TestReloadNow(t *testing.T) {
	dir := t.TempDir()
	facts, classes := filepath.Join(dir, "facts.json"), filepath.Join(dir, "classes.txt")
	write(t, facts, `{"role":"web"}`)
	write(t, classes, "roles::web\n")
	inv := New([]string{facts}, classes, nil)
	st, err := os.Stat(facts)
	if err != nil {
		t.Fatal(err)
	}

	if f, c := inv.Reload(); f || c {
		t.Errorf("Reload with nothing changed = %v, %v; want false, false", f, c)
	}
	write(t, facts, `{"role":"db"}`)
	if err := os.Chtimes(facts, st.ModTime(), st.ModTime()); err != nil {
		t.Fatal(err)
	}
	if f, c := inv.Reload(); !f || c {
		t.Errorf("Reload after a facts edit = %v, %v; want true, false", f, c)
	}
	if got, _ := inv.Snapshot(); string(got) != `{"role":"db"}` {
		t.Errorf("facts after Reload = %s", got)
	}
	write(t, classes, "roles::db\n")
	if f, c := inv.Reload(); f || !c {
		t.Errorf("Reload after a classes edit = %v, %v; want false, true", f, c)
	}
	if _, got := inv.Snapshot(); strings.Join(got, ",") != "roles::db" {
		t.Errorf("classes after Reload = %v", got)
	}
}
