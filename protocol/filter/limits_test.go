package filter

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/agent-host/agent-host/protocol"
)

// nestings are the ways a compound expression can make expr-lang's
// parser, type checker or compiler recurse: brackets of every kind,
// prefix operators, right-associative operators, ternaries, nil
// coalescing, let and if/else chains, closures, and long chains of
// binary operators, member accesses and indexes, which build deep trees.
// Each is repeated around a true literal (open*n + "true" + close*n).
var nestings = []struct {
	name        string
	open, close string
}{
	{"parentheses", "(", ")"},
	{"arrays", "[", "][0]"},
	{"maps", `{"a": `, `}.a`},
	{"calls", "all([true], ", ")"},
	{"closures", "all([true], {", "})"},
	{"bang", "!", ""},
	{"not", "not ", ""},
	{"minus", "-", ""},
	{"plus", "+", ""},
	{"power", "2 ** ", ""},
	{"caret", "2 ^ ", ""},
	{"ternary", "true ? true : ", ""},
	{"nil coalescing", "nil ?? ", ""},
	{"let", "let x = 1; ", ""},
	{"if else", "if false { false } else ", ""},
	{"and chain", "true && ", ""},
	{"or chain", "false || ", ""},
	{"equality chain", "true == ", ""},
	{"string concatenation", `"a" + `, ""},
	{"member chain", "", `.a`},
	{"index chain", "", "[0]"},
	{"pipe chain", "", " | not"},
	{"optional chain", "", "?.a"},
}

// TestMatchRefusesDeepNesting is the regression test for a filter that
// crashed the host: 600 000 nested parentheses in one compound expression
// overflowed the goroutine stack inside expr-lang's parser. Every way of
// nesting must be refused before parsing, however deep, or compile
// within bounded memory.
func TestMatchRefusesDeepNesting(t *testing.T) {
	m := NewMatcher()
	for _, nc := range nestings {
		for _, n := range []int{600_000, 100_000, 10_000} {
			expression := strings.Repeat(nc.open, n) + "true" + strings.Repeat(nc.close, n)
			ok, err := m.Match(compoundFilter(expression), testNode())
			if ok {
				t.Errorf("%s ×%d: selected the node, want refused", nc.name, n)
			}
			if !errors.Is(err, ErrFilterTooComplex) {
				t.Errorf("%s ×%d (%d bytes): error %v, want ErrFilterTooComplex", nc.name, n, len(expression), err)
			}
		}
		// Just within the size limit, long binary chains may compile (in
		// bounded memory, see BenchmarkCompileLargest); nesting may not.
		n := (MaxExpressionBytes - 4) / max(len(nc.open)+len(nc.close), 1)
		expression := strings.Repeat(nc.open, n) + "true" + strings.Repeat(nc.close, n)
		if _, err := m.Match(compoundFilter(expression), testNode()); err != nil && !errors.Is(err, ErrFilterTooComplex) {
			t.Errorf("%s ×%d: error %v, want ErrFilterTooComplex or none", nc.name, n, err)
		}
		// A handful of the same construct is an ordinary expression.
		shallow := strings.Repeat(nc.open, 3) + "true" + strings.Repeat(nc.close, 3)
		if _, err := m.Match(compoundFilter(shallow), testNode()); err != nil {
			t.Errorf("%s ×3 %q: error %v, want it evaluated", nc.name, shallow, err)
		}
	}
}

func TestMatchWithinLimits(t *testing.T) {
	// Generated filters can be long without being deep.
	hosts := make([]string, 500)
	for i := range hosts {
		hosts[i] = `"web` + strings.Repeat("x", i%7) + `.example.net"`
	}
	list := `fact("name") in [` + strings.Join(hosts, ", ") + `] || true`
	deepest := strings.Repeat("(", MaxExpressionDepth) + "true" + strings.Repeat(")", MaxExpressionDepth)
	m := NewMatcher()
	for _, expression := range []string{list, deepest} {
		if !mustMatch(t, m, compoundFilter(expression), testNode()) {
			t.Errorf("%.60q… did not select the node", expression)
		}
	}
}

