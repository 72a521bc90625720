package filter

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/parser/lexer"

	"github.com/agent-host/agent-host/protocol"
)

// ErrFilterTooComplex is wrapped by Check's errors: a filter larger or more
// deeply nested than any real client sends, refused before it is parsed.
var ErrFilterTooComplex = errors.New("filter: too complex")

// Limits on what a filter may hold. Filters come from the network, and the
// parsers behind them (expr-lang's, gjson's path syntax, regexp) recurse or
// allocate in proportion to their input: a compound expression of 600 000
// nested parentheses overflows the goroutine stack, which no recover()
// survives. Every limit is far above what Choria's clients produce (their
// filters are a few hundred bytes) and each is checked by a single
// non-recursive pass before anything is parsed.
const (
	// MaxFilterStringBytes bounds one identity, agent, class or fact entry
	// (fact name or value), most of which may be regular expressions.
	MaxFilterStringBytes = 16 << 10
	// MaxFilterEntries bounds the identity, agent and class entries of
	// one category.
	MaxFilterEntries = 1024
	// MaxFactFilters bounds the fact filters, each a lookup in the facts.
	MaxFactFilters = 256
	// MaxFilterBytes bounds the text of a whole filter, every entry and
	// expression together: each is a regular expression or a program to
	// compile.
	MaxFilterBytes = 256 << 10
	// MaxCompoundEntries bounds the compound expressions of one filter.
	MaxCompoundEntries = 8
	// MaxExpressionBytes bounds one compound expression.
	MaxExpressionBytes = 16 << 10
	// MaxExpressionTokens bounds the tokens of one compound expression.
	MaxExpressionTokens = 4096
	// MaxExpressionDepth bounds how many brackets ( [ { are open at once.
	MaxExpressionDepth = 32
	// MaxExpressionChains bounds the operators that make expr-lang's
	// parser recurse once each rather than loop: prefix operators,
	// right-associative ones, ternaries, let and if/else. Counting all
	// of them, wherever they are, bounds the recursion however they nest.
	MaxExpressionChains = 256
	// MaxExpressionNodes bounds the syntax tree of one compound expression
	// (expr-lang's own node budget, the default Choria runs with); it keeps
	// the type checker's and compiler's recursion shallow for long chains
	// of binary operators, which the parser builds in a loop.
	MaxExpressionNodes = 10_000
	// MaxFunctionCalls bounds the calls of fact(), with(), include() and
	// semver() while the compound expressions of one filter run: a
	// closure can call them once per element of an array.
	MaxFunctionCalls = 256
	// MaxWithBytes bounds the text of the with() queries run for one
	// filter, each a fact filter or regular expression to compile.
	MaxWithBytes = 16 << 10
	// MaxClosureSteps bounds the elements the closures of one filter's
	// expressions visit together.
	MaxClosureSteps = 100_000
	// MaxEvaluation bounds the time the compound expressions of one
	// filter run, checked at every function call and every few closure
	// steps: a backstop for whatever the other limits let through.
	MaxEvaluation = 100 * time.Millisecond
	// MaxRegexBytes bounds one regular expression: a /re/ identity,
	// agent, class or fact value, or a matches pattern.
	MaxRegexBytes = 4 << 10
	// MaxRegexInsts bounds the instructions one pattern compiles to,
	// whatever its length: \pL{1000} is a few bytes but a thousand
	// copies of what it repeats, and the matcher may step through every
	// instruction for each byte of the subject.
	MaxRegexInsts = 16 << 10
	// MaxRegexSize bounds what compiling one pattern allocates: its
	// instructions plus the rune ranges of its character classes.
	MaxRegexSize = 64 << 10
	// MaxRegexCompile bounds the size, as MaxRegexSize counts it, of the
	// patterns one filter compiles, and of those of one compound
	// expression.
	MaxRegexCompile = 256 << 10
	// MaxRegexTotal bounds the regular expressions of one filter's
	// identity, agent, class and fact entries together.
	MaxRegexTotal = 16 << 10
	// MaxMatchCost bounds the regular expression matching one filter
	// does, in every category and in with() and matches: the sum over
	// every match of the subject's bytes times the instructions of the
	// compiled pattern, a measure of what matching costs at worst.
	MaxMatchCost = 4 << 20
	// MaxBuiltBytes bounds what the builtins and string concatenations
	// of one filter's compound expressions take and return, counted as
	// the bytes of strings, 16 per element of an array and 48 per entry
	// of a map: the work of the builtins, which do not count steps, is
	// proportional to it.
	MaxBuiltBytes = 16 << 20
	// MaxFactPathBytes bounds the gjson path of a fact lookup.
	MaxFactPathBytes = 1 << 10
	// MaxFactPathDepth bounds brackets open at once in a gjson path, whose
	// queries, multipaths and modifiers nest recursively.
	MaxFactPathDepth = 8
)

// recursingOperators are the expr-lang tokens counted towards
// MaxExpressionChains. "-" and "+" are counted whether prefix or binary,
// since the lexer cannot tell; a real expression holds few of either.
var recursingOperators = map[string]bool{
	"!": true, "not": true, "-": true, "+": true,
	"**": true, "^": true,
	"?": true, "??": true,
	"let": true, "if": true, "else": true,
}

