package filter

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"time"
)

// budget bounds the work of matching one filter against a node, across
// its categories: what the limits Check enforces on the filter's text
// cannot bound alone, because the cost of matching also grows with the
// node's facts, classes and agents, and expr-lang's closures and
// builtins repeat work.
type budget struct {
	calls   int // calls of fact(), with(), include() and semver() left
	with    int // bytes of with() queries left
	steps   int // closure steps left
	match   int // regular expression matching left: subject bytes times pattern instructions
	compile int // size of patterns left to compile (see regexpCost)
	built   int // bytes the builtins may still take and return

	// evaluation is how long the compound expressions may run, and
	// until when they have run for too long; until is set when the first
	// one starts, so compiling does not count.
	evaluation time.Duration
	until      time.Time

	regexps map[string]compiledRegexp // the filter's patterns, compiled once

	// err is the first limit exceeded; once set, the filter selects
	// nothing and Match returns it.
	err error
}

func newBudget() *budget {
	return &budget{calls: MaxFunctionCalls, with: MaxWithBytes, steps: MaxClosureSteps, match: MaxMatchCost, compile: MaxRegexCompile, built: MaxBuiltBytes, evaluation: MaxEvaluation}
}

type compiledRegexp struct {
	re    *regexp.Regexp
	insts int
}

// exceeded records err as the reason the filter selects nothing, unless
// an earlier limit was already exceeded, and returns it.
func (b *budget) exceeded(err error) error {
	if b.err == nil {
		b.err = err
	}
	return err
}

// regexpMatch reports whether pattern matches subject, charging its
// compilation and the match against the budget. An invalid pattern is an
// error that does not exceed the budget: it only fails the entry that
// holds it.
func (b *budget) regexpMatch(pattern string, subject []byte) (bool, error) {
	c, ok := b.regexps[pattern]
	if !ok {
		insts, size, err := regexpCost(pattern)
		if errors.Is(err, ErrFilterTooComplex) {
			return false, b.exceeded(err)
		}
		if err != nil {
			return false, err
		}
		if b.compile -= size; b.compile < 0 {
			return false, b.exceeded(fmt.Errorf("%w: compiling patterns larger than %d in one filter", ErrFilterTooComplex, MaxRegexCompile))
		}
		re, err := regexp.Compile(pattern)
		if err != nil {
			return false, err
		}
		c = compiledRegexp{re, max(insts, 1)}
		if b.regexps == nil {
			b.regexps = map[string]compiledRegexp{}
		}
		b.regexps[pattern] = c
	}
	if b.match -= max(len(subject), 1) * c.insts; b.match < 0 {
		return false, b.exceeded(fmt.Errorf("%w: matching more than %d bytes × pattern instructions in one filter", ErrFilterTooComplex, MaxMatchCost))
	}
	return c.re.Match(subject), nil
}

// start begins the time the compound expressions may run, at the first.
func (b *budget) start() {
	if b.until.IsZero() {
		b.until = time.Now().Add(b.evaluation)
	}
}

func (b *budget) inTime() error {
	if !b.until.IsZero() && time.Now().After(b.until) {
		return b.exceeded(fmt.Errorf("%w: evaluating the filter took more than %s", ErrFilterTooComplex, b.evaluation))
	}
	return nil
}

func (b *budget) call() error {
	if b.calls--; b.calls < 0 {
		return b.exceeded(fmt.Errorf("%w: more than %d calls of fact(), with(), include() and semver() in one filter", ErrFilterTooComplex, MaxFunctionCalls))
	}
	return b.inTime()
}

func (b *budget) step() error {
	if b.steps--; b.steps < 0 {
		return b.exceeded(fmt.Errorf("%w: closures ran more than %d steps in one filter", ErrFilterTooComplex, MaxClosureSteps))
	}
	return b.inTime()
}

func (b *budget) withQuery(q string) error {
	if err := b.call(); err != nil {
		return err
	}
	if len(q) > MaxRegexBytes {
		return b.exceeded(fmt.Errorf("%w: a with() query of %d bytes, more than %d", ErrFilterTooComplex, len(q), MaxRegexBytes))
	}
	if b.with -= len(q); b.with < 0 {
		return b.exceeded(fmt.Errorf("%w: with() queries of more than %d bytes in one filter", ErrFilterTooComplex, MaxWithBytes))
	}
	return nil
}

// charge counts a value a builtin takes or returns.
func (b *budget) charge(v any) error {
	if b.built -= builtSize(v); b.built < 0 {
		return b.exceeded(fmt.Errorf("%w: builtins took and returned more than %d bytes in one filter", ErrFilterTooComplex, MaxBuiltBytes))
	}
	return b.inTime()
}

// builtSize is the cost charge counts for v: a string's bytes, 16 per
// element of an array and 48 per entry of a map. It does not look inside
// the elements, which were counted when they were built or are the
// node's own.
func builtSize(v any) int {
	switch x := v.(type) {
	case nil, bool, int, float64:
		return 1
	case string:
		return max(len(x), 1)
	case []any:
		return 16 * max(len(x), 1)
	case map[string]any:
		return 48 * max(len(x), 1)
	}
	switch rv := reflect.ValueOf(v); rv.Kind() {
	case reflect.String:
		return max(rv.Len(), 1)
	case reflect.Slice, reflect.Array:
		return 16 * max(rv.Len(), 1)
	case reflect.Map:
		return 48 * max(rv.Len(), 1)
	default:
		return 1
	}
}