func TestMatchRefusesOversizedFilters(t *testing.T) {
	big := strings.Repeat("a", MaxFilterStringBytes+1)
	many := make([]string, MaxFilterEntries+1)
	for i := range many {
		many[i] = "x"
	}
	manyFacts := make([]protocol.FactFilter, MaxFilterEntries+1)
	for i := range manyFacts {
		manyFacts[i] = protocol.FactFilter{Fact: "a", Operator: "==", Value: "b"}
	}
	manyExprs := make([]string, MaxCompoundEntries+1)
	for i := range manyExprs {
		manyExprs[i] = "true"
	}
	cases := []struct {
		name   string
		filter *protocol.Filter
	}{
		{"identity entry", identityFilter("/" + big + "/")},
		{"agent entry", agentFilter(big)},
		{"class entry", classFilter(big)},
		{"identity entries", identityFilter(many...)},
		{"fact value", factFilter("os", "=~", big)},
		{"fact path", factFilter(strings.Repeat("a.", MaxFactPathBytes), "==", "x")},
		{"fact path queries", factFilter(strings.Repeat("#(a", 100)+strings.Repeat(")", 100), "==", "x")},
		{"fact path multipaths", factFilter(strings.Repeat("{a,", 100)+strings.Repeat("}", 100), "==", "x")},
		{"fact path arrays", factFilter(strings.Repeat("[a,", 100)+strings.Repeat("]", 100), "==", "x")},
		{"fact filters", &protocol.Filter{Fact: manyFacts}},
		{"compound entries", compoundFilter(manyExprs...)},
		{"expression tokens", compoundFilter(strings.Repeat("a,", MaxExpressionTokens) + "true")},
	}
	m := NewMatcher()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ok, err := m.Match(tc.filter, testNode())
			if ok || !errors.Is(err, ErrFilterTooComplex) {
				t.Errorf("Match = %v, %v; want false, ErrFilterTooComplex", ok, err)
			}
		})
	}
}

// Fact paths inside expressions, which Check cannot see, are bounded
// when they are looked up: the expression fails and selects nothing.
func TestDeepFactPathsInExpressions(t *testing.T) {
	deep := strings.Repeat("#(a", 100) + strings.Repeat(")", 100)
	m := NewMatcher()
	for _, expression := range []string{
		`fact("` + deep + `") == nil`,
		`with("` + deep + `=1")`,
		`!with("` + deep + `=1")`,
	} {
		if mustMatch(t, m, compoundFilter(expression), testNode()) {
			t.Errorf("%.40q… selected the node, want the deep path refused", expression)
		}
	}
	if !mustMatch(t, m, compoundFilter(`fact("ports.#(>50)") == 80 && with("ports.#(>50)=80")`), testNode()) {
		t.Error("a shallow gjson query was refused")
	}
}

// FuzzCompoundNesting repeats a fragment around a literal up to a million
// times, the shape of input that overflowed the stack; it would have
// found that crash from its first seed.
func FuzzCompoundNesting(f *testing.F) {
	for _, nc := range nestings {
		f.Add(nc.open, nc.close, uint32(600_000))
	}
	m := NewMatcher()
	f.Fuzz(func(t *testing.T, open, close string, n uint32) {
		n %= 1 << 20
		if int(n)*(len(open)+len(close)) > 8<<20 {
			return
		}
		expression := strings.Repeat(open, int(n)) + "true" + strings.Repeat(close, int(n))
		_, err := m.Match(compoundFilter(expression), testNode())
		if err != nil && !errors.Is(err, ErrFilterTooComplex) {
			t.Fatalf("error %v does not wrap ErrFilterTooComplex", err)
		}
	})
}

// BenchmarkCompileLargest compiles the largest expressions the limits let
// through, to show what one costs.
func BenchmarkCompileLargest(b *testing.B) {
	for _, nc := range []struct{ name, expression string }{
		{"and chain", strings.Repeat("true && ", (MaxExpressionBytes-4)/8) + "true"},
		{"deepest brackets", strings.Repeat("(", MaxExpressionDepth) + "true" + strings.Repeat(")", MaxExpressionDepth)},
		{"chains", strings.Repeat("!", MaxExpressionChains) + "true"},
	} {
		b.Run(nc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := compileExpr(nc.expression); err != nil && !errors.Is(err, ErrFilterTooComplex) {
					b.Log(err)
				}
			}
		})
	}
}

