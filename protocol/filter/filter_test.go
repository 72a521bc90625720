package filter

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agent-host/agent-host/protocol"
)

// testFacts is the facts document of testNode. Expected results in the
// tables below follow Choria v0.30.2's filter/* packages.
const testFacts = `{
	"os": {"family": "Debian", "release": {"major": 12, "full": "12.5"}},
	"memory_mb": 2048,
	"load": 3.5,
	"version_str": "10",
	"name": "Web01",
	"virtual": true,
	"container": false,
	"nothing": null,
	"nics": ["eth0", "lo"],
	"ports": [22, 80],
	"app": {"version": "1.4.2"},
	"big": 12345678901234567890
}`

func testNode() *Node {
	return &Node{
		Identity: "web1.example.net",
		Facts:    json.RawMessage(testFacts),
		Classes:  []string{"Mixed", "apache", "roles::web"},
		Agents:   []string{"discovery", "package", "rpcutil"},
	}
}

func identityFilter(ids ...string) *protocol.Filter {
	f := protocol.NewFilter()
	f.Identity = ids
	return f
}

func agentFilter(agents ...string) *protocol.Filter {
	f := protocol.NewFilter()
	f.Agent = agents
	return f
}

func classFilter(classes ...string) *protocol.Filter {
	f := protocol.NewFilter()
	f.Class = classes
	return f
}

// factFilter builds a filter from fact, operator, value triples.
func factFilter(triples ...string) *protocol.Filter {
	f := protocol.NewFilter()
	for i := 0; i+2 < len(triples); i += 3 {
		f.Fact = append(f.Fact, protocol.FactFilter{Fact: triples[i], Operator: triples[i+1], Value: triples[i+2]})
	}
	return f
}

func compoundFilter(exprs ...string) *protocol.Filter {
	f := protocol.NewFilter()
	for _, e := range exprs {
		f.Compound = append(f.Compound, []map[string]string{{"expr": e}})
	}
	return f
}

type matchCase struct {
	name   string
	filter *protocol.Filter
	node   *Node // testNode() when nil
	want   bool
}

// mustMatch is Match for filters within the limits.
func mustMatch(tb testing.TB, m *Matcher, f *protocol.Filter, n *Node) bool {
	tb.Helper()
	ok, err := m.Match(f, n)
	if err != nil {
		tb.Fatalf("Match(%+v) error %v, want none for a filter within the limits", f, err)
	}
	return ok
}

func runMatchCases(t *testing.T, cases []matchCase) {
	t.Helper()

	m := NewMatcher()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := tc.node
			if n == nil {
				n = testNode()
			}
			got, err := m.Match(tc.filter, n)
			if err != nil {
				t.Fatalf("Match() error %v, want none for a filter within the limits", err)
			}
			if got != tc.want {
				t.Errorf("Match() = %v, want %v\nfilter: %+v", got, tc.want, tc.filter)
			}
		})
	}
}

func TestMatchEmpty(t *testing.T) {
	runMatchCases(t, []matchCase{
		{name: "nil filter", filter: nil, want: true},
		{name: "empty categories", filter: protocol.NewFilter(), want: true},
		{name: "nil categories", filter: &protocol.Filter{}, want: true},
		{name: "empty filter and node", filter: protocol.NewFilter(), node: &Node{}, want: true},
	})
}

func TestMatchIdentity(t *testing.T) {
	runMatchCases(t, []matchCase{
		{name: "exact", filter: identityFilter("web1.example.net"), want: true},
		{name: "exact is not a prefix match", filter: identityFilter("web1"), want: false},
		{name: "regex", filter: identityFilter("/^web\\d\\./"), want: true},
		{name: "regex no match", filter: identityFilter("/^db/"), want: false},
		{name: "regex is case sensitive", filter: identityFilter("/WEB/"), want: false},
		{name: "OR over entries", filter: identityFilter("db1.example.net", "web1.example.net"), want: true},
		{name: "OR none match", filter: identityFilter("db1.example.net", "/^mail/"), want: false},
		{name: "leading slash only is literal", filter: identityFilter("/web1.example.net"), want: false},
		{name: "lone slash is an empty regex", filter: identityFilter("/"), want: true},
		{name: "double slash is an empty regex", filter: identityFilter("//"), want: true},
		{name: "invalid regex matches nothing", filter: identityFilter("/web1(/"), want: false},
		{
			name:   "invalid regex falls back to the text between slashes",
			filter: identityFilter("/a(b/"),
			node:   &Node{Identity: "a(b"},
			want:   true,
		},
	})
}

