package filter

import (
	"errors"
	"strings"
	"testing"

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
