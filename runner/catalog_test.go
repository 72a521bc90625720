package runner

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// agentDDL returns an external agent's DDL; edit may change the document.
func agentDDL(name string, edit ...func(md map[string]any, doc map[string]any)) []byte {
	md := map[string]any{
		"name": name, "description": "test agent", "author": "tests", "license": "Apache-2.0",
		"version": "1.0.0", "url": "https://example.net", "timeout": 10, "provider": "external",
	}
	doc := map[string]any{
		"$schema":  "https://choria.io/schemas/mcorpc/ddl/v1/agent.json",
		"metadata": md,
		"actions": []any{map[string]any{
			"action": "echo", "display": "always", "description": "echo",
			"input": map[string]any{"message": map[string]any{
				"prompt": "Message", "description": "m", "type": "string", "optional": false, "maxlength": 100, "validation": "shellsafe",
			}},
			"output": map[string]any{"message": map[string]any{"description": "m", "display_as": "Message"}},
		}},
	}
	for _, e := range edit {
		e(md, doc)
	}
	b, err := json.Marshal(doc)
	if err != nil {
		panic(err)
	}
	return b
}

func writeFile(tb testing.TB, path string, content []byte, mode os.FileMode) {
	tb.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(path, content, mode); err != nil {
		tb.Fatal(err)
	}
}

func writeExe(tb testing.TB, path string) {
	tb.Helper()
	writeFile(tb, path, []byte("#!/bin/sh\nexit 0\n"), 0o755)
}

func archName(name string) string {
	return fmt.Sprintf("%s-%s_%s", name, runtime.GOOS, runtime.GOARCH)
}

// logBuffer collects a catalog's log output for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func newLogger() (*slog.Logger, *logBuffer) {
	lb := &logBuffer{}
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

func names(agents []*Agent) []string {
	out := []string{}
	for _, a := range agents {
		out = append(out, a.Name)
	}
	return out
}

