package filter

import (
	"fmt"
	"regexp/syntax"
)

// regexpCost parses pattern and estimates, before anything is compiled,
// what it costs: insts, the instructions the matcher steps through for
// each byte of subject, and size, what compiling it allocates. An error
// is a pattern that does not parse, or one beyond MaxRegexInsts or
// MaxRegexSize (wrapping ErrFilterTooComplex).
func regexpCost(pattern string) (insts, size int, err error) {
	re, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return 0, 0, err
	}
	insts, size = costOf(re)
	switch {
	case insts > MaxRegexInsts:
		return 0, 0, fmt.Errorf("%w: a pattern that compiles to more than %d instructions", ErrFilterTooComplex, MaxRegexInsts)
	case size > MaxRegexSize:
		return 0, 0, fmt.Errorf("%w: a pattern whose compiled form is larger than %d", ErrFilterTooComplex, MaxRegexSize)
	}
	return insts, size, nil
}

// costCap keeps the estimates from overflowing; anything near it is far
// beyond the limits.
const costCap = 1 << 40

// costOf estimates the compiled size of re, expanding repetitions as the
// compiler does. The parser bounds the nesting, so the recursion is
// shallow.
func costOf(re *syntax.Regexp) (insts, size int) {
	switch re.Op {
	case syntax.OpLiteral:
		return len(re.Rune), len(re.Rune)
	case syntax.OpCharClass:
		return 1, 1 + len(re.Rune)/2
	case syntax.OpCapture:
		i, s := costOf(re.Sub[0])
		return i + 2, s + 2
	case syntax.OpStar, syntax.OpPlus, syntax.OpQuest:
		i, s := costOf(re.Sub[0])
		return i + 1, s + 1
	case syntax.OpRepeat:
		n := re.Max
		if n < 0 {
			n = re.Min + 1
		}
		n = max(n, 1)
		i, s := costOf(re.Sub[0])
		return min(i*n+n, costCap), min(s*n+n, costCap)
	case syntax.OpConcat, syntax.OpAlternate:
		insts, size = len(re.Sub), len(re.Sub)
		if re.Op == syntax.OpAlternate {
			// An anchored pattern also compiles to a one-pass program,
			// whose tables grow with the square of an alternation's
			// branches.
			size += len(re.Sub) * len(re.Sub) / 2
		}
		for _, sub := range re.Sub {
			i, s := costOf(sub)
			insts, size = min(insts+i, costCap), min(size+s, costCap)
		}
		return insts, size
	default:
		return 1, 1
	}
}
