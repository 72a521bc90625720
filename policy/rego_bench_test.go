package policy

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/rego"
)

// benchPolicy is a site policy of the usual shape: admins anywhere, an
// operator group for some actions on some nodes, argument checks.
const benchPolicy = regoHeader + `default allow := false

admins := {"choria=alice.mcollective", "choria=root.mcollective"}

operators := {"choria=bob.mcollective", "choria=carol.mcollective", "choria=deploy.mcollective"}

allow if input.callerid in admins

allow if {
	input.agent == "rpcutil"
	input.action in {"ping", "inventory", "agent_inventory"}
}

allow if {
	input.callerid in operators
	input.agent == "myco"
	input.action in {"status", "deploy", "restart"}
	input.collective == "production"
	input.ttl <= 120
	input.facts.os.family == "RedHat"
	"webserver" in input.classes
	not input.provision_mode
	valid_deploy
}

valid_deploy if input.action != "deploy"

valid_deploy if {
	input.action == "deploy"
	input.data.component in {"web", "api", "worker"}
	input.data.count <= 10
	not input.data.force
}
`

func benchSetup(b *testing.B) (dir string, in *Input) {
	b.Helper()
	dir = b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "default.rego"), []byte(benchPolicy), 0o644); err != nil {
		b.Fatal(err)
	}
	facts := map[string]any{"os": map[string]any{"family": "RedHat", "release": "9.4"}, "role": "web"}
	for i := range 30 {
		facts[fmt.Sprintf("fact_%02d", i)] = fmt.Sprintf("value %d", i)
	}
	raw, err := json.Marshal(facts)
	if err != nil {
		b.Fatal(err)
	}
	in = sampleInput()
	in.CallerID = "choria=deploy.mcollective"
	in.Facts = raw
	in.Agents = []string{"choria_util", "filecheck", "myco", "parrot", "rpcutil", "scout"}
	return dir, in
}

// BenchmarkRegoPrepared is one request with the compiled, cached policy,
// once the file has settled: a stat of each candidate file and an
// evaluation.
func BenchmarkRegoPrepared(b *testing.B) {
	dir, in := benchSetup(b)
	time.Sleep(regoSettle + 100*time.Millisecond)
	r := NewRego(RegoOptions{Dir: dir})
	defer r.Close()
	ctx := context.Background()
	if _, err := r.Authorize(ctx, in); err != nil {
		b.Fatal(err)
	}
	reads := r.reads.Load()
	defer func() {
		if n := r.reads.Load() - reads; n != 0 {
			b.Fatalf("the settled policy was read %d times", n)
		}
	}()
	b.ReportAllocs()
	for b.Loop() {
		d, err := r.Authorize(ctx, in)
		if err != nil || !d.Allowed {
			b.Fatalf("%+v, %v", d, err)
		}
	}
}

// BenchmarkRegoRecompile is one request as Choria decides it: look the
// file up, read it, compile it, prepare the query and evaluate.
func BenchmarkRegoRecompile(b *testing.B) {
	dir, in := benchSetup(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		file := filepath.Join(dir, in.Agent+".rego")
		if _, err := os.Stat(file); err == nil {
			b.Fatal("no agent file expected")
		}
		file = filepath.Join(dir, "default.rego")
		if _, err := os.Stat(file); err != nil {
			b.Fatal(err)
		}
		src, err := os.ReadFile(file)
		if err != nil {
			b.Fatal(err)
		}
		pq, err := rego.New(rego.Query(RegoQuery), rego.Module(RegoPackage, string(src))).PrepareForEval(ctx)
		if err != nil {
			b.Fatal(err)
		}
		doc, _ := RegoInput(in)
		rs, err := pq.Eval(ctx, rego.EvalInput(doc))
		if err != nil || len(rs) != 1 || rs[0].Expressions[0].Value != true {
			b.Fatalf("%v, %v", rs, err)
		}
	}
}
