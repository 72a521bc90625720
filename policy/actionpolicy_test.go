package policy

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agent-host/agent-host/protocol/filter"
)

// The node and request Choria's own actionpolicy tests use.
const (
	ginkgo = "choria=ginkgo.mcollective"

	factsDefault = `{"one": "one", "two": "two two", "three": "three three three", "digit": 1, "boolean": false, "nested": {"facts": "value"}}`
	factsFooBar  = `{"foo": "bar"}`
	factsFooBaz  = `{"foo": "baz"}`

	classesDefault = "one\ntwo\nthree"
	classesOther   = "other\nklasses"

	groupsFile = "# line to ignore\nsysadmin cert=sa1 cert=sa2 rspec_caller\napp_admin cert=aa1 cert=aa2\nsingle_group rspec_caller\ninvalid_group\n"
)

// Policies of Choria's documented examples, TABs as in its test files.
const (
	policyDefaultAllow = "policy default allow\n"
	policyDefaultDeny  = "policy default deny\n"
	example1           = "policy default deny\nallow\t\t*\t\t*\t\t*\t\t*\n"
	example2           = "policy default deny\nallow\t\tchoria=ginkgo.mcollective\t\t*\t\t*\t\t*\nallow\t\tchoria=ginkgo.mcollective /^up=.+/\t\t*\t\t*\t\t*"
	example3           = "policy default deny\nallow\t*\ttest\t*\t*\n"
	example4           = "policy default deny\nallow\t*\t*\tfoo=bar\t*\n"
	example5           = "policy default deny\nallow\t*\t*\t*\tthree\n"
	example6           = "policy default deny\nallow\tchoria=ginkgo.mcollective\ttest\t*\t*\n"
	example7           = "policy default deny\nallow\tchoria=ginkgo.mcollective\t*\tfoo=bar\t*\n"
	example8           = "policy default deny\nallow\tchoria=ginkgo.mcollective\t*\t*\tone\n"
	example9           = "policy default deny\nallow\tchoria=ginkgo.mcollective\ttest\tfoo=bar\t*\n"
	example10          = "policy default deny\nallow\tchoria=ginkgo.mcollective\ttest\t*\tone\n"
	example11          = "policy default deny\nallow\tchoria=ginkgo.mcollective\ttest\tfoo=bar\tone\n"
	example12          = "policy default deny\nallow\tchoria=ginkgo.mcollective\ttest\tfoo=bar and bar=foo\tone\n"
	example13          = "policy default deny\nallow\tchoria=ginkgo.mcollective\ttest\tfoo=bar\tone and two or three\n"
	example14          = "policy default deny\nallow\t\tchoria=ginkgo.mcollective\t\ttest\t\tfoo=bar and one or (two and one)\n"
	example15          = "policy default deny\n" +
		"allow\t\tchoria=ginkgo.mcollective\t\t\t*\t\t\t\t\t\t\t\t\t\t\t\t*\t\t\t\t\t\t\t\t*\n" +
		"allow\t\tchoria=two.mcollective\t\t\t*\t\t\t\t\t\t\t\t\t\t\t\tfoo=bar\t\t\t\t\t\t\t\tone\n" +
		"allow\t\tchoria=three.mcollective\t\t\tenable disable status\t\tfoo=bar\t\t*\n" +
		"allow\t\tchoria=four.mcollective\t\t\trestart\t\t\t\t\t\t\t\t\t(puppet().enabled=false and environment=production) or environment=development"
	example16 = "policy default deny\nallow\tuid=500 uid=600 uid=700\t*\t*\t\t*\n\n"
	example17 = "policy default deny\nallow\tsysadmin app_admin\t*\t*\t*\n"
)

// Reasons for the policy of agent ginkgo.
const (
	allowedByDefault = "Allowing based on default policy in ginkgo.policy"
	deniedByDefault  = "Denying based on default policy in ginkgo.policy"
	allowedByLine    = "Allowing based on explicit 'allow' policy in ginkgo.policy"
	deniedByLine     = "Denying based on explicit 'deny' policy in ginkgo.policy"
)

// compoundWarning is logged for every line skipped as compound.
const compoundWarning = "skipping a line with a compound statement"

type apCase struct {
	name string
	// policy is ginkgo.policy; empty for none. files are the other files
	// of the policies directory.
	policy string
	files  map[string]string
	opts   ActionPolicyOptions

	// The request: Choria's test request where left empty.
	agent, caller, action, facts, classes string
	noClasses                             bool

	want       bool
	wantReason string
	// wantPolicy is the file the decision names, relative to the
	// policies directory; "ginkgo.policy" when empty.
	wantPolicy string
	wantErr    error
	// wantErrText is part of the error's message, required with wantErr.
	wantErrText string
	// wantLog is part of the log; without it nothing may be logged at
	// warning level or above.
	wantLog string
}

