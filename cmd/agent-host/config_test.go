package main_test

import (
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

func TestConfigList(t *testing.T) {
	out, err := exec.Command(bin, "config", "list", "^(ttl|rpcauthprovider|registerinterval)$").CombinedOutput()
	if err != nil {
		t.Fatalf("config list: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	want := []*regexp.Regexp{
		regexp.MustCompile(`^rpcauthprovider +The authorizer, compared without regard to case: .*\.$`),
		regexp.MustCompile(`^ttl +The time to live, in seconds, of messages this node creates\.$`),
		regexp.MustCompile(`^registerinterval +not supported: agent-host publishes no registration data: .+$`),
	}
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want), out)
	}
	for i, re := range want {
		if !re.MatchString(lines[i]) {
			t.Errorf("line %d = %q, want it to match %s", i+1, lines[i], re)
		}
	}
}

func TestConfigListLong(t *testing.T) {
	out, err := exec.Command(bin, "config", "list", "--long", "^ttl$|^plugin.nats.pass$|^plugin.choria.network|^rpcaudit$").CombinedOutput()
	if err != nil {
		t.Fatalf("config list --long: %v\n%s", err, out)
	}
	got := string(out)
	for _, w := range []string{
		"ttl\n    Type:        integer\n    Default:     60\n    Validation:  min=1\n\n    The time to live, in seconds,",
		"this one.\n",
		"plugin.nats.pass\n    Type:        string\n    Secret:      yes, the value is never shown\n",
		"rpcaudit\n    URL:         https://choria.io/docs/configuration/aaa/\n    Type:        boolean\n",
		"plugin.choria.network.*\n    Not supported by agent-host, ignored with a warning:\n    a setting of Choria Broker;",
	} {
		if !strings.Contains(got, w) {
			t.Errorf("output lacks %q:\n%s", w, got)
		}
	}
	if strings.Index(got, "plugin.choria.network.*") < strings.Index(got, "\nttl\n") {
		t.Errorf("unsupported keys are not listed last:\n%s", got)
	}
}

func TestConfigListErrors(t *testing.T) {
	for _, tc := range []struct{ arg, want string }{
		{"(", `agent-host: invalid regular expression "(": error parsing regexp: missing closing )`},
		{"^nosuchkey$", `agent-host: no configuration keys matching "^nosuchkey$"`},
	} {
		out, err := exec.Command(bin, "config", "list", tc.arg).CombinedOutput()
		if err == nil {
			t.Errorf("config list %q succeeded:\n%s", tc.arg, out)
			continue
		}
		if !strings.Contains(string(out), tc.want) {
			t.Errorf("config list %q: output %q lacks %q", tc.arg, out, tc.want)
		}
	}
}