func TestMatchAgent(t *testing.T) {
	runMatchCases(t, []matchCase{
		{name: "exact", filter: agentFilter("package"), want: true},
		{name: "built-in agents are known", filter: agentFilter("rpcutil", "discovery"), want: true},
		{name: "AND over entries", filter: agentFilter("package", "puppet"), want: false},
		{name: "exact is case sensitive", filter: agentFilter("Package"), want: false},
		{name: "regex", filter: agentFilter("/^pack/"), want: true},
		{name: "regex no match", filter: agentFilter("/^pup/"), want: false},
		{name: "regex is case sensitive", filter: agentFilter("/PACK/"), want: false},
		{name: "regex and exact", filter: agentFilter("/util$/", "package"), want: true},
		{name: "invalid regex", filter: agentFilter("/[/"), want: false},
		{name: "no agents", filter: agentFilter("/"), node: &Node{}, want: false},
	})
}

func TestMatchClass(t *testing.T) {
	runMatchCases(t, []matchCase{
		{name: "exact", filter: classFilter("apache"), want: true},
		{name: "needle is lower-cased", filter: classFilter("APACHE"), want: true},
		{name: "node classes are not lower-cased", filter: classFilter("Mixed"), want: false},
		{name: "lower-case needle against mixed-case class", filter: classFilter("mixed"), want: false},
		{name: "regex ignores case", filter: classFilter("/^mixed$/"), want: true},
		{name: "upper-case regex", filter: classFilter("/APACHE/"), want: true},
		{name: "AND over entries", filter: classFilter("apache", "roles::web"), want: true},
		{name: "AND with a missing class", filter: classFilter("apache", "nginx"), want: false},
		{name: "invalid regex", filter: classFilter("/(/"), want: false},
		{name: "no classes", filter: classFilter("/"), node: &Node{}, want: false},
	})
}