// apDir writes files into a new policies directory; a name ending in /
// is a directory.
func apDir(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if strings.HasSuffix(name, "/") {
			if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// apInput is Choria's test request, changed where c says.
func apInput(t testing.TB, c apCase) *Input {
	t.Helper()
	in := &Input{Agent: "ginkgo", Action: "test", CallerID: ginkgo}
	if c.agent != "" {
		in.Agent = c.agent
	}
	if c.caller != "" {
		in.CallerID = c.caller
	}
	if c.action != "" {
		in.Action = c.action
	}
	facts := factsDefault
	if c.facts != "" {
		facts = c.facts
	}
	normalized, err := filter.NormalizeFacts([]byte(facts))
	if err != nil {
		t.Fatalf("facts of the case: %v", err)
	}
	in.Facts = normalized
	switch {
	case c.noClasses:
		// A classes file that does not exist: no classes.
		in.Classes = []string{}
	case c.classes != "":
		in.Classes = filter.ParseClasses([]byte(c.classes))
	default:
		in.Classes = filter.ParseClasses([]byte(classesDefault))
	}
	return in
}

// syncBuffer is a log sink the race detector accepts being read while
// handlers write to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func testLogger() (*slog.Logger, *syncBuffer) {
	buf := &syncBuffer{}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

func runAPCases(t *testing.T, cases []apCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			files := maps.Clone(c.files)
			if files == nil {
				files = map[string]string{}
			}
			if c.policy != "" {
				files["ginkgo.policy"] = c.policy
			}
			dir := apDir(t, files)
			log, logs := testLogger()
			o := c.opts
			o.Dir, o.Logger = dir, log

			d, err := NewActionPolicy(o).Authorize(t.Context(), apInput(t, c))

			if c.wantErr != nil {
				if err == nil || (c.wantErr != errAny && !errors.Is(err, c.wantErr)) {
					t.Fatalf("error %v, want %v", err, c.wantErr)
				}
				if c.wantErrText == "" || !strings.Contains(err.Error(), c.wantErrText) {
					t.Fatalf("error %q does not say %q", err, c.wantErrText)
				}
				if d.Allowed {
					t.Fatalf("an error allowed the request: %+v", d)
				}
			} else if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}

			if d.Allowed != c.want {
				t.Errorf("allowed %v, want %v (%+v)", d.Allowed, c.want, d)
			}
			if c.wantErr == nil {
				if d.Reason != c.wantReason {
					t.Errorf("reason %q, want %q", d.Reason, c.wantReason)
				}
				wantPolicy := c.wantPolicy
				if wantPolicy == "" {
					wantPolicy = "ginkgo.policy"
				}
				if d.Policy != filepath.Join(dir, wantPolicy) {
					t.Errorf("policy %q, want %q", d.Policy, filepath.Join(dir, wantPolicy))
				}
			}

			got := logs.String()
			if c.wantLog != "" {
				if !strings.Contains(got, c.wantLog) {
					t.Errorf("log does not say %q:\n%s", c.wantLog, got)
				}
			} else if strings.Contains(got, "level=WARN") || strings.Contains(got, "level=ERROR") {
				t.Errorf("unexpected warnings:\n%s", got)
			}
		})
	}
}