// TestExpressionPolicy: what would let a small expression cost far more
// than its size to run is refused when it compiles; the rest of the
// language Choria's filters use still works.
func TestExpressionPolicy(t *testing.T) {
	m := NewMatcher()
	for _, tc := range []struct {
		expression string
		want       bool
		refused    bool // beyond the budget: Match says so
	}{
		// Refused: they select nothing.
		{`repeat("x", 10) == "xxxxxxxxxx"`, false, false},
		{`replace("a", "a", "b") == "b"`, false, false},
		{`join(["a", "b"], "") == "ab"`, false, false},
		{`map([1], {# + 1})[0] == 2`, false, false},
		{`reduce([1, 2], #acc + #) == 3`, false, false},
		{`toJSON(1) == "1"`, false, false},
		{`let x = 1; x == 1`, false, false},
		{`any([1], {any([1], {true})})`, false, false},
		{`none(1..999, {any(1..999, {with("/(a|b)/")})})`, false, false},
		{`any(1..9999, {"x" matches upper("(a|b)")})`, false, false},
		{`string(facts) == ""`, false, false},
		{`len($env) > 0`, false, false},
		{`"A" matches upper("a")`, false, false},
		{`"x" matches "` + strings.Repeat("x", MaxRegexBytes+1) + `"`, false, false},
		{`all(1..9999, {not ("` + strings.Repeat("y", 1000) + `" matches "` + strings.Repeat(".*", 2000) + `z")})`, false, true},
		{`__agent_host_step(true)`, false, false},
		{`__agent_host_cost(true) && __agent_host_matches("a", "a")`, false, false},
		{`uniq([1, 1]) == [1]`, false, false},
		// Allowed.
		{`fact("name") matches "^W" && "abc" not matches "^b" && !(fact("nothing") matches "x")`, true, false},
		{`any(fact("ports"), {# > 50})`, true, false},
		{`count(fact("nics"), {# startsWith "eth"}) == 1`, true, false},
		{`any(fact("nics"), {# matches "^e"})`, true, false},
		{`len(fact("nics")) == 2 && upper("a") == "A"`, true, false},
		{`2 in 1..3 && any(["a"], {# == "a"}) && all([1], {# == 1})`, true, false},
		{`fact("app.version") matches "^1\\." && semver(fact("app.version"), ">= 1")`, true, false},
	} {
		got, err := m.Match(compoundFilter(tc.expression), testNode())
		if got != tc.want || tc.refused != errors.Is(err, ErrFilterTooComplex) || (!tc.refused && err != nil) {
			t.Errorf("%s: Match = %v, %v; want %v, refused %v", clip(tc.expression), got, err, tc.want, tc.refused)
		}
	}
}

// TestEvaluationBudget: a closure can call agent-host's functions once per
// element, so their calls and the size of what they compile are bounded
// per filter; so is what the expression allocates.
func TestEvaluationBudget(t *testing.T) {
	m := NewMatcher()
	for _, tc := range []struct {
		name, expression string
		want             bool
		refused          bool // beyond the budget: Match says so
	}{
		{"calls within the budget", `count(1..100, {fact("name") == "Web01"}) == 100`, true, false},
		{"too many calls", `all(1..1000, {fact("name") == "Web01"})`, false, true},
		{"too many with() calls", `none(1..1000, {with("puppet")})`, false, true},
		{"with() queries too large", `none(1..200, {with("/` + strings.Repeat("a", 1000) + `/")})`, false, true},
		{"range within the memory budget", `len(1..5000) == 5000`, true, false},
		{"range beyond the memory budget", `len(1..20000) == 20000`, false, false},
		{"builtins within the budget", `len(sort(1..3000)) == 3000 && len(split("` + strings.Repeat("a,", 1000) + `", ",")) == 1001`, true, false},
		// Builtins count no steps; each split here takes 2 kB and
		// returns 16 kB of array.
		{"builtins beyond the budget", `all(1..9999, {len(split("` + strings.Repeat("a,", 1000) + `", ",")) > 0})`, false, true},
		// Each step concatenates 8 kB.
		{"concatenation beyond the budget", `any(1..9999, {"` + strings.Repeat("x", 4000) + `" + "` + strings.Repeat("y", 4000) + `" == ""})`, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := m.Match(compoundFilter(tc.expression), testNode())
			if got != tc.want || tc.refused != errors.Is(err, ErrFilterTooComplex) || (!tc.refused && err != nil) {
				t.Errorf("Match = %v, %v; want %v, refused %v", got, err, tc.want, tc.refused)
			}
		})
	}
	// The budget is per filter, across its expressions.
	many := make([]string, 3)
	for i := range many {
		many[i] = `count(1..100, {fact("name") == "Web01"}) == 100`
	}
	if ok, err := m.Match(compoundFilter(many...), testNode()); ok || !errors.Is(err, ErrFilterTooComplex) {
		t.Errorf("three expressions of 100 calls each against a budget of 256 calls: Match = %v, %v; want refused", ok, err)
	}
}