func TestMatchFact(t *testing.T) {
	runMatchCases(t, []matchCase{
		// strings compare case-insensitively
		{name: "string ==", filter: factFilter("os.family", "==", "Debian"), want: true},
		{name: "string == ignores case", filter: factFilter("os.family", "==", "debian"), want: true},
		{name: "string !=", filter: factFilter("os.family", "!=", "RedHat"), want: true},
		{name: "string != ignores case", filter: factFilter("os.family", "!=", "DEBIAN"), want: false},
		{name: "string =~ slashed", filter: factFilter("os.family", "=~", "/^deb/"), want: true},
		{name: "string =~ bare", filter: factFilter("os.family", "=~", "bia"), want: true},
		{name: "string =~ extra slashes", filter: factFilter("os.family", "=~", "//DEB//"), want: true},
		{name: "string =~ no match", filter: factFilter("os.family", "=~", "/^red/"), want: false},
		{name: "string =~ invalid regex", filter: factFilter("os.family", "=~", "/(/"), want: false},
		{name: "string < lower-cased", filter: factFilter("name", "<", "web02"), want: true},
		{name: "string >= lower-cased", filter: factFilter("name", ">=", "WEB01"), want: true},
		{name: "numeric-looking string compares as string", filter: factFilter("version_str", ">", "9"), want: false},
		{name: "numeric-looking string compares as string <", filter: factFilter("version_str", "<", "9"), want: true},

		// numbers: integer compare unless the value has a dot
		{name: "int ==", filter: factFilter("memory_mb", "==", "2048"), want: true},
		{name: "int == float value", filter: factFilter("memory_mb", "==", "2048.0"), want: true},
		{name: "int == is textual", filter: factFilter("memory_mb", "==", "02048"), want: false},
		{name: "int !=", filter: factFilter("memory_mb", "!=", "1024"), want: true},
		{name: "int >", filter: factFilter("memory_mb", ">", "1024"), want: true},
		{name: "int > equal", filter: factFilter("memory_mb", ">", "2048"), want: false},
		{name: "int >=", filter: factFilter("memory_mb", ">=", "2048"), want: true},
		{name: "int <", filter: factFilter("memory_mb", "<", "2048"), want: false},
		{name: "int <=", filter: factFilter("memory_mb", "<=", "2048"), want: true},
		{name: "float value > is >=", filter: factFilter("memory_mb", ">", "2048.0"), want: true},
		{name: "float value >", filter: factFilter("memory_mb", ">", "2048.5"), want: false},
		{name: "float value <", filter: factFilter("load", "<", "3.6"), want: true},
		{name: "float fact == truncated int", filter: factFilter("load", "==", "3"), want: true},
		{name: "float fact == float", filter: factFilter("load", "==", "3.5"), want: true},
		{name: "float fact != float", filter: factFilter("load", "!=", "3.5"), want: false},
		{name: "non-numeric value for number", filter: factFilter("memory_mb", "<", "lots"), want: false},
		{name: "non-numeric value for number ==", filter: factFilter("memory_mb", "==", "lots"), want: false},
		{name: "bad float value", filter: factFilter("memory_mb", "==", "1.2.3"), want: false},
		{name: "number =~ with dot uses four decimals", filter: factFilter("load", "=~", "/^3.5000$/"), want: true},
		{name: "number =~ without dot uses the integer", filter: factFilter("load", "=~", "/^3$/"), want: true},
		{name: "huge integers wrap like gjson v1.19", filter: factFilter("big", "=~", "/^-6101065172474983726$/"), want: true},

		// booleans: truthy and falsy words
		{name: "true == true", filter: factFilter("virtual", "==", "true"), want: true},
		{name: "true == TRUE", filter: factFilter("virtual", "==", "TRUE"), want: true},
		{name: "true == 1", filter: factFilter("virtual", "==", "1"), want: true},
		{name: "true == tRuE is not truthy", filter: factFilter("virtual", "==", "tRuE"), want: false},
		{name: "true == yes", filter: factFilter("virtual", "==", "yes"), want: false},
		{name: "true != false", filter: factFilter("virtual", "!=", "false"), want: true},
		{name: "true != tRuE lower-cases", filter: factFilter("virtual", "!=", "tRuE"), want: false},
		{name: "true =~ true", filter: factFilter("virtual", "=~", "true"), want: true},
		{name: "true =~ slashed is not a word", filter: factFilter("virtual", "=~", "/true/"), want: false},
		{name: "false == false", filter: factFilter("container", "==", "false"), want: true},
		{name: "false == anything falsy", filter: factFilter("container", "==", "banana"), want: true},
		{name: "false == true", filter: factFilter("container", "==", "true"), want: false},
		{name: "false != false also matches", filter: factFilter("container", "!=", "false"), want: true},
		{name: "false != true", filter: factFilter("container", "!=", "true"), want: false},
		{name: "boolean cannot be ordered", filter: factFilter("virtual", ">", "0"), want: false},

		// null, arrays, objects, missing facts
		{name: "null ==", filter: factFilter("nothing", "==", ""), want: false},
		{name: "null !=", filter: factFilter("nothing", "!=", "x"), want: false},
		{name: "array ==", filter: factFilter("nics", "==", "eth0"), want: false},
		{name: "array !=", filter: factFilter("nics", "!=", "eth0"), want: false},
		{name: "object =~", filter: factFilter("os", "=~", "/./"), want: false},
		{name: "missing ==", filter: factFilter("nosuch", "==", "x"), want: false},
		{name: "missing !=", filter: factFilter("nosuch", "!=", "x"), want: false},
		{name: "missing nested", filter: factFilter("os.nosuch.deeper", "==", "x"), want: false},

		// gjson paths
		{name: "nested path", filter: factFilter("os.release.major", ">=", "12"), want: true},
		{name: "array index", filter: factFilter("nics.1", "==", "lo"), want: true},
		{name: "array length", filter: factFilter("nics.#", "==", "2"), want: true},
		{name: "number in array", filter: factFilter("ports.1", ">", "22"), want: true},
		{name: "wildcard", filter: factFilter("o?.family", "==", "debian"), want: true},

		// operators
		{name: "= is not a wire operator", filter: factFilter("os.family", "=", "Debian"), want: false},
		{name: "unknown operator", filter: factFilter("os.family", "~", "Debian"), want: false},

		// AND
		{name: "AND all true", filter: factFilter("os.family", "==", "debian", "memory_mb", ">", "1024"), want: true},
		{name: "AND one false", filter: factFilter("os.family", "==", "debian", "memory_mb", ">", "4096"), want: false},
		{name: "AND one missing", filter: factFilter("os.family", "==", "debian", "nosuch", "!=", "x"), want: false},

		{name: "no facts", filter: factFilter("os.family", "==", "Debian"), node: &Node{}, want: false},
		{
			name:   "normalized duplicate keys keep the last",
			filter: factFilter("x", "==", "2"),
			node:   &Node{Facts: mustNormalize(t, `{"x":1,"x":2}`)},
			want:   true,
		},
		{
			name:   "raw duplicate keys keep the first",
			filter: factFilter("x", "==", "2"),
			node:   &Node{Facts: json.RawMessage(`{"x":1,"x":2}`)},
			want:   false,
		},
	})
}

func mustNormalize(t *testing.T, docs ...string) json.RawMessage {
	t.Helper()

	var raw [][]byte
	for _, d := range docs {
		raw = append(raw, []byte(d))
	}
	facts, err := NormalizeFacts(raw...)
	if err != nil {
		t.Fatalf("NormalizeFacts: %v", err)
	}
	return facts
}