// TestActionPolicyChoriaCases ports the cases of go-choria's
// authz_actionpolicy_test.go: same policies and requests, same verdicts.
func TestActionPolicyChoriaCases(t *testing.T) {
	runAPCases(t, []apCase{
		{name: "default allow", policy: policyDefaultAllow, want: true, wantReason: allowedByDefault},
		{name: "default deny", policy: policyDefaultDeny, wantReason: deniedByDefault},

		{name: "example1 allows all", policy: example1, want: true, wantReason: allowedByLine},

		{name: "example2 right caller", policy: example2, want: true, wantReason: allowedByLine},
		{name: "example2 wrong caller", policy: example2, caller: "other", wantReason: deniedByDefault},
		{name: "example2 regex caller", policy: example2, caller: "up=bob", want: true, wantReason: allowedByLine},

		{name: "example3 matching action", policy: example3, want: true, wantReason: allowedByLine},
		{name: "example3 other action", policy: example3, action: "other", wantReason: deniedByDefault},

		{name: "example4 matching fact", policy: example4, facts: factsFooBar, want: true, wantReason: allowedByLine},
		{name: "example4 other fact", policy: example4, facts: factsFooBaz, wantReason: deniedByDefault},

		{name: "example5 matching class", policy: example5, want: true, wantReason: allowedByLine},
		{name: "example5 other classes", policy: example5, classes: classesOther, wantReason: deniedByDefault},

		{name: "example6 caller and action", policy: example6, want: true, wantReason: allowedByLine},
		{name: "example6 other action", policy: example6, action: "other", wantReason: deniedByDefault},
		{name: "example6 other caller and action", policy: example6, action: "other", caller: "other", wantReason: deniedByDefault},

		{name: "example7 caller and fact", policy: example7, facts: factsFooBar, want: true, wantReason: allowedByLine},
		{name: "example7 other fact", policy: example7, facts: factsFooBaz, wantReason: deniedByDefault},
		{name: "example7 other caller", policy: example7, facts: factsFooBar, caller: "other", wantReason: deniedByDefault},

		{name: "example8 caller and class", policy: example8, want: true, wantReason: allowedByLine},
		{name: "example8 other classes", policy: example8, classes: classesOther, wantReason: deniedByDefault},
		{name: "example8 no classes file", policy: example8, noClasses: true, wantReason: deniedByDefault},
		{name: "example8 other caller", policy: example8, caller: "other", wantReason: deniedByDefault},

		{name: "example9 caller action fact", policy: example9, facts: factsFooBar, want: true, wantReason: allowedByLine},
		{name: "example9 other caller", policy: example9, facts: factsFooBar, caller: "other", wantReason: deniedByDefault},
		{name: "example9 other fact", policy: example9, facts: factsFooBaz, wantReason: deniedByDefault},
		{name: "example9 other action", policy: example9, facts: factsFooBar, action: "other", wantReason: deniedByDefault},

		{name: "example10 caller action class", policy: example10, want: true, wantReason: allowedByLine},
		{name: "example10 other caller", policy: example10, caller: "other", wantReason: deniedByDefault},
		{name: "example10 other action", policy: example10, action: "other", wantReason: deniedByDefault},
		{name: "example10 other classes", policy: example10, classes: classesOther, wantReason: deniedByDefault},

		{name: "example11 every column", policy: example11, facts: factsFooBar, want: true, wantReason: allowedByLine},
		{name: "example11 other caller", policy: example11, caller: "other", wantReason: deniedByDefault},
		{name: "example11 other action", policy: example11, action: "other", wantReason: deniedByDefault},
		{name: "example11 other fact", policy: example11, facts: factsFooBaz, wantReason: deniedByDefault},
		{name: "example11 other classes", policy: example11, facts: factsFooBar, classes: classesOther, wantReason: deniedByDefault},

		{name: "example12 compound facts skipped", policy: example12, facts: factsFooBar, wantReason: deniedByDefault, wantLog: compoundWarning},
		{name: "example13 compound classes skipped", policy: example13, facts: factsFooBar, wantReason: deniedByDefault, wantLog: compoundWarning},
		{name: "example14 compound facts, no classes column, skipped", policy: example14, facts: factsFooBar, wantReason: deniedByDefault, wantLog: compoundWarning},

		{name: "example15 line 1", policy: example15, want: true, wantReason: allowedByLine, wantLog: compoundWarning},
		{name: "example15 line 1 other caller", policy: example15, caller: "other", wantReason: deniedByDefault, wantLog: compoundWarning},
		{name: "example15 line 2", policy: example15, caller: "choria=two.mcollective", facts: factsFooBar, want: true, wantReason: allowedByLine, wantLog: compoundWarning},
		{name: "example15 line 2 other fact", policy: example15, caller: "choria=two.mcollective", facts: factsFooBaz, wantReason: deniedByDefault, wantLog: compoundWarning},
		{name: "example15 line 3 enable", policy: example15, caller: "choria=three.mcollective", action: "enable", facts: factsFooBar, want: true, wantReason: allowedByLine, wantLog: compoundWarning},
		{name: "example15 line 3 disable", policy: example15, caller: "choria=three.mcollective", action: "disable", facts: factsFooBar, want: true, wantReason: allowedByLine, wantLog: compoundWarning},
		{name: "example15 line 3 status", policy: example15, caller: "choria=three.mcollective", action: "status", facts: factsFooBar, want: true, wantReason: allowedByLine, wantLog: compoundWarning},
		{name: "example15 line 3 other action", policy: example15, caller: "choria=three.mcollective", action: "other", facts: factsFooBar, wantReason: deniedByDefault, wantLog: compoundWarning},
		{name: "example15 line 3 other fact", policy: example15, caller: "choria=three.mcollective", action: "status", facts: factsFooBaz, wantReason: deniedByDefault, wantLog: compoundWarning},
		{name: "example15 line 4 compound skipped", policy: example15, caller: "choria=four.mcollective", action: "restart", wantReason: deniedByDefault, wantLog: compoundWarning},

		{name: "example16 uid=500", policy: example16, caller: "uid=500", want: true, wantReason: allowedByLine},
		{name: "example16 uid=600", policy: example16, caller: "uid=600", want: true, wantReason: allowedByLine},
		{name: "example16 uid=700", policy: example16, caller: "uid=700", want: true, wantReason: allowedByLine},
		{name: "example16 other caller", policy: example16, wantReason: deniedByDefault},

		// The groups file has a line without members, which is logged.
		{name: "example17 sysadmin", policy: example17, files: map[string]string{"groups": groupsFile}, caller: "cert=sa1", want: true, wantReason: allowedByLine, wantLog: "skipping a group line without members"},
		{name: "example17 app_admin", policy: example17, files: map[string]string{"groups": groupsFile}, caller: "cert=aa1", want: true, wantReason: allowedByLine, wantLog: "skipping a group line without members"},
		{name: "example17 not in a group", policy: example17, files: map[string]string{"groups": groupsFile}, wantReason: deniedByDefault, wantLog: "skipping a group line without members"},

		// Choria's tests of the single columns, each as a line of its own.
		{name: "facts column *", policy: "allow\t*\t*\t*\t*", want: true, wantReason: allowedByLine},
		{name: "facts column compound", policy: "allow\t*\t*\tthis and that\t*", wantReason: deniedByDefault, wantLog: compoundWarning},
		{name: "facts column invalid", policy: "allow\t*\t*\tfoo bar\t*", wantErr: ErrInvalidPolicy, wantErrText: `invalid fact matcher: filter: invalid fact filter "foo"`, wantLog: "this line denies every request"},
		{name: "fact equal", policy: "allow\t*\t*\tone=one\t*", want: true, wantReason: allowedByLine},
		{name: "fact regex", policy: "allow\t*\t*\tone=~/n/\t*", want: true, wantReason: allowedByLine},
		{name: "nested fact regex not matching", policy: "allow\t*\t*\tnested.facts=~/^al/\t*", wantReason: deniedByDefault},
		{name: "nested fact regex", policy: "allow\t*\t*\tnested.facts=~/^val/\t*", want: true, wantReason: allowedByLine},
		{name: "classes column missing", policy: "allow\t*\t*\t*", wantErr: ErrInvalidPolicy, wantErrText: "line 1 has no classes column", wantLog: "this line denies every request"},
		{name: "classes column compound", policy: "allow\t*\t*\t*\tfoo and bar", wantReason: deniedByDefault, wantLog: compoundWarning},
		{name: "classes all present", policy: "allow\t*\t*\t*\tone two three", want: true, wantReason: allowedByLine},
		{name: "classes one missing", policy: "allow\t*\t*\t*\tone two four", wantReason: deniedByDefault},
		{name: "actions * ", policy: "allow\t*\t*\t*\t*", action: "install", want: true, wantReason: allowedByLine},
		{name: "actions list install", policy: "allow\t*\tone two three\t*\t*", action: "install", wantReason: deniedByDefault},
		{name: "actions list one", policy: "allow\t*\tone two three\t*\t*", action: "one", want: true, wantReason: allowedByLine},
		{name: "actions list two", policy: "allow\t*\tone two three\t*\t*", action: "two", want: true, wantReason: allowedByLine},
		{name: "actions list three", policy: "allow\t*\tone two three\t*\t*", action: "three", want: true, wantReason: allowedByLine},
		{name: "callers *", policy: "allow\t*\t*\t*\t*", caller: "choria=bob", want: true, wantReason: allowedByLine},
		{name: "callers list bob", policy: "allow\tchoria=bob choria=jill\t*\t*\t*", caller: "choria=bob", want: true, wantReason: allowedByLine},
		{name: "callers list jill", policy: "allow\tchoria=bob choria=jill\t*\t*\t*", caller: "choria=jill", want: true, wantReason: allowedByLine},
		{name: "callers list jane", policy: "allow\tchoria=bob choria=jill\t*\t*\t*", caller: "choria=jane", wantReason: deniedByDefault},
		{name: "callers regex list bob", policy: "allow\tchoria=bob /^up=/ choria=jill\t*\t*\t*", caller: "choria=bob", want: true, wantReason: allowedByLine},
		{name: "callers regex list up=foo", policy: "allow\tchoria=bob /^up=/ choria=jill\t*\t*\t*", caller: "up=foo", want: true, wantReason: allowedByLine},
		{name: "callers regex list up=other", policy: "allow\tchoria=bob /^up=/ choria=jill\t*\t*\t*", caller: "up=other", want: true, wantReason: allowedByLine},
		{name: "callers regex list up^other", policy: "allow\tchoria=bob /^up=/ choria=jill\t*\t*\t*", caller: "up^other", wantReason: deniedByDefault},
		{name: "callers regex list jill", policy: "allow\tchoria=bob /^up=/ choria=jill\t*\t*\t*", caller: "choria=jill", want: true, wantReason: allowedByLine},
		{name: "callers empty regex", policy: "allow\tchoria=bob //\t*\t*\t*", caller: "up=foo", wantReason: deniedByDefault, wantLog: `line=1 caller=//`},
		{name: "callers bad regex", policy: "allow\tchoria=bob /*/\t*\t*\t*", caller: "up=foo", wantReason: deniedByDefault, wantLog: "error=\"error parsing regexp: missing argument to repetition operator: `*`\""},
		{name: "callers groups sa1", policy: "allow\tapp_admin sysadmin\t*\t*\t*", files: map[string]string{"groups": groupsFile}, caller: "cert=sa1", want: true, wantReason: allowedByLine, wantLog: "skipping a group line without members"},
		{name: "callers groups aa1", policy: "allow\tapp_admin sysadmin\t*\t*\t*", files: map[string]string{"groups": groupsFile}, caller: "cert=aa1", want: true, wantReason: allowedByLine, wantLog: "skipping a group line without members"},
		{name: "callers groups other", policy: "allow\tapp_admin sysadmin\t*\t*\t*", files: map[string]string{"groups": groupsFile}, caller: "other", wantReason: deniedByDefault, wantLog: "skipping a group line without members"},
	})
}