// TestFactPathModifiers: gjson modifiers and pipes re-process the whole
// facts document, so fact paths may not use them.
func TestFactPathModifiers(t *testing.T) {
	m := NewMatcher()
	for _, path := range []string{"@reverse", "nics|@reverse", "os.@this.family", "ports|0"} {
		ok, err := m.Match(factFilter(path, "==", "x"), testNode())
		if ok || !errors.Is(err, ErrFilterTooComplex) {
			t.Errorf("fact path %q: Match = %v, %v; want refused", path, ok, err)
		}
		if mustMatch(t, m, compoundFilter(`fact("`+path+`") != "x"`), testNode()) {
			t.Errorf("fact(%q) was evaluated", path)
		}
	}
}

// TestRegexpBudget: matching costs the pattern's size for every byte of
// the subject, and the subjects are the node's, so what a filter's
// patterns match is charged against one budget in every category.
func TestRegexpBudget(t *testing.T) {
	n := testNode()
	for i := range 2000 {
		n.Classes = append(n.Classes, fmt.Sprintf("profile::component_%04d", i))
	}
	n.Facts = json.RawMessage(`{"blob": "` + strings.Repeat("ab", 50_000) + `"}`)
	long := strings.Repeat("(a|b)", 800) + "z" // 4 kB that match no class

	m := NewMatcher()
	for _, tc := range []struct {
		name    string
		filter  *protocol.Filter
		refused bool
	}{
		{"a class pattern within the budget", classFilter("/component_1999$/"), false},
		{"a class pattern beyond it", classFilter("/" + long + "/"), true},
		{"an agent pattern beyond it", agentFilter("/" + long + "/"), false}, // three agents: within
		{"a fact pattern within the budget", factFilter("blob", "=~", "/^(ab)+$/"), false},
		{"fact patterns beyond it", factFilter("blob", "=~", "/"+strings.Repeat("(ab)", 20)+"z/"), true},
		{"with() beyond it", compoundFilter(`with("/` + long + `/")`), true},
		{"a class pattern within it alone", classFilter("/^profile::component_1999$|" + strings.Repeat("(a|b)", 10) + "z/"), false},
		{"patterns beyond it together", func() *protocol.Filter {
			// The class pattern costs 3.8 M, matching only the last class,
			// and the fact pattern 1.2 M.
			f := classFilter("/^profile::component_1999$|" + strings.Repeat("(a|b)", 10) + "z/")
			f.Fact = factFilter("blob", "=~", "/^(ab)+$/").Fact
			return f
		}(), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := m.Match(tc.filter, n)
			if tc.refused != errors.Is(err, ErrFilterTooComplex) || (!tc.refused && err != nil) {
				t.Errorf("Match error %v, want refused %v", err, tc.refused)
			}
		})
	}
}