func TestCatalogLayouts(t *testing.T) {
	tests := []struct {
		name       string
		plugins    bool // files go in a --plugins dir instead of a libdir
		files      func(tb testing.TB, dir string)
		agent      string
		wantExe    string // relative to the agent directory
		wantLayout Layout
		wantDDL    string
	}{
		{
			name: "flat",
			files: func(tb testing.TB, dir string) {
				writeFile(tb, filepath.Join(dir, "parrot.json"), agentDDL("parrot"), 0o644)
				writeExe(tb, filepath.Join(dir, "parrot"))
			},
			agent: "parrot", wantExe: "parrot", wantLayout: LayoutFlat, wantDDL: "parrot.json",
		},
		{
			name: "directory",
			files: func(tb testing.TB, dir string) {
				writeFile(tb, filepath.Join(dir, "parrot", "parrot.json"), agentDDL("parrot"), 0o644)
				writeExe(tb, filepath.Join(dir, "parrot", "parrot"))
			},
			agent: "parrot", wantExe: "parrot/parrot", wantLayout: LayoutDirectory, wantDDL: "parrot/parrot.json",
		},
		{
			name: "multiarch",
			files: func(tb testing.TB, dir string) {
				writeFile(tb, filepath.Join(dir, "parrot", "parrot.json"), agentDDL("parrot"), 0o644)
				writeExe(tb, filepath.Join(dir, "parrot", "parrot", archName("parrot")))
			},
			agent: "parrot", wantExe: "parrot/parrot/" + archName("parrot"), wantLayout: LayoutMultiarch, wantDDL: "parrot/parrot.json",
		},
		{
			name: "flat DDL with multiarch directory",
			files: func(tb testing.TB, dir string) {
				writeFile(tb, filepath.Join(dir, "parrot.json"), agentDDL("parrot"), 0o644)
				writeExe(tb, filepath.Join(dir, "parrot", archName("parrot")))
			},
			agent: "parrot", wantExe: "parrot/" + archName("parrot"), wantLayout: LayoutMultiarch, wantDDL: "parrot.json",
		},
		{
			name: "missing executable points at the multiarch path",
			files: func(tb testing.TB, dir string) {
				writeFile(tb, filepath.Join(dir, "parrot.json"), agentDDL("parrot"), 0o644)
			},
			agent: "parrot", wantExe: "parrot/" + archName("parrot"), wantLayout: LayoutMultiarch, wantDDL: "parrot.json",
		},
		{
			name:    "plugins directory",
			plugins: true,
			files: func(tb testing.TB, dir string) {
				writeFile(tb, filepath.Join(dir, "parrot.json"), agentDDL("parrot"), 0o644)
				writeExe(tb, filepath.Join(dir, "parrot"))
			},
			agent: "parrot", wantExe: "parrot", wantLayout: LayoutFlat, wantDDL: "parrot.json",
		},
		{
			name: "metadata name differs from the file name",
			files: func(tb testing.TB, dir string) {
				writeFile(tb, filepath.Join(dir, "foo.json"), agentDDL("bar"), 0o644)
				writeExe(tb, filepath.Join(dir, "bar"))
			},
			agent: "bar", wantExe: "bar", wantLayout: LayoutFlat, wantDDL: "foo.json",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			cfg := CatalogConfig{Libdirs: []string{root}}
			dir := filepath.Join(root, "mcollective", "agent")
			if tt.plugins {
				cfg = CatalogConfig{PluginDirs: []string{root}}
				dir = root
			}
			tt.files(t, dir)

			c := NewCatalog(cfg)
			if err := c.Load(t.Context()); err != nil {
				t.Fatal(err)
			}
			if got := names(c.Agents()); !slices.Equal(got, []string{tt.agent}) {
				t.Fatalf("agents = %v, want [%s]", got, tt.agent)
			}
			a, ok := c.Agent(tt.agent)
			if !ok {
				t.Fatalf("Agent(%q) not found", tt.agent)
			}
			if want := filepath.Join(dir, tt.wantExe); a.Executable != want {
				t.Errorf("Executable = %s, want %s", a.Executable, want)
			}
			if a.Layout != tt.wantLayout {
				t.Errorf("Layout = %s, want %s", a.Layout, tt.wantLayout)
			}
			if want := filepath.Join(dir, tt.wantDDL); a.DDLPath != want {
				t.Errorf("DDLPath = %s, want %s", a.DDLPath, want)
			}
			if a.DDL == nil || a.DDL.Metadata.Name != tt.agent || a.DDL.Action("echo") == nil {
				t.Errorf("DDL not loaded: %+v", a.DDL)
			}
			if !a.Active || a.ActivationError != nil {
				t.Errorf("Active = %v, %v; want true with no Activate func", a.Active, a.ActivationError)
			}
		})
	}
}