// TestActionPolicyLookup covers which file decides: Choria's lookup and
// its plugin.actionpolicy.* settings.
func TestActionPolicyLookup(t *testing.T) {
	runAPCases(t, []apCase{
		{name: "no policy file", wantErr: ErrNoPolicyFile, wantErrText: "no policy found for ginkgo"},
		{
			name: "allow_unconfigured does not allow an agent without a policy", opts: ActionPolicyOptions{AllowUnconfigured: true},
			wantErr: ErrNoPolicyFile, wantErrText: "no policy found for ginkgo",
		},
		{
			name: "default policy unused unless enabled", files: map[string]string{"default.policy": policyDefaultAllow},
			wantErr: ErrNoPolicyFile, wantErrText: "enable_default is off",
		},
		{
			name: "enable_default uses default.policy", files: map[string]string{"default.policy": policyDefaultAllow}, opts: ActionPolicyOptions{EnableDefault: true},
			want: true, wantReason: "Allowing based on default policy in default.policy", wantPolicy: "default.policy",
		},
		{
			name: "enable_default prefers the agent's policy", policy: policyDefaultDeny, files: map[string]string{"default.policy": policyDefaultAllow}, opts: ActionPolicyOptions{EnableDefault: true},
			wantReason: deniedByDefault,
		},
		{
			name: "default_name", files: map[string]string{"default.policy": policyDefaultDeny, "fallback.policy": policyDefaultAllow}, opts: ActionPolicyOptions{EnableDefault: true, DefaultName: "fallback"},
			want: true, wantReason: "Allowing based on default policy in fallback.policy", wantPolicy: "fallback.policy",
		},
		{
			name: "enable_default without a default file", opts: ActionPolicyOptions{EnableDefault: true},
			wantErr: ErrNoPolicyFile, wantErrText: "(ginkgo.policy or default.policy)",
		},
		{
			name: "agent name leaving the directory", agent: "../ginkgo", policy: policyDefaultAllow,
			wantErr: errAny, wantErrText: `agent name "../ginkgo" cannot name a policy file`,
		},
		{
			name: "policy larger than the limit", policy: policyDefaultAllow + strings.Repeat("#\n", MaxActionPolicyBytes/2),
			wantErr: ErrPolicyFileTooLarge, wantErrText: "has 1048597 bytes, more than 1048576",
		},
		{
			name: "policy at the limit", policy: policyDefaultAllow + padding(MaxActionPolicyBytes-len(policyDefaultAllow)),
			want: true, wantReason: allowedByDefault,
		},
		{
			name: "groups larger than the limit", policy: example17, caller: "cert=sa1", files: map[string]string{"groups": strings.Repeat("#\n", MaxActionPolicyBytes)},
			wantErr: ErrPolicyFileTooLarge, wantErrText: "reading actionpolicy groups",
		},
	})
}