func TestMatchCompound(t *testing.T) {
	runMatchCases(t, []matchCase{
		{name: "fact()", filter: compoundFilter(`fact("os.family") == "Debian"`), want: true},
		{name: "fact() is case sensitive", filter: compoundFilter(`fact("os.family") == "debian"`), want: false},
		{name: "fact() numbers", filter: compoundFilter(`fact("memory_mb") > 1024 && fact("load") == 3.5`), want: true},
		{name: "fact() missing is nil", filter: compoundFilter(`fact("nosuch") == nil`), want: true},
		{name: "fact() array", filter: compoundFilter(`len(fact("nics")) == 2 && fact("nics")[0] == "eth0"`), want: true},
		{name: "facts is raw JSON so member access does not compile", filter: compoundFilter(`facts.os.family == "Debian"`), want: false},
		{name: "the raw facts are not for expressions", filter: compoundFilter(`len(facts) > 10`), want: false},
		{name: "classes", filter: compoundFilter(`"apache" in classes`), want: true},
		{name: "classes exact", filter: compoundFilter(`"mixed" in classes`), want: false},
		{name: "agents", filter: compoundFilter(`"package" in agents && "rpcutil" in agents`), want: true},
		{name: "agents missing", filter: compoundFilter(`"puppet" in agents`), want: false},
		{name: "with() fact", filter: compoundFilter(`with("os.family=debian")`), want: true},
		{name: "with() fact operator", filter: compoundFilter(`with("memory_mb>=4096")`), want: false},
		{name: "with() fact regex", filter: compoundFilter(`with("os.family=/^deb/")`), want: true},
		{name: "with() class", filter: compoundFilter(`with("roles::web")`), want: true},
		{name: "with() class regex", filter: compoundFilter(`with("/MIXED/")`), want: true},
		{name: "with() agent", filter: compoundFilter(`with("package")`), want: true},
		{name: "with() nothing", filter: compoundFilter(`with("puppet")`), want: false},
		{name: "include() string", filter: compoundFilter(`include(fact("nics"), "lo")`), want: true},
		{name: "include() int literal against JSON number", filter: compoundFilter(`include(fact("ports"), 80)`), want: true},
		{name: "include() absent", filter: compoundFilter(`include(fact("ports"), 443)`), want: false},
		{name: "include() literal ints stay ints", filter: compoundFilter(`include([1, 2], 1)`), want: false},
		{name: "include() of []string does not compile", filter: compoundFilter(`include(classes, "apache")`), want: false},
		{name: "include() of a non-array fails at run time", filter: compoundFilter(`include(fact("name"), "W")`), want: false},
		{name: "semver()", filter: compoundFilter(`semver(fact("app.version"), ">= 1.4, < 2")`), want: true},
		{name: "semver() false", filter: compoundFilter(`semver(fact("app.version"), "< 1.0")`), want: false},
		{name: "semver() bad version", filter: compoundFilter(`semver("latest", "> 1")`), want: false},
		{name: "semver() bad constraint", filter: compoundFilter(`semver("1.0.0", "garbage")`), want: false},
		{name: "undefined variables are nil", filter: compoundFilter(`nosuch == nil`), want: true},
		{name: "data plugin functions are unknown", filter: compoundFilter(`choria().version != ""`), want: false},
		{name: "syntax error", filter: compoundFilter(`fact("os.family") ==`), want: false},
		{name: "empty expression", filter: compoundFilter(``), want: false},
		{name: "non-boolean at compile time", filter: compoundFilter(`1 + 1`), want: false},
		{name: "non-boolean at run time", filter: compoundFilter(`fact("memory_mb")`), want: false},
		{name: "literal true", filter: compoundFilter(`true`), want: true},

		// aggregation: errors fail, otherwise true counts +1 and false -1
		{name: "true true", filter: compoundFilter(`true`, `true`), want: true},
		{name: "true false cancel out", filter: compoundFilter(`true`, `false`), want: false},
		{name: "true true false", filter: compoundFilter(`true`, `true`, `false`), want: true},
		{name: "false true true", filter: compoundFilter(`false`, `true`, `true`), want: true},
		{name: "true false false true", filter: compoundFilter(`true`, `false`, `false`, `true`), want: false},
		{name: "true and a compile error", filter: compoundFilter(`true`, `true`, `(`), want: false},
		{
			name:   "two maps in one entry",
			filter: &protocol.Filter{Compound: [][]map[string]string{{{"expr": "true"}, {"expr": "true"}}}},
			want:   false,
		},
		{
			name:   "no expr key",
			filter: &protocol.Filter{Compound: [][]map[string]string{{{"expr": "true"}}, {{"exp": "true"}}}},
			want:   false,
		},
		{
			name:   "empty entry",
			filter: &protocol.Filter{Compound: [][]map[string]string{{}}},
			want:   false,
		},
		{
			name:   "nil node presents empty values",
			filter: compoundFilter(`agents != nil && len(classes) == 0 && fact("x") == nil`),
			node:   &Node{},
			want:   true,
		},
	})
}