func TestCatalogAdmission(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "mcollective", "agent")
	external := func(name string) []byte { return agentDDL(name) }
	withMD := func(name, key string, v any) []byte {
		return agentDDL(name, func(md, _ map[string]any) {
			if v == nil {
				delete(md, key)
				return
			}
			md[key] = v
		})
	}
	files := map[string][]byte{
		"good.json":                   external("good"),
		"three/three.json":            external("three"),
		"three/four/four.json":        external("four"),      // nested: never loaded
		"tmp/tmp.json":                external("tmp"),       // tmp is skipped
		"rpcutil.json":                external("rpcutil"),   // deny list, file name
		"discovery/discovery.json":    external("discovery"), // deny list, directory name
		"sneaky.json":                 external("scout"),     // deny list, metadata name
		"ruby.json":                   withMD("ruby", "provider", "ruby"),
		"noprovider.json":             withMD("noprovider", "provider", nil),
		"notimeout.json":              withMD("notimeout", "timeout", 0),
		"broken.json":                 []byte(`{"metadata": {"name": "broken",`),
		"noname.json":                 withMD("", "provider", "external"),
		"README.md":                   []byte("not an agent"),
		"other/different-name.json":   external("other"), // D/D.json only
		"choria_util/choria_util.txt": []byte("x"),
		"wild.json":                   external("*"),    // would subscribe to every agent's subject
		"dotdot.json":                 external("../x"), // would resolve outside the agent directory
		"spaced.json":                 external("a b"),  // not a subject token
	}
	for p, b := range files {
		writeFile(t, filepath.Join(dir, p), b, 0o644)
	}
	log, logs := newLogger()
	c := NewCatalog(CatalogConfig{Libdirs: []string{root}}, WithLogger(log))
	if err := c.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got, want := names(c.Agents()), []string{"good", "three"}; !slices.Equal(got, want) {
		t.Errorf("agents = %v, want %v", got, want)
	}
	out := logs.String()
	for _, want := range []string{
		"External agents are not allowed to supply an agent called 'rpcutil', skipping",
		"External agents are not allowed to supply an agent called 'discovery', skipping",
		"External agents are not allowed to supply an agent called 'scout', skipping",
		"Could not register external agent notimeout: invalid agent: timeout < 1",
		`refusing agent \"*\": names may only hold`,
		`refusing agent \"../x\"`,
		`refusing agent \"a b\"`,
		"could not load agent DDL",
		filepath.Join(dir, "broken.json"),
		filepath.Join(dir, "noname.json"),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

func TestCatalogDuplicates(t *testing.T) {
	first, second := t.TempDir(), t.TempDir()
	firstDDL := filepath.Join(first, "mcollective", "agent", "parrot.json")
	secondDDL := filepath.Join(second, "parrot.json")
	writeFile(t, firstDDL, agentDDL("parrot"), 0o644)
	writeFile(t, secondDDL, agentDDL("parrot"), 0o644)

	log, logs := newLogger()
	c := NewCatalog(CatalogConfig{Libdirs: []string{first}, PluginDirs: []string{second}}, WithLogger(log))
	if err := c.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	a, ok := c.Agent("parrot")
	if !ok || a.DDLPath != firstDDL {
		t.Fatalf("parrot = %+v, want the one in the first directory", a)
	}
	if !strings.Contains(logs.String(), "an agent with the same name was found first elsewhere") {
		t.Errorf("no duplicate warning:\n%s", logs.String())
	}

	if err := os.Remove(firstDDL); err != nil {
		t.Fatal(err)
	}
	res, err := c.reload(t.Context(), false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(res.change.Updated); !slices.Equal(got, []string{"parrot"}) || len(res.change.Added)+len(res.change.Removed) != 0 {
		t.Fatalf("change = %+v, want parrot updated", res.change)
	}
	if a, _ := c.Agent("parrot"); a.DDLPath != secondDDL {
		t.Errorf("DDLPath = %s, want %s", a.DDLPath, secondDDL)
	}
}

func TestCatalogActivation(t *testing.T) {
	errBroken := errors.New("activation exploded")
	tests := []struct {
		name       string
		activate   func(context.Context, *Agent) (bool, error)
		wantActive bool
		wantErr    error
	}{
		{name: "nil means active", wantActive: true},
		{name: "true", activate: func(context.Context, *Agent) (bool, error) { return true, nil }, wantActive: true},
		{name: "false", activate: func(context.Context, *Agent) (bool, error) { return false, nil }},
		{name: "error", activate: func(context.Context, *Agent) (bool, error) { return false, errBroken }, wantErr: errBroken},
		{name: "error wins over true", activate: func(context.Context, *Agent) (bool, error) { return true, errBroken }, wantErr: errBroken},
		{name: "timeout", activate: func(ctx context.Context, _ *Agent) (bool, error) {
			<-ctx.Done()
			return true, ctx.Err()
		}, wantErr: context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			writeFile(t, filepath.Join(root, "parrot.json"), agentDDL("parrot"), 0o644)
			writeFile(t, filepath.Join(root, "other.json"), agentDDL("other"), 0o644)
			var mu sync.Mutex
			var seen []string
			cfg := CatalogConfig{PluginDirs: []string{root}, ActivateTimeout: 50 * time.Millisecond}
			if tt.activate != nil {
				cfg.Activate = func(ctx context.Context, a *Agent) (Activation, error) {
					mu.Lock()
					seen = append(seen, a.Name+" "+a.Executable)
					mu.Unlock()
					ok, err := tt.activate(ctx, a)
					return Activation{Active: ok}, err
				}
			}
			c := NewCatalog(cfg)
			if err := c.Load(t.Context()); err != nil {
				t.Fatal(err)
			}
			if got := names(c.Agents()); !slices.Equal(got, []string{"other", "parrot"}) {
				t.Fatalf("agents = %v: inactive agents must be listed too", got)
			}
			a, _ := c.Agent("parrot")
			if a.Active != tt.wantActive {
				t.Errorf("Active = %v, want %v", a.Active, tt.wantActive)
			}
			if !errors.Is(a.ActivationError, tt.wantErr) || (tt.wantErr == nil) != (a.ActivationError == nil) {
				t.Errorf("ActivationError = %v, want %v", a.ActivationError, tt.wantErr)
			}
			if tt.activate != nil {
				want := "parrot " + filepath.Join(root, "parrot", archName("parrot"))
				if !slices.Contains(seen, want) {
					t.Errorf("Activate saw %q, want it to see %q", seen, want)
				}
			}
		})
	}
}

func TestCatalogActivationRerunOnUpdateOnly(t *testing.T) {
	root := t.TempDir()
	ddlPath := filepath.Join(root, "parrot.json")
	writeFile(t, ddlPath, agentDDL("parrot"), 0o644)
	calls := 0
	c := NewCatalog(CatalogConfig{PluginDirs: []string{root}, Activate: func(context.Context, *Agent) (Activation, error) {
		calls++
		return Activation{Active: true, WorkerVersions: []int{1}}, nil
	}})
	if err := c.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := c.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	if calls != 1 {
		t.Fatalf("Activate ran %d times for an unchanged agent, want 1", calls)
	}
	if a, _ := c.Agent("parrot"); !slices.Equal(a.WorkerVersions, []int{1}) {
		t.Errorf("WorkerVersions = %v, want the activation's [1]", a.WorkerVersions)
	}
	writeFile(t, ddlPath, agentDDL("parrot", func(md, _ map[string]any) { md["description"] = "same version, new text" }), 0o644)
	if err := c.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	if calls != 2 {
		t.Fatalf("Activate ran %d times after an update, want 2", calls)
	}
}

func TestCatalogLoadCancelled(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "parrot.json"), agentDDL("parrot"), 0o644)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	c := NewCatalog(CatalogConfig{PluginDirs: []string{root}})
	if err := c.Load(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Load = %v, want context.Canceled", err)
	}
	if got := c.Agents(); len(got) != 0 {
		t.Errorf("published %v after cancellation", names(got))
	}
}