// padding is n bytes of comment lines.
func padding(n int) string {
	return strings.Repeat("#\n", n/2) + strings.Repeat("#", n%2)
}

// errAny matches any error: for the errors that have no sentinel.
var errAny = errors.New("any error")

// TestActionPolicyGrammar covers the file format beyond Choria's tests,
// quirks included.
func TestActionPolicyGrammar(t *testing.T) {
	longLine := "#" + strings.Repeat("x", 64<<10)
	runAPCases(t, []apCase{
		{name: "allow_unconfigured without a default line", policy: "allow\tother\t*\t*\t*\n", opts: ActionPolicyOptions{AllowUnconfigured: true}, want: true, wantReason: allowedByDefault},
		{name: "deny without a default line", policy: "allow\tother\t*\t*\t*\n", wantReason: deniedByDefault},
		{name: "empty file, allow_unconfigured", policy: "\n", opts: ActionPolicyOptions{AllowUnconfigured: true}, want: true, wantReason: allowedByDefault},
		{name: "default line beats allow_unconfigured", policy: policyDefaultDeny, opts: ActionPolicyOptions{AllowUnconfigured: true}, wantReason: deniedByDefault},
		{name: "last default line wins", policy: "policy default allow\npolicy default deny\n", wantReason: deniedByDefault},
		{name: "default line after the rules", policy: "allow\tother\t*\t*\t*\npolicy default allow\n", want: true, wantReason: allowedByDefault},
		{name: "default word is case-sensitive", policy: "policy default ALLOW\n", opts: ActionPolicyOptions{AllowUnconfigured: true}, wantReason: deniedByDefault},
		{name: "default word is whole", policy: "policy default allowed\n", opts: ActionPolicyOptions{AllowUnconfigured: true}, wantReason: deniedByDefault},
		{name: "default line ignores what follows the word", policy: "policy\tdefault  allow, for now\n", want: true, wantReason: allowedByDefault},
		{name: "default line without a word", policy: "policy default\n", opts: ActionPolicyOptions{AllowUnconfigured: true}, want: true, wantReason: allowedByDefault, wantLog: "neither a rule nor a policy default"},
		{
			name:       "comments and blank lines",
			policy:     "# policy default allow\n\n   \n\t\r\npolicy default deny\n#allow\t*\t*\t*\t*\n",
			wantReason: deniedByDefault,
		},
		{name: "indented comment is an invalid line", policy: "  # allow everyone\npolicy default allow\n", want: true, wantReason: allowedByDefault, wantLog: `line=1 text="  # allow everyone"`},
		{name: "spaces are not separators", policy: "policy default deny\nallow * * * *\n", wantReason: deniedByDefault, wantLog: `line=2 text="allow * * * *"`},
		{name: "verb is case-sensitive", policy: "policy default deny\nAllow\t*\t*\t*\t*\n", wantReason: deniedByDefault, wantLog: "neither a rule nor a policy default"},
		{name: "CRLF line ends", policy: "policy default deny\r\nallow\t*\t*\t*\t*\r\n", want: true, wantReason: allowedByLine},
		{name: "explicit deny", policy: "policy default allow\ndeny\tchoria=ginkgo.mcollective\t*\t*\t*\nallow\t*\t*\t*\t*\n", wantReason: deniedByLine},
		{name: "first match wins: allow", policy: "allow\t*\ttest\t*\t*\ndeny\t*\t*\t*\t*\n", want: true, wantReason: allowedByLine},
		{name: "first match wins: deny", policy: "deny\t*\ttest\t*\t*\nallow\t*\t*\t*\t*\n", wantReason: deniedByLine},
		{name: "non-matching deny line passes", policy: "deny\tother\t*\t*\t*\nallow\t*\t*\t*\t*\n", want: true, wantReason: allowedByLine},
		{name: "five columns: the last is the classes", policy: "allow\t*\t*\t*\tnosuch\tone\n", want: true, wantReason: allowedByLine},
		{name: "five columns: the fourth is ignored", policy: "allow\t*\t*\t*\tone\tnosuch\n", wantReason: deniedByDefault},
		{name: "trailing TAB joins the classes", policy: "allow\t*\t*\t*\t*\t\n", wantReason: deniedByDefault},
		{name: "* in a list is no wildcard", policy: "allow\t* other\t*\t*\t*\n", wantReason: deniedByDefault},
		{name: "no classes column, other caller", policy: "allow\tother\t*\t*\npolicy default allow\n", want: true, wantReason: allowedByDefault, wantLog: "this line denies every request"},
		{name: "no classes column in a deny line", policy: "deny\t*\t*\t*\npolicy default allow\n", wantErr: ErrInvalidPolicy, wantErrText: "line 1 has no classes column", wantLog: "this line denies every request"},
		{name: "invalid fact, default allow", policy: "policy default allow\nallow\t*\t*\tfoo bar\t*\n", wantErr: ErrInvalidPolicy, wantErrText: "line 2: invalid fact matcher", wantLog: "this line denies every request"},
		{name: "invalid fact, other caller", policy: "policy default allow\nallow\tother\t*\tfoo bar\t*\n", want: true, wantReason: allowedByDefault, wantLog: "this line denies every request"},
		{name: "invalid fact, other action", policy: "policy default allow\nallow\t*\tother\tfoo bar\t*\n", want: true, wantReason: allowedByDefault, wantLog: "this line denies every request"},
		{name: "fact in the classes column", policy: "allow\t*\t*\t*\tone=two\n", wantErr: ErrInvalidPolicy, wantErrText: `fact "one=two" found where a class was expected`, wantLog: "this line denies every request"},
		{name: "fact in the classes column, facts not matching", policy: "allow\t*\t*\tone=nope\tone=two\n", wantErr: ErrInvalidPolicy, wantErrText: "found where a class was expected", wantLog: "this line denies every request"},
		{name: "invalid fact reported before the classes", policy: "allow\t*\t*\tfoo\tone=two\n", wantErr: ErrInvalidPolicy, wantErrText: "invalid fact matcher", wantLog: "this line denies every request"},
		{name: "compound with !", policy: "allow\t*\t*\t!one=one\t*\npolicy default allow\n", want: true, wantReason: allowedByDefault, wantLog: compoundWarning},
		{name: "compound with parentheses", policy: "allow\t*\t*\t*\t(one)\n", wantReason: deniedByDefault, wantLog: compoundWarning},
		{name: "compound with not", policy: "allow\t*\t*\t*\tnot one\n", wantReason: deniedByDefault, wantLog: compoundWarning},
		{name: "compound words in callers are callers", policy: "allow\tnot or and\t*\t*\t*\n", caller: "and", want: true, wantReason: allowedByLine},
		{name: "line beyond 64 KiB", policy: "allow\tother\t*\t*\t*\n" + longLine + "\npolicy default allow\n", wantErr: errAny, wantErrText: "after line 1: bufio.Scanner: token too long", wantLog: "cannot read the policy beyond a line"},
		{name: "line beyond 64 KiB after the deciding line", policy: "allow\t*\t*\t*\t*\n" + longLine + "\n", want: true, wantReason: allowedByLine, wantLog: "cannot read the policy beyond a line"},
	})
}