func TestMatchAcrossCategories(t *testing.T) {
	all := func() *protocol.Filter {
		return &protocol.Filter{
			Identity: []string{"/^web/"},
			Agent:    []string{"package"},
			Class:    []string{"apache"},
			Fact:     []protocol.FactFilter{{Fact: "os.family", Operator: "==", Value: "Debian"}},
			Compound: [][]map[string]string{{{"expr": `fact("memory_mb") >= 2048`}}},
		}
	}
	change := func(edit func(*protocol.Filter)) *protocol.Filter {
		f := all()
		edit(f)
		return f
	}

	runMatchCases(t, []matchCase{
		{name: "all categories match", filter: all(), want: true},
		{name: "identity fails", filter: change(func(f *protocol.Filter) { f.Identity = []string{"db1"} }), want: false},
		{name: "agent fails", filter: change(func(f *protocol.Filter) { f.Agent = []string{"puppet"} }), want: false},
		{name: "class fails", filter: change(func(f *protocol.Filter) { f.Class = []string{"nginx"} }), want: false},
		{name: "fact fails", filter: change(func(f *protocol.Filter) { f.Fact[0].Value = "RedHat" }), want: false},
		{name: "compound fails", filter: change(func(f *protocol.Filter) { f.Compound[0][0]["expr"] = "false" }), want: false},
		{name: "empty categories are skipped", filter: change(func(f *protocol.Filter) { f.Class = nil; f.Fact = []protocol.FactFilter{} }), want: true},
	})
}

func TestParseFactFilter(t *testing.T) {
	cases := []struct {
		name    string
		in      string
		want    protocol.FactFilter
		wantErr bool
	}{
		{name: "= becomes ==", in: "os.family=Debian", want: protocol.FactFilter{Fact: "os.family", Operator: "==", Value: "Debian"}},
		{name: "==", in: "os.family==Debian", want: protocol.FactFilter{Fact: "os.family", Operator: "==", Value: "Debian"}},
		{name: "spaces trimmed", in: "  os.family ==  Debian ", want: protocol.FactFilter{Fact: "os.family", Operator: "==", Value: "Debian"}},
		{name: "<", in: "memory<3", want: protocol.FactFilter{Fact: "memory", Operator: "<", Value: "3"}},
		{name: ">", in: "memory>3", want: protocol.FactFilter{Fact: "memory", Operator: ">", Value: "3"}},
		{name: "<=", in: "memory<=3", want: protocol.FactFilter{Fact: "memory", Operator: "<=", Value: "3"}},
		{name: ">=", in: "memory>=3", want: protocol.FactFilter{Fact: "memory", Operator: ">=", Value: "3"}},
		{name: "=< becomes <=", in: "memory=<3", want: protocol.FactFilter{Fact: "memory", Operator: "<=", Value: "3"}},
		{name: "=> becomes >=", in: "memory=>3", want: protocol.FactFilter{Fact: "memory", Operator: ">=", Value: "3"}},
		{name: "!=", in: "os!=linux", want: protocol.FactFilter{Fact: "os", Operator: "!=", Value: "linux"}},
		{name: "=~ bare", in: "os=~lin", want: protocol.FactFilter{Fact: "os", Operator: "=~", Value: "lin"}},
		{name: "slashed value makes =~", in: "os=/lin/", want: protocol.FactFilter{Fact: "os", Operator: "=~", Value: "/lin/"}},
		{name: "slashed value overrides !=", in: "os!=/lin/", want: protocol.FactFilter{Fact: "os", Operator: "=~", Value: "/lin/"}},
		{name: "lone slash value", in: "os=/", want: protocol.FactFilter{Fact: "os", Operator: "=~", Value: "/"}},
		{name: "right-most operator wins", in: "a==b=c", want: protocol.FactFilter{Fact: "a==b", Operator: "==", Value: "c"}},
		{name: "operators scanned left to right", in: "a<==b", want: protocol.FactFilter{Fact: "a<=", Operator: "==", Value: "b"}},
		{name: "value may hold ! and ~", in: "a=!~x", want: protocol.FactFilter{Fact: "a", Operator: "==", Value: "!~x"}},
		{name: "empty", in: "", wantErr: true},
		{name: "no operator", in: "os.family", wantErr: true},
		{name: "no fact", in: "=Debian", wantErr: true},
		{name: "blank fact", in: "  == Debian", wantErr: true},
		{name: "no value", in: "os=", wantErr: true},
		{name: "fact starts with an operator", in: "<os=linux", wantErr: true},
		{name: "value ends with an operator", in: "os=linux<", wantErr: true},
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseFactFilter(tc.in)
			if tc.wantErr {
				if !errors.Is(err, ErrInvalidFactFilter) {
					t.Fatalf("ParseFactFilter(%q) = %+v, %v; want ErrInvalidFactFilter", tc.in, got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseFactFilter(%q): %v", tc.in, err)
			}
			if got != tc.want {
				t.Errorf("ParseFactFilter(%q) = %+v, want %+v", tc.in, got, tc.want)
			}
		})
	}
}