func TestCatalogMissingDirectory(t *testing.T) {
	log, logs := newLogger()
	missing := filepath.Join(t.TempDir(), "nope")
	c := NewCatalog(CatalogConfig{Libdirs: []string{missing}, PluginDirs: []string{missing}}, WithLogger(log))
	if err := c.Load(t.Context()); err != nil {
		t.Fatalf("a missing directory must not fail Load: %v", err)
	}
	if len(c.Agents()) != 0 {
		t.Error("agents found in a missing directory")
	}
	if !strings.Contains(logs.String(), "agent directory does not exist") {
		t.Errorf("missing directory not logged:\n%s", logs.String())
	}
}

// fakeClock drives the settle rules without waiting.
type fakeClock struct{ t time.Time }

func (f *fakeClock) now() time.Time          { return f.t }
func (f *fakeClock) advance(d time.Duration) { f.t = f.t.Add(d) }

func writeAt(tb testing.TB, path string, content []byte, mtime time.Time) {
	tb.Helper()
	writeFile(tb, path, content, 0o644)
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		tb.Fatal(err)
	}
}

func TestCatalogSettle(t *testing.T) {
	const settle = time.Minute
	root := t.TempDir()
	ddlPath := filepath.Join(root, "parrot.json")
	clock := &fakeClock{t: time.Now().Add(time.Hour)}
	c := NewCatalog(CatalogConfig{PluginDirs: []string{root}, Settle: settle})
	c.now = clock.now
	reload := func() reloadResult {
		t.Helper()
		res, err := c.reload(t.Context(), false, nil)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	version := func() string {
		t.Helper()
		a, ok := c.Agent("parrot")
		if !ok {
			return ""
		}
		return a.DDL.Metadata.Version
	}
	withVersion := func(v string) []byte {
		return agentDDL("parrot", func(md, _ map[string]any) { md["version"] = v })
	}

	writeAt(t, ddlPath, withVersion("1"), clock.t)
	res := reload()
	if version() != "" {
		t.Fatal("a DDL written just now was loaded before it settled")
	}
	if want := clock.t.Add(settle); res.recheck.After(want) || res.recheck.Before(want.Add(-time.Second)) {
		t.Errorf("recheck = %v, want about %v", res.recheck, want)
	}
	clock.advance(settle)
	if res := reload(); version() != "1" || len(res.change.Added) != 1 {
		t.Fatalf("version %q, change %+v: want 1 added once settled", version(), res.change)
	}

	writeAt(t, ddlPath, withVersion("2"), clock.t)
	reload()
	clock.advance(settle / 2)
	writeAt(t, ddlPath, withVersion("3"), clock.t)
	reload()
	clock.advance(settle / 2)
	if reload(); version() != "1" {
		t.Fatalf("version %q loaded while the file kept changing", version())
	}
	clock.advance(settle / 2)
	res = reload()
	if version() != "3" || len(res.change.Updated) != 1 {
		t.Fatalf("version %q, change %+v: want 3 updated, never 2", version(), res.change)
	}

	// A file that has not been written to for a while loads at once
	// (an agent moved into place).
	other := filepath.Join(root, "other.json")
	writeAt(t, other, agentDDL("other"), clock.t.Add(-2*settle))
	if res := reload(); len(res.change.Added) != 1 || res.change.Added[0].Name != "other" {
		t.Fatalf("change %+v: want other added without waiting", res.change)
	}
}

func TestCatalogBrokenUpdateKeepsPrevious(t *testing.T) {
	root := t.TempDir()
	ddlPath := filepath.Join(root, "parrot.json")
	writeFile(t, ddlPath, agentDDL("parrot"), 0o644)
	log, logs := newLogger()
	c := NewCatalog(CatalogConfig{PluginDirs: []string{root}}, WithLogger(log))
	if err := c.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	before, _ := c.Agent("parrot")
	writeAt(t, ddlPath, []byte(`{"metadata":`), time.Now().Add(-time.Hour))
	res, err := c.reload(t.Context(), false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !res.change.Empty() {
		t.Errorf("change %+v for an unparseable DDL", res.change)
	}
	if after, _ := c.Agent("parrot"); after != before {
		t.Error("the loaded agent was replaced by an unparseable DDL")
	}
	if !strings.Contains(logs.String(), "keeping the version loaded before") {
		t.Errorf("not logged:\n%s", logs.String())
	}

	// Becoming unacceptable (not external any more) removes it.
	writeAt(t, ddlPath, agentDDL("parrot", func(md, _ map[string]any) { md["provider"] = "ruby" }), time.Now().Add(-time.Hour))
	if res, _ := c.reload(t.Context(), false, nil); len(res.change.Removed) != 1 {
		t.Errorf("change %+v, want parrot removed", res.change)
	}
}

// changeLog records what Watch reports.
type changeLog struct {
	mu      sync.Mutex
	changes []Change
}

func (l *changeLog) add(c Change) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.changes = append(l.changes, c)
}

// waitFor polls until some change after index from satisfies ok and
// returns the index after it.
func (l *changeLog) waitFor(tb testing.TB, from int, what string, ok func(Change) bool) (int, Change) {
	tb.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		l.mu.Lock()
		for i := from; i < len(l.changes); i++ {
			if ok(l.changes[i]) {
				c := l.changes[i]
				l.mu.Unlock()
				return i + 1, c
			}
		}
		l.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	tb.Fatalf("timed out waiting for %s; changes seen: %+v", what, l.changes[from:])
	return 0, Change{}
}

func (l *changeLog) since(from int) []Change {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.changes[from:])
}