// TestActionPolicyColumns covers the matching of each column beyond
// Choria's tests.
func TestActionPolicyColumns(t *testing.T) {
	groups := map[string]string{"groups": "ops choria=ginkgo.mcollective\ntabbed\tchoria=ginkgo.mcollective\nbad/name choria=ginkgo.mcollective\nredone choria=ginkgo.mcollective\nredone other\n"}
	runAPCases(t, []apCase{
		{name: "caller before a bad regex", policy: "allow\tchoria=ginkgo.mcollective //\t*\t*\t*\n", want: true, wantReason: allowedByLine, wantLog: "invalid caller matcher"},
		{name: "caller after a bad regex", policy: "allow\t// choria=ginkgo.mcollective\t*\t*\t*\n", wantReason: deniedByDefault, wantLog: "invalid caller matcher"},
		{name: "caller after a regex that does not compile", policy: "allow\t/(/ choria=ginkgo.mcollective\t*\t*\t*\n", wantReason: deniedByDefault, wantLog: "cannot compile a caller regular expression"},
		{name: "caller equal to a bad regex", policy: "allow\t//\t*\t*\t*\n", caller: "//", want: true, wantReason: allowedByLine, wantLog: "invalid caller matcher"},
		{name: "groups are checked before a bad regex", policy: "allow\t// ops\t*\t*\t*\n", files: groups, want: true, wantReason: allowedByLine, wantLog: "invalid caller matcher"},
		{name: "caller regex is unanchored", policy: "allow\t/ginkgo/\t*\t*\t*\n", want: true, wantReason: allowedByLine},
		{name: "a slash only at the end is a caller ID", policy: "allow\tginkgo/\t*\t*\t*\n", caller: "ginkgo/", want: true, wantReason: allowedByLine},
		{name: "group", policy: "allow\tops\t*\t*\t*\n", files: groups, want: true, wantReason: allowedByLine, wantLog: "skipping"},
		{name: "group line with a TAB is no group", policy: "allow\ttabbed\t*\t*\t*\n", files: groups, wantReason: deniedByDefault, wantLog: `line=2 text="tabbed\tchoria=ginkgo.mcollective"`},
		{name: "group with an invalid name", policy: "allow\tbad/name\t*\t*\t*\n", files: groups, wantReason: deniedByDefault, wantLog: `line=3 group=bad/name`},
		{name: "group redefined", policy: "allow\tredone\t*\t*\t*\n", files: groups, wantReason: deniedByDefault, wantLog: "skipping"},
		{name: "group redefined, new member", policy: "allow\tredone\t*\t*\t*\n", files: groups, caller: "other", want: true, wantReason: allowedByLine, wantLog: "skipping"},
		{name: "unknown group", policy: "allow\tops\t*\t*\t*\n", wantReason: deniedByDefault},
		{name: "groups file unreadable is no groups", policy: "allow\tops\t*\t*\t*\npolicy default allow\n", files: map[string]string{"groups/": ""}, want: true, wantReason: allowedByDefault, wantLog: "going on without groups"},
		{name: "action is exact", policy: "allow\t*\tstat\t*\t*\n", action: "status", wantReason: deniedByDefault},
		{name: "number greater", policy: "allow\t*\t*\tdigit>0\t*\n", want: true, wantReason: allowedByLine},
		{name: "number less", policy: "allow\t*\t*\tdigit<1\t*\n", wantReason: deniedByDefault},
		{name: "number at least", policy: "allow\t*\t*\tdigit>=1\t*\n", want: true, wantReason: allowedByLine},
		{name: "number at least, other spelling", policy: "allow\t*\t*\tdigit=>1\t*\n", want: true, wantReason: allowedByLine},
		{name: "number at most", policy: "allow\t*\t*\tdigit<=0\t*\n", wantReason: deniedByDefault},
		{name: "number equal", policy: "allow\t*\t*\tdigit==1\t*\n", want: true, wantReason: allowedByLine},
		{name: "number not equal", policy: "allow\t*\t*\tdigit!=1\t*\n", wantReason: deniedByDefault},
		{name: "boolean", policy: "allow\t*\t*\tboolean=false\t*\n", want: true, wantReason: allowedByLine},
		{name: "string equality ignores case", policy: "allow\t*\t*\tone=ONE\t*\n", want: true, wantReason: allowedByLine},
		{name: "regex written with =", policy: "allow\t*\t*\tthree=/^three/\t*\n", want: true, wantReason: allowedByLine},
		{name: "missing fact", policy: "allow\t*\t*\tnosuch!=1\t*\n", wantReason: deniedByDefault},
		{name: "every fact must match", policy: "allow\t*\t*\tone=one two=nope\t*\n", wantReason: deniedByDefault},
		{name: "every fact matches", policy: "allow\t*\t*\tone=one digit=1\t*\n", want: true, wantReason: allowedByLine},
		{name: "class regex", policy: "allow\t*\t*\t*\t/^th/\n", want: true, wantReason: allowedByLine},
		{name: "class is lower-cased", policy: "allow\t*\t*\t*\tONE\n", want: true, wantReason: allowedByLine},
		{name: "facts and classes both", policy: "allow\t*\t*\tone=one\tone\n", want: true, wantReason: allowedByLine},
		{name: "facts match, classes not", policy: "allow\t*\t*\tone=one\tnosuch\n", wantReason: deniedByDefault},
	})
}