func TestNormalizeFacts(t *testing.T) {
	cases := []struct {
		name    string
		docs    []string
		want    string
		wantErr bool
	}{
		{name: "no documents", docs: nil, want: `{}`},
		{name: "keys sorted", docs: []string{`{"b":1,"a":{"d":2,"c":3}}`}, want: `{"a":{"c":3,"d":2},"b":1}`},
		{name: "duplicate keys keep the last", docs: []string{`{"x":1,"x":2}`}, want: `{"x":2}`},
		{name: "numbers become float64", docs: []string{`{"n":12345678901234567890,"f":1.50}`}, want: `{"f":1.5,"n":12345678901234567000}`},
		{name: "shallow merge, later wins", docs: []string{`{"os":{"a":1},"x":1}`, `{"os":{"b":2}}`}, want: `{"os":{"b":2},"x":1}`},
		{name: "bad document skipped", docs: []string{`{"x":1}`, `[1]`, `{`}, want: `{"x":1}`, wantErr: true},
		{name: "null is an empty object", docs: []string{`null`}, want: `{}`},
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var docs [][]byte
			for _, d := range tc.docs {
				docs = append(docs, []byte(d))
			}

			got, err := NormalizeFacts(docs...)
			if (err != nil) != tc.wantErr {
				t.Fatalf("NormalizeFacts error = %v, wantErr %v", err, tc.wantErr)
			}
			if string(got) != tc.want {
				t.Errorf("NormalizeFacts = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestParseClasses(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want []string
	}{
		{name: "empty", in: "", want: []string{}},
		{name: "sorted", in: "web\napache\nroles::db\n", want: []string{"apache", "roles::db", "web"}},
		{name: "no final newline, CRLF, blank lines kept", in: "b\r\n\na", want: []string{"", "a", "b"}},
		{name: "case kept", in: "Mixed\napache", want: []string{"Mixed", "apache"}},
		{name: "stops at an over-long line", in: "b\n" + strings.Repeat("x", 70<<10) + "\na\n", want: []string{"b"}},
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := ParseClasses([]byte(tc.in)); !slices.Equal(got, tc.want) {
				t.Errorf("ParseClasses = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestCompoundCache(t *testing.T) {
	t.Run("same expression compiles once", func(t *testing.T) {
		m := NewMatcher()
		f := compoundFilter(`fact("os.family") == "Debian"`)
		for range 3 {
			if !mustMatch(t, m, f, testNode()) {
				t.Fatal("Match = false, want true")
			}
		}
		if got := m.programs.compiles.Load(); got != 1 {
			t.Errorf("compiles = %d, want 1", got)
		}
	})

	t.Run("compile errors are cached", func(t *testing.T) {
		m := NewMatcher()
		f := compoundFilter(`fact(`)
		for range 3 {
			if mustMatch(t, m, f, testNode()) {
				t.Fatal("Match = true, want false")
			}
		}
		if got := m.programs.compiles.Load(); got != 1 {
			t.Errorf("compiles = %d, want 1", got)
		}
	})

	t.Run("distinct expressions compile separately", func(t *testing.T) {
		m := NewMatcher()
		mustMatch(t, m, compoundFilter(`true`, `true`), testNode())
		mustMatch(t, m, compoundFilter(`true`, `1 == 1`), testNode())
		if got := m.programs.compiles.Load(); got != 2 {
			t.Errorf("compiles = %d, want 2", got)
		}
	})

	t.Run("least recently used is evicted", func(t *testing.T) {
		c := newProgramCache(2)
		for _, e := range []string{"true", "false", "true", "1 == 1", "true", "false"} {
			if _, err := c.get(e); err != nil {
				t.Fatalf("get(%q): %v", e, err)
			}
		}
		// Misses: true, false, 1 == 1 (evicting false, the least recently
		// used) and false again (evicting 1 == 1).
		if got := c.compiles.Load(); got != 4 {
			t.Errorf("compiles = %d, want 4", got)
		}
		if c.order.Len() != 2 || len(c.entries) != 2 {
			t.Errorf("cache holds %d/%d entries, want 2", c.order.Len(), len(c.entries))
		}

		c.get("true")
		if got := c.compiles.Load(); got != 4 {
			t.Errorf("true was evicted: compiles = %d, want 4", got)
		}
		c.get("1 == 1")
		if got := c.compiles.Load(); got != 5 {
			t.Errorf("1 == 1 was kept: compiles = %d, want 5", got)
		}
	})

	t.Run("disabled cache", func(t *testing.T) {
		c := newProgramCache(0)
		for range 2 {
			if _, err := c.get("true"); err != nil {
				t.Fatalf("get: %v", err)
			}
		}
		if got := c.compiles.Load(); got != 2 {
			t.Errorf("compiles = %d, want 2", got)
		}
	})
}

func TestLogsBadCompound(t *testing.T) {
	var buf bytes.Buffer
	m := NewMatcher(WithLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))))

	mustMatch(t, m, compoundFilter(`facts.x == 1`), testNode())
	mustMatch(t, m, compoundFilter(`fact("memory_mb")`), testNode())
	mustMatch(t, m, factFilter("memory_mb", "<", "lots"), testNode())

	out := buf.String()
	for _, want := range []string{"cannot compile compound filter", "cannot evaluate compound filter", "cannot evaluate fact filter"} {
		if !strings.Contains(out, want) || !strings.Contains(out, "level=WARN") {
			t.Errorf("log does not contain %q at warn:\n%s", want, out)
		}
	}
}

func TestMatchConcurrent(t *testing.T) {
	m := NewMatcher()
	// Eight goroutines under the race detector on a busy machine may wait
	// longer than the evaluation limit for a CPU; that limit is tested
	// elsewhere.
	m.evaluation = time.Minute
	cases := []struct {
		filter *protocol.Filter
		want   bool
	}{
		{compoundFilter(`fact("os.family") == "Debian"`, `with("apache")`), true},
		{compoundFilter(`include(fact("ports"), 22)`), true},
		{compoundFilter(`semver(fact("app.version"), "> 2")`), false},
		{factFilter("memory_mb", ">=", "2048", "os.family", "=~", "/deb/"), true},
		{identityFilter("/^web/"), true},
		{classFilter("/^nginx/"), false},
	}

	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			n := testNode()
			for i := range 200 {
				tc := cases[(g+i)%len(cases)]
				if got, err := m.Match(tc.filter, n); err != nil || got != tc.want {
					errs <- fmt.Errorf("goroutine %d: Match(%+v) = %v, %v; want %v", g, tc.filter, got, err, tc.want)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)

	for err := range errs {
		t.Error(err)
	}
	if got := m.programs.compiles.Load(); got < 4 {
		t.Errorf("compiles = %d, want at least one per expression (4)", got)
	}
}

func FuzzParseFactFilter(f *testing.F) {
	for _, s := range []string{
		"os.family=Debian", "memory<=3", "a=>3", "a=<3", "os!=/lin/", "a==b=c", "a<==b",
		"", "=x", "x=", "<x=1", " a = / ", "a=~/x/", "a.b.c >= 1.5",
	} {
		f.Add(s)
	}

	ops := []string{"==", "=~", "!=", "<", ">", "<=", ">="}

	f.Fuzz(func(t *testing.T, s string) {
		ff, err := ParseFactFilter(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidFactFilter) {
				t.Fatalf("ParseFactFilter(%q) error %v does not wrap ErrInvalidFactFilter", s, err)
			}
			return
		}

		if ff.Fact == "" || ff.Value == "" || strings.TrimSpace(ff.Fact) != ff.Fact || strings.TrimSpace(ff.Value) != ff.Value {
			t.Fatalf("ParseFactFilter(%q) = %+v: fact and value must be non-empty and trimmed", s, ff)
		}
		if !slices.Contains(ops, ff.Operator) {
			t.Fatalf("ParseFactFilter(%q) = %+v: operator is not a wire operator", s, ff)
		}
		if strings.ContainsAny(ff.Value, "<>=") {
			t.Fatalf("ParseFactFilter(%q) = %+v: value holds an operator", s, ff)
		}

		again, err := ParseFactFilter(ff.Fact + " " + ff.Operator + " " + ff.Value)
		if err != nil || again != ff {
			t.Fatalf("ParseFactFilter(%q) = %+v, but re-parsing gives %+v, %v", s, ff, again, err)
		}
	})
}

func BenchmarkMatchCompound(b *testing.B) {
	f := compoundFilter(`fact("os.family") == "Debian" && semver(fact("app.version"), ">= 1.4") && with("apache")`)
	n := testNode()

	for _, bc := range []struct {
		name  string
		cache int
	}{
		{name: "cached", cache: programCacheSize},
		{name: "uncached", cache: 0},
	} {
		b.Run(bc.name, func(b *testing.B) {
			m := NewMatcher()
			m.programs = newProgramCache(bc.cache)
			b.ReportAllocs()
			for b.Loop() {
				if !mustMatch(b, m, f, n) {
					b.Fatal("Match = false, want true")
				}
			}
		})
	}
}

// TestInclude covers values that Choria's include() compares with go-cmp
// rather than reflect.DeepEqual.
func TestInclude(t *testing.T) {
	runMatchCases(t, []matchCase{
		{name: "dates are equal at the same instant", filter: compoundFilter(`include([date("2024-05-01T12:00:00Z")], date("2024-05-01T14:00:00+02:00"))`), want: true},
		{name: "dates at different instants", filter: compoundFilter(`include([date("2024-05-01T12:00:00Z")], date("2024-05-01T12:00:00+02:00"))`), want: false},
		{name: "NaN is not equal to itself", filter: compoundFilter(`include([0/0], 0/0)`), want: false},
		{name: "a timezone cannot be compared", filter: compoundFilter(`include([timezone("UTC")], timezone("UTC"))`), want: false},
		{name: "functions are never equal", filter: compoundFilter(`include([$env], $env)`), want: false},
		{name: "objects compare by content", filter: compoundFilter(`include([fact("app")], fact("app"))`), want: true},
		{name: "arrays compare by content", filter: compoundFilter(`include([[1]], [1])`), want: true},
		{name: "JSON numbers are not literal ints inside arrays", filter: compoundFilter(`include([fact("ports")], [22, 80])`), want: false},
		{name: "empty is not nil", filter: compoundFilter(`include([[]], nil)`), want: false},
	})
}

func TestParseFactFilterOperatorScan(t *testing.T) {
	cases := []struct {
		in   string
		want protocol.FactFilter
	}{
		{in: "a=!=b", want: protocol.FactFilter{Fact: "a=", Operator: "!=", Value: "b"}},
		{in: "a ~= b", want: protocol.FactFilter{Fact: "a ~", Operator: "==", Value: "b"}},
		{in: "a=~~b", want: protocol.FactFilter{Fact: "a", Operator: "=~", Value: "~b"}},
		{in: "x<>y", want: protocol.FactFilter{Fact: "x<", Operator: ">", Value: "y"}},
		{in: "a<b>c", want: protocol.FactFilter{Fact: "a<b", Operator: ">", Value: "c"}},
		{in: "a!=!b", want: protocol.FactFilter{Fact: "a", Operator: "!=", Value: "!b"}},
		{in: "!a=b", want: protocol.FactFilter{Fact: "!a", Operator: "==", Value: "b"}},
		{in: "a => /x/", want: protocol.FactFilter{Fact: "a", Operator: "=~", Value: "/x/"}},
		{in: "a!~b"}, // ! and ~ are not operators on their own
	}

	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseFactFilter(tc.in)
			if tc.want == (protocol.FactFilter{}) {
				if !errors.Is(err, ErrInvalidFactFilter) {
					t.Fatalf("ParseFactFilter(%q) = %+v, %v; want ErrInvalidFactFilter", tc.in, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("ParseFactFilter(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			}
		})
	}
}

// FuzzMatch checks that Match never panics on filters built from arbitrary
// strings and gives the same answer every time, whether the compound
// expression comes from the cache or is compiled afresh.
func FuzzMatch(f *testing.F) {
	f.Add("web1.example.net", "apache", "os.family", "==", "debian", `fact("os.family") == "Debian"`)
	f.Add("/^web/", "/MIX/", "memory_mb", ">", "1024.5", `with("memory_mb>=2048") && "apache" in classes`)
	f.Add("/(/", "roles::web", "nics.#", "=~", "/^2$/", `include(fact("ports"), 80) || semver(fact("app.version"), "~1.4")`)
	f.Add("", "", "virtual", "!=", "tRuE", `let a = [0/0]; include([a], a)`)
	f.Add("x", "/", "big", "<=", "-1", `include([date("2024-05-01T12:00:00Z")], date("2024-05-01T14:00:00+02:00"))`)
	f.Add("", "", "os", "bogus", "", `include([timezone("UTC")], timezone("UTC"))`)
	f.Add("", "", "", "", "", `fact(`)
	f.Add("", "", "nothing", ">", "0", `len(facts) > 10 and nosuch == nil`)

	// Expressions reading the clock or iterating a map may differ between
	// runs, in Choria too.
	unstable := []string{"now", "keys", "values", "toPairs"}

	f.Fuzz(func(t *testing.T, identity, class, fact, op, value, expression string) {
		filter := protocol.NewFilter()
		if identity != "" {
			filter.Identity = []string{identity}
		}
		if class != "" {
			filter.Class = []string{class}
		}
		if fact != "" || op != "" || value != "" {
			filter.Fact = []protocol.FactFilter{{Fact: fact, Operator: op, Value: value}}
		}
		if expression != "" {
			filter.Compound = [][]map[string]string{{{"expr": expression}}}
		}

		cached := NewMatcher()
		uncached := NewMatcher()
		uncached.programs = newProgramCache(0)

		first, err1 := cached.Match(filter, testNode())
		second, err2 := cached.Match(filter, testNode())
		fresh, err3 := uncached.Match(filter, testNode())
		if (err1 != nil) != (err2 != nil) || (err1 != nil) != (err3 != nil) {
			t.Fatalf("Match(%+v) errors differ between runs: %v, %v, %v", filter, err1, err2, err3)
		}
		if err1 != nil && !errors.Is(err1, ErrFilterTooComplex) {
			t.Fatalf("Match(%+v) error %v does not wrap ErrFilterTooComplex", filter, err1)
		}

		if slices.ContainsFunc(unstable, func(name string) bool { return strings.Contains(expression, name) }) {
			return
		}
		if first != second || first != fresh {
			t.Fatalf("Match(%+v) = %v, then %v from the cache, %v compiled afresh", filter, first, second, fresh)
		}
	})
}
