package main

import (
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agent-host/agent-host/cmd/internal/loadreport"
	gp "github.com/agent-host/agent-host/protocol/grpcplugin"
)

func TestGlyphsAreFiveBySeven(t *testing.T) {
	for r, g := range glyphs {
		rows := strings.Fields(g)
		if len(rows) != glyphH {
			t.Errorf("%q has %d rows", r, len(rows))
		}
		for _, row := range rows {
			if len(row) != glyphW || strings.Trim(row, ".#") != "" {
				t.Errorf("%q has row %q", r, row)
			}
		}
	}
}

func sampleResults() *Results {
	r := &Results{Date: "2026-01-01", Commit: "abc1234", CPUs: 2, Platform: "linux/amd64", Concurrency: []int{1, 4},
		Agents: benchAgents, Servers: []serverKind{serverRef, serverExec, serverPool}, Duration: "5s", Ramp: "1s"}
	for _, a := range benchAgents {
		if a.Pending != "" {
			continue
		}
		for _, c := range r.Concurrency {
			for i, s := range r.Servers {
				r.Rows = append(r.Rows, Row{Agent: a.Label, Server: s.Key, Mode: mode(s, a), Concurrency: c,
					PerSecond: float64(100 * (i + 1) * c), Counts: loadreport.Counts{OK: 500}, ServerCPU: 0.5, AgentsCPU: float64(i)})
			}
		}
	}
	r.Slow = []Row{{Agent: "pooltest sleep", Server: "exec", Concurrency: 64, Counts: loadreport.Counts{Sent: 10, OK: 10}}}
	r.Idle = []Idle{{Server: "pool", Agents: 50, RSSKiB: 20000, Workers: 2, WorkersRSSKiB: 8000}}
	return r
}

func TestPlotAndReport(t *testing.T) {
	dir := t.TempDir()
	r := sampleResults()
	plot := filepath.Join(dir, "bench.png")
	if err := writePlot(plot, r); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(plot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != plotW || b.Dy() != plotH {
		t.Errorf("plot is %v", b)
	}

	md := filepath.Join(dir, "B.md")
	if err := os.WriteFile(md, []byte("# B\n\n<!-- e2e:begin -->\nold\n<!-- e2e:end -->\n\n## Soak\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	o := options{out: md, plot: plot, slowConcurrency: 64}
	if err := writeSection(md, "e2e", e2eMarkdown(r, o)); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(md)
	doc := string(b)
	for _, want := range []string{"](bench.png)", "| `greeter hello` | agent-host pool | pooled | 4 | 1200 | 3.00× |", "| `parrot echo (Python SDK)` | agent-host pool | pooled | 4 |", "Pooled Python parrot", "## Soak"} {
		if !strings.Contains(doc, want) {
			t.Errorf("report lacks %q:\n%s", want, doc)
		}
	}
	if strings.Contains(doc, "old") {
		t.Error("the old section is still there")
	}
}

func TestInstallAgentRenames(t *testing.T) {
	lib := t.TempDir()
	if err := installAgent(lib, "../../testdata/agents/nodeinfo", "nodeinfo07"); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(lib, "mcollective", "agent", "nodeinfo07")
	b, err := os.ReadFile(filepath.Join(dir, "nodeinfo07.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"name": "nodeinfo07"`) {
		t.Errorf("DDL not renamed:\n%s", b)
	}
	if fi, err := os.Stat(filepath.Join(dir, "nodeinfo07")); err != nil || fi.Mode()&0o111 == 0 {
		t.Errorf("agent executable: %v %v", fi, err)
	}
}

func TestStartupTarget(t *testing.T) {
	for _, tt := range []struct {
		sdk, pymco float64
		want       string
	}{
		{80, 270, "0.30× — **met**"},
		{100, 270, "0.37× — **not met**"},
	} {
		var b strings.Builder
		s := &Startup{Runs: 5, Envs: []StartupTimes{{Venv: ".venv-sdk", MedianMS: tt.sdk}, {Venv: ".venv", MedianMS: tt.pymco}}}
		startupMarkdown(&b, s)
		startupTarget(&b, s)
		if !strings.Contains(b.String(), tt.want) || !strings.Contains(b.String(), "| `.venv-sdk` |") {
			t.Errorf("%v against %v:\n%s\nwant %q", tt.sdk, tt.pymco, b.String(), tt.want)
		}
	}
	var b strings.Builder
	startupTarget(&b, &Startup{Error: "no python3"})
	if !strings.Contains(b.String(), "not measured — **not met**") {
		t.Errorf("a failed measurement: %s", b.String())
	}
}

// TestHasPluginChild: a child started with go-plugin's cookie is found,
// and a process without such children is not taken for one.
func TestHasPluginChild(t *testing.T) {
	child := exec.Command("sleep", "30")
	child.Env = []string{gp.MagicCookieKey + "=x"}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })
	if !hasPluginChild(os.Getpid()) {
		t.Error("the child started with the cookie was not found")
	}
	if hasPluginChild(child.Process.Pid) {
		t.Error("a process without children has a plugin child")
	}
}