// TestRegexpProgramSize: a counted repetition is a few bytes of pattern
// but compiles to one copy of what it repeats per count, so patterns are
// charged and bounded by what they compile to, not by their length.
func TestRegexpProgramSize(t *testing.T) {
	n := testNode()
	n.Facts = json.RawMessage(`{"blob": "` + strings.Repeat("a", 4000) + `"}`)
	huge := `(?:\pL{1000}|\pN{1000}|\pS{1000})z` // 3000 classes of many ranges each
	wide := strings.Repeat(`[a-z]{1000}`, 20)    // 20 000 instructions
	m := NewMatcher()
	for _, tc := range []struct {
		name    string
		filter  *protocol.Filter
		refused bool // at run time: Match says so
	}{
		{"identity", identityFilter("/" + huge + "/"), true},
		{"class", classFilter("/" + wide + "/"), true},
		{"fact", factFilter("blob", "=~", "/"+wide+"/"), true},
		// A matches pattern is refused when the expression compiles,
		// which selects nothing.
		{"matches", compoundFilter(`"` + strings.Repeat("a", 4000) + `" matches "` + wide + `"`), false},
		{"with", compoundFilter(`with("/` + wide + `/")`), true},
		// Each pattern is within the limits alone, but matching the
		// 4 kB fact against 2000 instructions costs 8 M.
		{"matching", factFilter("blob", "=~", `/\pL{999}z/`), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			ok, err := m.Match(tc.filter, n)
			if ok || tc.refused != errors.Is(err, ErrFilterTooComplex) {
				t.Errorf("Match = %v, %v; want refused %v", ok, err, tc.refused)
			}
			t.Logf("refused in %v", time.Since(start))
		})
	}
	// An anchored alternation also compiles to a one-pass program that
	// grows with the square of its branches: thirteen of 300 branches
	// are within the filter's 16 KiB of patterns, not its compile budget.
	var branches []string
	for r := rune(0x100); r < 0x100+300; r++ {
		branches = append(branches, string(r)+"x")
	}
	wideAlternation := "/^(?:" + strings.Join(branches, "|") + ")*$/"
	many := make([]string, 13)
	for i := range many {
		many[i] = strings.Replace(wideAlternation, "$/", fmt.Sprintf("(?:%d)?$/", i), 1) // distinct patterns
	}
	if ok, err := m.Match(identityFilter(many...), &Node{Identity: "web01"}); ok || !errors.Is(err, ErrFilterTooComplex) {
		t.Errorf("thirteen wide anchored alternations: Match = %v, %v; want refused", ok, err)
	}
	// Short counted repetitions are what real filters use.
	if !mustMatch(t, m, identityFilter(`/^[a-z]{2,8}\d{1,3}$/`), &Node{Identity: "web01"}) {
		t.Error("a pattern with short counted repetitions did not match")
	}
	if !mustMatch(t, m, compoundFilter(`"`+strings.Repeat("a", 4000)+`" matches "^[a-z]{100}"`), n) {
		t.Error("a matches pattern with a counted repetition within the limits did not match")
	}
}

// TestChargingKeepsTypes: charging what an expression computes must not
// change what it means. Comparing values of different types is a type
// error in expr-lang, which vetoes the expression as it does in Choria,
// and builtins applied to a closure's result still fuse.
func TestChargingKeepsTypes(t *testing.T) {
	m := NewMatcher()
	for _, tc := range []struct {
		expression string
		want       bool
	}{
		{`len(agents) != "3"`, false},
		{`now() != "2020-01-01"`, false},
		{`upper("a") != 1`, false},
		{`!(split("a", ",") == 1)`, false},
		{`len(agents) == 3`, true},
		{`upper("a") == "A"`, true},
		{`now() > now() - duration("1h")`, true},
		{`len(filter(1..6000, {true})) == 6000`, true},
		{`(filter(1..9000, {# > 0}) | first()) == 1`, true},
		{`last(filter(1..9000, {# > 0})) == 9000`, true},
		// The checker types these by a guess the values do not follow.
		{`max(1, 2.5) > 2`, true},
		{`min(1, 0.5) < 1`, true},
		{`max(2.5, len(agents)) == 3`, true},
		{`get(agents, 10) == nil`, true},
		{`get(agents, 10) == ""`, false},
		{`first(agents[5:]) == nil`, true},
		{`last(agents[5:]) == nil`, true},
		{`(get(agents, 10) ?? "none") == "none"`, true},
		{`now() - duration("1h") < now()`, true},
	} {
		got, err := m.Match(compoundFilter(tc.expression), testNode())
		if got != tc.want || errors.Is(err, ErrFilterTooComplex) {
			t.Errorf("%s: Match = %v, %v; want %v", tc.expression, got, err, tc.want)
		}
	}
}

// TestEvaluationTime: the time compound expressions may run is a backstop
// behind the counted limits: an expression within every count that runs
// too long is refused.
func TestEvaluationTime(t *testing.T) {
	m := NewMatcher()
	m.evaluation = 100 * time.Microsecond
	// 9 000 steps of two builtins each, within every count, take far
	// longer than 100 µs.
	slow := `all(1..9000, {upper("abcdefghijklmnop") != "" && lower("ABCDEFGHIJKLMNOP") != ""})`
	ok, err := m.Match(compoundFilter(slow), testNode())
	if ok || !errors.Is(err, ErrFilterTooComplex) || !strings.Contains(err.Error(), "took more than 100µs") {
		t.Errorf("Match = %v, %v; want refused for its time", ok, err)
	}
	m.evaluation = time.Minute
	if !mustMatch(t, m, compoundFilter(slow), testNode()) {
		t.Error("the same kind of expression did not match within a generous limit")
	}
}
