package main_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// examplePolicyConfig is testdata/policy/example's server.conf in a
// temporary directory, with its facts, classes and policies beside it.
func examplePolicyConfig(t *testing.T) (conf, policies string) {
	t.Helper()
	example := filepath.Join(repoRoot, "testdata", "policy", "example")
	dir := t.TempDir()
	if out, err := exec.Command("cp", "-R", filepath.Join(example, "policies"), filepath.Join(example, "facts.json"), filepath.Join(example, "classes.txt"), dir).CombinedOutput(); err != nil {
		t.Fatalf("copying the example: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(example, "server.conf"))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(b), "testdata/policy/example/", dir+"/")
	conf = filepath.Join(dir, "server.conf")
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return conf, filepath.Join(dir, "policies", "rego")
}

func TestPolicyEval(t *testing.T) {
	conf, policies := examplePolicyConfig(t)
	for _, tt := range []struct {
		name   string
		args   []string
		code   int
		policy string
	}{
		{"hello on a web server", []string{"parrot", "echo", "message=hello", "--caller", "choria=ada.mcollective"}, 0, "parrot.rego"},
		{"anything else", []string{"parrot", "echo", "message=bye", "--caller", "choria=ada.mcollective"}, 1, "parrot.rego"},
		{"a long ttl", []string{"parrot", "echo", "message=hello", "--caller", "choria=ada.mcollective", "--ttl", "3600"}, 1, "parrot.rego"},
		{"operators", []string{"parrot", "echo", "message=bye", "--caller", "choria=ops.mcollective"}, 0, "parrot.rego"},
		{"rpcutil from default.rego", []string{"rpcutil", "ping"}, 0, "default.rego"},
		{"no policy of its own", []string{"nodeinfo", "uptime", "--caller", "choria=ops.mcollective"}, 1, "default.rego"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"policy", "eval", "--config", conf, "--json", "--agents", "parrot"}, tt.args...)
			out, err := exec.Command(bin, args...).Output()
			if code := exitCode(err); code != tt.code {
				t.Fatalf("exit %d, want %d: %v\n%s", code, tt.code, err, out)
			}
			var res struct {
				Allowed    bool           `json:"allowed"`
				Policy     string         `json:"policy"`
				Authorizer string         `json:"authorizer"`
				Input      map[string]any `json:"input"`
			}
			if err := json.Unmarshal(out, &res); err != nil {
				t.Fatalf("%v:\n%s", err, out)
			}
			if res.Allowed != (tt.code == 0) || res.Policy != filepath.Join(policies, tt.policy) || !strings.Contains(res.Authorizer, "Rego policies from "+policies) {
				t.Errorf("result %+v, want allowed %v by %s", res, tt.code == 0, tt.policy)
			}
			// The input document is the host's: the node's facts and
			// classes, the configuration's collective and ttl.
			in := res.Input
			if in["agent"] != tt.args[0] || in["action"] != tt.args[1] || in["collective"] != "mcollective" || in["provision_mode"] != false {
				t.Errorf("input %v", in)
			}
			if facts, _ := in["facts"].(map[string]any); facts["environment"] != "production" {
				t.Errorf("facts %v", in["facts"])
			}
			// Sorted, as Choria reads a classes file.
			if classes, _ := in["classes"].([]any); len(classes) != 2 || classes[0] != "profiles::base" || classes[1] != "roles::web" {
				t.Errorf("classes %v", in["classes"])
			}
			if agents, _ := in["agents"].([]any); !reflect.DeepEqual(agents, []any{"choria_util", "discovery", "parrot", "rpcutil"}) {
				t.Errorf("agents %v", in["agents"])
			}
		})
	}

	t.Run("an agent the node does not have is said so", func(t *testing.T) {
		cmd := exec.Command(bin, "policy", "eval", "--config", conf, "--agents", "parrot", "nosuch", "x", "--caller", "choria=ops.mcollective")
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if exitCode(err) != 1 || !strings.Contains(stderr.String(), "this node has no agent nosuch") {
			t.Errorf("exit %d:\n%s\n%s", exitCode(err), out, stderr.String())
		}
	})

	t.Run("a broken policy denies and says why", func(t *testing.T) {
		if err := os.WriteFile(filepath.Join(policies, "parrot.rego"), []byte("package io.choria.mcorpc.authpolicy\nallow { true }\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bin, "policy", "eval", "--config", conf, "--agents", "parrot", "parrot", "echo", "message=hello").Output()
		if exitCode(err) != 1 || !strings.Contains(string(out), "DENIED") || !strings.Contains(string(out), "rego_v0_compatible") {
			t.Errorf("exit %d:\n%s", exitCode(err), out)
		}
	})
}

func TestPolicyTest(t *testing.T) {
	_, policies := examplePolicyConfig(t)
	out, err := exec.Command(bin, "policy", "test", policies).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "7 passed, 0 failed") {
		t.Fatalf("the example's tests: %v\n%s", err, out)
	}
	// A policy that no longer does what its tests say.
	if err := os.WriteFile(filepath.Join(policies, "parrot.rego"), []byte("package io.choria.mcorpc.authpolicy\n\ndefault allow := true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command(bin, "policy", "test", policies).CombinedOutput()
	if exitCode(err) != 1 || !strings.Contains(string(out), "3 failed") || !strings.Contains(string(out), "test_only_hello") {
		t.Errorf("exit %d:\n%s", exitCode(err), out)
	}
}
