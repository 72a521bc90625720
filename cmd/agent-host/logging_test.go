package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestLogfileIsChoriaJSON: with a logfile, every line is a JSON object
// with Choria's (logrus') level, msg and time, the attributes at the top
// level, and clashing names renamed as logrus renames them.
func TestLogfileIsChoriaJSON(t *testing.T) {
	file := filepath.Join(t.TempDir(), "agent-host.log")
	log, out, err := openLog("debug", file)
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("debugging")
	log.With("component", "policy").Info("authorizing", "agent", "rpcutil", "msg", "clash")
	log.Warn("warned", "error", errors.New("boom"))
	log.WithGroup("g").Error("failed", "level", 3)
	// A group without a key is written inline: its attributes may clash too.
	log.With(slog.Group("", "msg", "x")).Info("inline", slog.Group("", "level", "clash", "n", 1))
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}

	lines := readJSONLines(t, file)
	want := []map[string]any{
		{"level": "debug", "msg": "debugging"},
		{"level": "info", "msg": "authorizing", "component": "policy", "agent": "rpcutil", "fields.msg": "clash"},
		{"level": "warning", "msg": "warned", "error": "boom"},
		{"level": "error", "msg": "failed", "g": map[string]any{"level": 3.0}},
		{"level": "info", "msg": "inline", "fields.msg": "x", "fields.level": "clash", "n": 1.0},
	}
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d: %v", len(lines), len(want), lines)
	}
	for i, line := range lines {
		ts, _ := line["time"].(string)
		if at, err := time.Parse(time.RFC3339, ts); err != nil || strings.Contains(ts, ".") || time.Since(at) > time.Minute {
			t.Errorf("line %d: time %q is not now in RFC 3339 to the second (%v)", i, ts, err)
		}
		delete(line, "time")
		if !reflect.DeepEqual(line, want[i]) {
			t.Errorf("line %d = %v, want %v", i, line, want[i])
		}
	}
	if st, err := os.Stat(file); err != nil || st.Mode().Perm()&0o007 != 0 {
		t.Errorf("logfile mode %v (%v), want no access for others", st.Mode(), err)
	}
}

// TestLogfileReopen: after the file is moved away, Reopen starts a new
// one and nothing more goes to the old.
func TestLogfileReopen(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "agent-host.log")
	log, out, err := openLog("info", file)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	log.Info("before")
	if err := os.Rename(file, file+".1"); err != nil {
		t.Fatal(err)
	}
	if err := out.Reopen(); err != nil {
		t.Fatal(err)
	}
	log.Info("after")
	if old := readJSONLines(t, file+".1"); len(old) != 1 || old[0]["msg"] != "before" {
		t.Errorf("rotated file holds %v, want the line before", old)
	}
	if cur := readJSONLines(t, file); len(cur) != 1 || cur[0]["msg"] != "after" {
		t.Errorf("new file holds %v, want the line after", cur)
	}
}

// TestTerminalLogIsText: without a logfile, or with Choria's words for
// the terminal, the lines stay text and no file is made.
func TestTerminalLogIsText(t *testing.T) {
	t.Chdir(t.TempDir())
	for _, file := range []string{"", "stderr", "STDOUT", "Discard"} {
		log, _, err := openLog("info", file)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := log.Handler().(choriaJSONHandler); ok {
			t.Errorf("logfile %q: the logger writes JSON", file)
		}
		if file != "" {
			if _, err := os.Stat(file); err == nil {
				t.Errorf("logfile %q made a file", file)
			}
		}
	}
}

func readJSONLines(t *testing.T, file string) []map[string]any {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q is not JSON: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}