// Check reports whether f is within the limits above. A filter that is
// not should select nothing: it cannot come from a real client.
func (m *Matcher) Check(f *protocol.Filter) error {
	if f == nil {
		return nil
	}
	for _, cat := range []struct {
		name    string
		entries []string
	}{{"identity", f.Identity}, {"agent", f.Agent}, {"cf_class", f.Class}} {
		if err := checkStrings(cat.name, cat.entries); err != nil {
			return err
		}
	}
	if len(f.Fact) > MaxFactFilters {
		return fmt.Errorf("%w: %d fact filters, more than %d", ErrFilterTooComplex, len(f.Fact), MaxFactFilters)
	}
	total, regexes := 0, 0
	regex := func(s string) error {
		if len(s) > MaxRegexBytes {
			return fmt.Errorf("%w: a regular expression of %d bytes, more than %d", ErrFilterTooComplex, len(s), MaxRegexBytes)
		}
		if regexes += len(s); regexes > MaxRegexTotal {
			return fmt.Errorf("%w: regular expressions of more than %d bytes", ErrFilterTooComplex, MaxRegexTotal)
		}
		return nil
	}
	for _, s := range [][]string{f.Identity, f.Agent, f.Class} {
		for _, e := range s {
			total += len(e)
			if _, isRegex := slashed(e); isRegex {
				if err := regex(e); err != nil {
					return err
				}
			}
		}
	}
	for _, ff := range f.Fact {
		if err := CheckFactPath(ff.Fact); err != nil {
			return err
		}
		if len(ff.Value) > MaxFilterStringBytes {
			return fmt.Errorf("%w: fact filter value of %d bytes, more than %d", ErrFilterTooComplex, len(ff.Value), MaxFilterStringBytes)
		}
		if ff.Operator == "=~" || strings.HasPrefix(ff.Value, "/") {
			if err := regex(ff.Value); err != nil {
				return err
			}
		}
		total += len(ff.Fact) + len(ff.Value)
	}
	if len(f.Compound) > MaxCompoundEntries {
		return fmt.Errorf("%w: %d compound expressions, more than %d", ErrFilterTooComplex, len(f.Compound), MaxCompoundEntries)
	}
	for _, entry := range f.Compound {
		// Only an entry of one map is evaluated, and only its expr key;
		// anything else selects nothing without being parsed.
		if len(entry) != 1 {
			continue
		}
		expression := entry[0]["expr"]
		if err := checkExpression(expression); err != nil {
			return err
		}
		total += len(expression)
	}
	if total > MaxFilterBytes {
		return fmt.Errorf("%w: %d bytes of filter, more than %d", ErrFilterTooComplex, total, MaxFilterBytes)
	}
	return nil
}

func checkStrings(category string, entries []string) error {
	if len(entries) > MaxFilterEntries {
		return fmt.Errorf("%w: %d %s filters, more than %d", ErrFilterTooComplex, len(entries), category, MaxFilterEntries)
	}
	for _, e := range entries {
		if len(e) > MaxFilterStringBytes {
			return fmt.Errorf("%w: %s filter of %d bytes, more than %d", ErrFilterTooComplex, category, len(e), MaxFilterStringBytes)
		}
	}
	return nil
}

// checkExpression bounds a compound expression by a streaming pass of
// expr-lang's own lexer, which does not recurse. A lexing error is left
// for the compiler to report.
func checkExpression(expression string) error {
	if len(expression) > MaxExpressionBytes {
		return fmt.Errorf("%w: compound expression of %d bytes, more than %d", ErrFilterTooComplex, len(expression), MaxExpressionBytes)
	}
	l := lexer.New()
	l.Reset(file.NewSource(expression))
	depth, chains := 0, 0
	for tokens := 0; ; tokens++ {
		t, err := l.Next()
		if err != nil {
			// io.EOF, or a lexing error the compiler reports in its words.
			return nil
		}
		if tokens >= MaxExpressionTokens {
			return fmt.Errorf("%w: compound expression of more than %d tokens", ErrFilterTooComplex, MaxExpressionTokens)
		}
		switch t.Kind {
		case lexer.Bracket:
			switch t.Value {
			case "(", "[", "{":
				if depth++; depth > MaxExpressionDepth {
					return fmt.Errorf("%w: compound expression nests brackets more than %d deep", ErrFilterTooComplex, MaxExpressionDepth)
				}
			default:
				depth = max(depth-1, 0)
			}
		case lexer.Operator:
			if recursingOperators[t.Value] {
				if chains++; chains > MaxExpressionChains {
					return fmt.Errorf("%w: compound expression has more than %d prefix, right-associative, conditional or let operators", ErrFilterTooComplex, MaxExpressionChains)
				}
			}
		case lexer.EOF:
			return nil
		}
	}
}

// CheckFactPath bounds a gjson path: its size and nesting, and no
// modifiers (@reverse, @this...) or pipes, each of which makes gjson
// process the whole facts document again. Escapes are not interpreted,
// so an escaped character counts too: the check errs on the safe side.
func CheckFactPath(path string) error {
	if len(path) > MaxFactPathBytes {
		return fmt.Errorf("%w: fact path of %d bytes, more than %d", ErrFilterTooComplex, len(path), MaxFactPathBytes)
	}
	if strings.ContainsAny(path, "@|") {
		return fmt.Errorf("%w: fact path %q uses a gjson modifier or pipe", ErrFilterTooComplex, clip(path))
	}
	depth := 0
	for i := 0; i < len(path); i++ {
		switch path[i] {
		case '(', '[', '{':
			if depth++; depth > MaxFactPathDepth {
				return fmt.Errorf("%w: fact path nests brackets more than %d deep", ErrFilterTooComplex, MaxFactPathDepth)
			}
		case ')', ']', '}':
			depth = max(depth-1, 0)
		}
	}
	return nil
}