// TestParseGroups is Choria's test of its groups file.
func TestParseGroups(t *testing.T) {
	log, logs := testLogger()
	got := parseGroups("groups", []byte(groupsFile), log)
	want := groups{
		"sysadmin":     {"cert=sa1", "cert=sa2", "rspec_caller"},
		"app_admin":    {"cert=aa1", "cert=aa2"},
		"single_group": {"rspec_caller"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("groups %v, want %v", got, want)
	}
	if !strings.Contains(logs.String(), `line=5 text=invalid_group`) {
		t.Errorf("the line without members is not logged:\n%s", logs)
	}
}

// TestIsCompound is Choria's test of compound detection, and more.
func TestIsCompound(t *testing.T) {
	for _, c := range []struct {
		col  string
		want bool
	}{
		{"one two", false},
		{"country=mt os=linux", false},
		{"this and that", true},
		{"this or that", true},
		{"this or not that", true},
		{"!one", true},
		{"one !two", true},
		{"(one)", true},
		{"puppet().enabled=false", false},
		{"a(b)c", true},
		{"android", false},
		{"", false},
	} {
		if got := isCompound(c.col); got != c.want {
			t.Errorf("isCompound(%q) = %v, want %v", c.col, got, c.want)
		}
	}
}

// writeAged writes a policy and sets its mtime.
func writeAged(t testing.TB, path, content string, mtime time.Time) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

func authorizeTest(t testing.TB, a *ActionPolicy) Decision {
	t.Helper()
	d, err := a.Authorize(context.Background(), &Input{Agent: "ginkgo", Action: "test", CallerID: ginkgo})
	if err != nil {
		t.Fatalf("authorize: %v", err)
	}
	return d
}

// TestActionPolicyReload checks that a policy edited, even at once and
// to the same size, decides the next request.
func TestActionPolicyReload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ginkgo.policy")
	a := NewActionPolicy(ActionPolicyOptions{Dir: dir})

	if err := os.WriteFile(path, []byte("policy default deny \n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if d := authorizeTest(t, a); d.Allowed {
		t.Fatalf("first version allowed: %+v", d)
	}

	if err := os.WriteFile(path, []byte("policy default allow\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if d := authorizeTest(t, a); !d.Allowed {
		t.Fatalf("edit not seen: %+v", d)
	}

	// Same size and the same recent mtime, as two edits within one tick
	// of a coarse file system clock have.
	recent := time.Now().Add(-time.Second / 2)
	writeAged(t, path, "policy default deny \n", recent)
	if d := authorizeTest(t, a); d.Allowed {
		t.Fatalf("edit not seen: %+v", d)
	}
	writeAged(t, path, "policy default allow\n", recent)
	if d := authorizeTest(t, a); !d.Allowed {
		t.Fatalf("edit within the same mtime not seen: %+v", d)
	}

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authorize(t.Context(), &Input{Agent: "ginkgo", Action: "test", CallerID: ginkgo}); !errors.Is(err, ErrNoPolicyFile) {
		t.Fatalf("removed policy: error %v, want %v", err, ErrNoPolicyFile)
	}
}

// TestActionPolicyCache checks that a settled file is read once, and
// again when its stat changes: size, mtime, or only the change time.
func TestActionPolicyCache(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ginkgo.policy")
	reads := 0
	c := newFileCache(func(string, []byte) int { reads++; return reads })
	c.settle = 0 // every file settled at once: only the stamps decide
	load := func() int {
		t.Helper()
		v, found, err := c.load(path)
		if err != nil || !found {
			t.Fatalf("load: %v %v", found, err)
		}
		return v
	}
	old := time.Now().Add(-time.Hour).Truncate(time.Second)

	writeAged(t, path, "policy default deny \n", old)
	if load() != 1 || load() != 1 {
		t.Fatalf("a settled file read %d times, want once", reads)
	}
	// Same size and mtime, but written: the change time says so.
	writeAged(t, path, "policy default allow\n", old)
	if load() != 2 || load() != 2 {
		t.Fatalf("a file rewritten with its size and mtime read %d times, want twice", reads)
	}
	writeAged(t, path, "policy default allow\n", old.Add(time.Second))
	if load() != 3 {
		t.Fatal("a new mtime not seen")
	}
}

// TestActionPolicyConcurrent authorizes from many goroutines while the
// policy is replaced; run with -race.
func TestActionPolicyConcurrent(t *testing.T) {
	dir := apDir(t, map[string]string{"ginkgo.policy": policyDefaultAllow, "groups": "ops choria=ginkgo.mcollective\n"})
	path := filepath.Join(dir, "ginkgo.policy")
	a := NewActionPolicy(ActionPolicyOptions{Dir: dir})

	stop := make(chan struct{})
	var writer sync.WaitGroup
	writer.Go(func() {
		versions := []string{policyDefaultAllow, "policy default deny\nallow\tops\ttest\t*\t*\n", policyDefaultDeny}
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			// Replaced by rename, so every read sees a whole version.
			tmp := filepath.Join(dir, "ginkgo.tmp")
			if err := os.WriteFile(tmp, []byte(versions[i%len(versions)]), 0o644); err != nil {
				t.Error(err)
				return
			}
			if err := os.Rename(tmp, path); err != nil {
				t.Error(err)
				return
			}
		}
	})

	var readers sync.WaitGroup
	for range 8 {
		readers.Go(func() {
			for range 200 {
				d, err := a.Authorize(t.Context(), &Input{Agent: "ginkgo", Action: "test", CallerID: ginkgo})
				if err != nil {
					t.Error(err)
					return
				}
				switch d.Reason {
				case allowedByDefault, allowedByLine:
					if !d.Allowed {
						t.Errorf("denied with %q", d.Reason)
					}
				case deniedByDefault:
					if d.Allowed {
						t.Errorf("allowed with %q", d.Reason)
					}
				default:
					t.Errorf("unexpected decision %+v", d)
				}
			}
		})
	}
	readers.Wait()
	close(stop)
	writer.Wait()
}

func TestActionPolicyBadRequests(t *testing.T) {
	a := NewActionPolicy(ActionPolicyOptions{Dir: apDir(t, map[string]string{"ginkgo.policy": policyDefaultAllow})})

	if _, err := a.Authorize(t.Context(), nil); err == nil {
		t.Error("nil input authorized")
	}
	if _, err := a.Authorize(t.Context(), &Input{Action: "test", CallerID: ginkgo}); err == nil {
		t.Error("input without agent authorized")
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := a.Authorize(ctx, &Input{Agent: "ginkgo", Action: "test", CallerID: ginkgo}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: error %v, want %v", err, context.Canceled)
	}
}

func TestActionPolicyNotRegular(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "ginkgo.policy"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := NewActionPolicy(ActionPolicyOptions{Dir: dir, AllowUnconfigured: true}).Authorize(t.Context(), &Input{Agent: "ginkgo", Action: "test", CallerID: ginkgo})
	if err == nil || !strings.Contains(err.Error(), "is not a regular file") {
		t.Fatalf("directory as policy: error %v", err)
	}
}

// TestNewActionPolicyProvider checks that New finds policies in the
// policies directory beside the configuration file.
func TestNewActionPolicyProvider(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "policies"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "policies", "ginkgo.policy"), []byte(example6), 0o644); err != nil {
		t.Fatal(err)
	}

	a, _ := New(Config{Enabled: true, Provider: "action_policy", ConfigFile: filepath.Join(dir, "server.conf")})
	defer a.Close()
	d, err := a.Authorize(t.Context(), &Input{Agent: "ginkgo", Action: "test", CallerID: ginkgo})
	if err != nil || !d.Allowed || d.Policy != filepath.Join(dir, "policies", "ginkgo.policy") {
		t.Fatalf("decision %+v, error %v", d, err)
	}
}

// An edit that keeps the size and sets the modification time back (cp -p,
// rsync --inplace) is seen at the next request: the change time moved.
func TestActionPolicySeesEditsThatKeepSizeAndMtime(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ginkgo.policy")
	old := time.Now().Add(-time.Hour)
	writeAged(t, path, "policy default deny\nallow\t"+ginkgo+"\t*\t*\t*\n", old)
	a := NewActionPolicy(ActionPolicyOptions{Dir: dir})
	if d := authorizeTest(t, a); !d.Allowed {
		t.Fatalf("before the edit: %+v", d)
	}
	writeAged(t, path, "policy default deny\ndeny\t"+ginkgo+"\t*\t*\t*\n\n", old)
	if d := authorizeTest(t, a); d.Allowed {
		t.Fatalf("after a same-size edit with the old mtime: %+v, want the new deny", d)
	}
}