func has(list []*Agent, name string) *Agent {
	for _, a := range list {
		if a.Name == name {
			return a
		}
	}
	return nil
}

// startWatch runs Watch until the test ends and checks it returns nil.
func startWatch(t *testing.T, c *Catalog) *changeLog {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log := &changeLog{}
	done := make(chan error, 1)
	go func() { done <- c.Watch(ctx, log.add) }()
	deadline := time.Now().Add(10 * time.Second)
	for !c.watching.Load() {
		if time.Now().After(deadline) {
			t.Fatal("Watch did not start")
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Watch returned %v, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Watch did not return after its context ended")
		}
	})
	return log
}

func TestCatalogWatch(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "mcollective", "agent")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	logger, logs := newLogger()
	c := NewCatalog(CatalogConfig{Libdirs: []string{root}, Settle: 100 * time.Millisecond}, WithLogger(logger))
	if err := c.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	changes := startWatch(t, c)
	second, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := c.Watch(second, nil); !errors.Is(err, ErrCatalogWatching) {
		t.Errorf("second Watch = %v, want ErrCatalogWatching", err)
	}
	ddlPath := filepath.Join(dir, "parrot.json")
	next := 0

	t.Run("add", func(t *testing.T) {
		writeFile(t, ddlPath, agentDDL("parrot"), 0o644)
		var ch Change
		next, ch = changes.waitFor(t, next, "parrot added", func(c Change) bool { return has(c.Added, "parrot") != nil })
		if a := has(ch.Added, "parrot"); a.Layout != LayoutMultiarch || !a.Active {
			t.Errorf("added %+v", a)
		}
		if a, ok := c.Agent("parrot"); !ok || a.DDLPath != ddlPath {
			t.Errorf("Agent(parrot) = %+v, %v", a, ok)
		}
	})

	t.Run("executable appears", func(t *testing.T) {
		writeExe(t, filepath.Join(dir, "parrot"))
		var ch Change
		next, ch = changes.waitFor(t, next, "parrot updated with its executable", func(c Change) bool { return has(c.Updated, "parrot") != nil })
		if a := has(ch.Updated, "parrot"); a.Layout != LayoutFlat || a.Executable != filepath.Join(dir, "parrot") {
			t.Errorf("updated %+v", a)
		}
	})

	t.Run("executable rebuilt", func(t *testing.T) {
		// Pooled workers run the old build until the agent is updated.
		writeFile(t, filepath.Join(dir, "parrot"), []byte("#!/bin/sh\nexit 1\n"), 0o755)
		next, _ = changes.waitFor(t, next, "parrot updated with its new build", func(c Change) bool { return has(c.Updated, "parrot") != nil })
	})

	t.Run("change without version bump", func(t *testing.T) {
		writeFile(t, ddlPath, agentDDL("parrot", func(md, _ map[string]any) { md["description"] = "edited" }), 0o644)
		var ch Change
		next, ch = changes.waitFor(t, next, "parrot updated", func(c Change) bool { return has(c.Updated, "parrot") != nil })
		if a := has(ch.Updated, "parrot"); a.DDL.Metadata.Description != "edited" {
			t.Errorf("updated DDL description %q", a.DDL.Metadata.Description)
		}
	})

	t.Run("remove", func(t *testing.T) {
		if err := os.Remove(ddlPath); err != nil {
			t.Fatal(err)
		}
		next, _ = changes.waitFor(t, next, "parrot removed", func(c Change) bool { return has(c.Removed, "parrot") != nil })
		if _, ok := c.Agent("parrot"); ok {
			t.Error("parrot still listed")
		}
	})

	t.Run("re-add", func(t *testing.T) {
		writeFile(t, ddlPath, agentDDL("parrot"), 0o644)
		next, _ = changes.waitFor(t, next, "parrot added again", func(c Change) bool { return has(c.Added, "parrot") != nil })
	})

	t.Run("new agent directory", func(t *testing.T) {
		writeFile(t, filepath.Join(dir, "owl", "owl.json"), agentDDL("owl"), 0o644)
		var ch Change
		next, ch = changes.waitFor(t, next, "owl added", func(c Change) bool { return has(c.Added, "owl") != nil })
		if a := has(ch.Added, "owl"); a.Layout != LayoutMultiarch {
			t.Errorf("owl layout %s", a.Layout)
		}
		writeExe(t, filepath.Join(dir, "owl", "owl", archName("owl")))
		next, _ = changes.waitFor(t, next, "owl's executable noticed", func(c Change) bool {
			a := has(c.Updated, "owl")
			return a != nil && a.exeFound
		})
	})

	t.Run("half-written DDL is never loaded half", func(t *testing.T) {
		full := agentDDL("slow", func(_, doc map[string]any) {
			actions := doc["actions"].([]any)
			doc["actions"] = append(actions, map[string]any{"action": "second", "display": "always"})
		})
		slowPath := filepath.Join(dir, "slow.json")
		from := next
		writeFile(t, slowPath, full[:len(full)/2], 0o644)
		// Wait until the catalog has judged the half file (after it settled).
		deadline := time.Now().Add(15 * time.Second)
		for !strings.Contains(logs.String(), `msg="could not load agent DDL" ddl=`+slowPath) {
			if time.Now().After(deadline) {
				t.Fatalf("the half-written DDL was never looked at:\n%s", logs.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
		writeFile(t, slowPath, full, 0o644)
		var ch Change
		next, ch = changes.waitFor(t, next, "slow added", func(c Change) bool { return has(c.Added, "slow") != nil })
		if a := has(ch.Added, "slow"); len(a.DDL.Actions) != 2 {
			t.Errorf("slow loaded with %d actions, want 2", len(a.DDL.Actions))
		}
		for _, ch := range changes.since(from)[:next-from-1] {
			if has(ch.Added, "slow") != nil {
				t.Errorf("slow added before it was complete: %+v", ch)
			}
		}
	})
}

func TestCatalogWatchFindsNewDirectory(t *testing.T) {
	root := t.TempDir()
	c := NewCatalog(CatalogConfig{Libdirs: []string{root}, Settle: 100 * time.Millisecond, Rescan: 200 * time.Millisecond})
	if err := c.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	changes := startWatch(t, c)
	// mcollective/agent does not exist yet, so only the rescan can see it.
	writeFile(t, filepath.Join(root, "mcollective", "agent", "late.json"), agentDDL("late"), 0o644)
	changes.waitFor(t, 0, "late added", func(c Change) bool { return has(c.Added, "late") != nil })
}

// TestCatalogNoticesNewBuilds: replacing an agent's executable, DDL
// unchanged, updates the agent once the new file has settled, so that
// pooled workers of the old build are replaced.
func TestCatalogNoticesNewBuilds(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "parrot.json"), agentDDL("parrot"), 0o644)
	exe := filepath.Join(root, "parrot")
	writeFile(t, exe, []byte("#!/bin/sh\n"), 0o755)
	now := time.Now()
	c := NewCatalog(CatalogConfig{PluginDirs: []string{root}, Settle: time.Minute})
	c.now = func() time.Time { return now }
	if err := c.Load(t.Context()); err != nil {
		t.Fatal(err)
	}

	// A new build, written in a new file and moved into place.
	next := filepath.Join(root, ".parrot.new")
	writeFile(t, next, []byte("#!/bin/sh\necho new\n"), 0o755)
	if err := os.Rename(next, exe); err != nil {
		t.Fatal(err)
	}
	res, err := c.reload(t.Context(), false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.change.Updated) != 0 || res.recheck.IsZero() {
		t.Fatalf("a build written just now was loaded (%d updated), or no recheck was planned (%v)", len(res.change.Updated), res.recheck)
	}
	now = now.Add(2 * time.Minute)
	if res, err = c.reload(t.Context(), false, nil); err != nil {
		t.Fatal(err)
	}
	if got := names(res.change.Updated); !slices.Equal(got, []string{"parrot"}) {
		t.Errorf("updated = %v after the build settled, want [parrot]", got)
	}
	if res, _ = c.reload(t.Context(), false, nil); len(res.change.Updated) != 0 {
		t.Errorf("an unchanged build was updated again: %v", names(res.change.Updated))
	}
}
