package filter

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/agent-host/agent-host/protocol"
)

// factOperators maps every spelling of an operator in the command-line
// fact syntax to the wire operator it stands for.
var factOperators = map[string]string{
	"==": "==",
	"=":  "==",
	"!=": "!=",
	"=~": "=~",
	"<":  "<",
	"<=": "<=",
	"=<": "<=",
	">":  ">",
	">=": ">=",
	"=>": ">=",
}

// ParseFactFilter parses a fact filter as typed on the command line
// (os.family=Debian, memory>=1024, os=~/deb/) the way Choria does: the
// right-most operator splits fact from value, "=", "=<" and "=>" become
// "==", "<=" and ">=", and a value written as /re/ turns any operator into
// "=~". Errors wrap ErrInvalidFactFilter.
func ParseFactFilter(s string) (protocol.FactFilter, error) {
	start, end, found := lastFactOperator(s)
	if !found {
		return protocol.FactFilter{}, invalidFactFilter(s)
	}

	fact := strings.TrimSpace(s[:start])
	value := strings.TrimSpace(s[end:])
	// A fact starting, or a value ending, with an operator character is
	// rejected, as Choria does.
	if fact == "" || value == "" || isFactOperator(fact[:1]) || isFactOperator(value[len(value)-1:]) {
		return protocol.FactFilter{}, invalidFactFilter(s)
	}

	op := factOperators[s[start:end]]
	if value[0] == '/' && value[len(value)-1] == '/' {
		op = "=~"
	}

	return protocol.FactFilter{Fact: fact, Operator: op, Value: value}, nil
}

func invalidFactFilter(s string) error {
	return fmt.Errorf("%w %q: want fact, operator and value such as os=linux", ErrInvalidFactFilter, s)
}

// lastFactOperator tokenizes s from the left, taking at each position the
// two-character operator if there is one, else the one-character one, and
// returns the bounds of the last operator found. Scanning from the left
// matters: "a<==b" reads as "a<=", "==", "b".
func lastFactOperator(s string) (start, end int, found bool) {
	for i := 0; i < len(s); {
		n := 0
		switch {
		case i+2 <= len(s) && isFactOperator(s[i:i+2]):
			n = 2
		case isFactOperator(s[i : i+1]):
			n = 1
		default:
			i++
			continue
		}
		start, end, found = i, i+n, true
		i += n
	}

	return start, end, found
}

func isFactOperator(spelling string) bool {
	_, ok := factOperators[spelling]
	return ok
}

// NormalizeFacts merges facts documents (each a JSON object, later keys
// win, no deep merge) and re-encodes them the way Choria does before it
// matches: numbers become float64, duplicate keys keep the last value and
// object keys are sorted. Fact filters with gjson wildcards, very large
// integers and compound expressions that look at the raw facts bytes only
// give Choria's results on facts normalized like this.
//
// Like Choria, it skips a document that is not a JSON object; the error
// then names each one skipped, and the facts returned (never nil, {} at
// least) hold the others.
func NormalizeFacts(docs ...[]byte) (json.RawMessage, error) {
	merged := map[string]any{}
	var errs []error

	for i, doc := range docs {
		var facts map[string]any
		if err := json.Unmarshal(doc, &facts); err != nil {
			errs = append(errs, fmt.Errorf("decoding facts document %d: %w", i, err))
			continue
		}

		for k, v := range facts {
			merged[k] = v
		}
	}

	// Cannot fail: the values came from encoding/json.
	out, _ := json.Marshal(merged)

	return out, errors.Join(errs...)
}

// ParseClasses returns the classes of a Puppet-style classes file (one per
// line) sorted, as Choria reads them. Like Choria it keeps empty lines and
// stops at a line longer than 64 KiB.
func ParseClasses(data []byte) []string {
	classes := []string{}

	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		classes = append(classes, sc.Text())
	}

	sort.Strings(classes)

	return classes
}

// matchFacts reports whether every fact filter holds for facts. A filter
// that cannot be evaluated (bad number, bad regex, unknown operator) fails
// the whole category.
func (m *Matcher) matchFacts(filters []protocol.FactFilter, facts json.RawMessage, b *budget) bool {
	for _, ff := range filters {
		// with() reaches here with fact paths Check has not seen.
		if err := CheckFactPath(ff.Fact); err != nil {
			m.log.Warn("cannot evaluate fact filter", "error", err)
			return false
		}
		ok, err := lookupFact(facts, ff.Fact).satisfies(ff.Operator, ff.Value, b)
		if err != nil {
			m.log.Warn("cannot evaluate fact filter", "fact", ff.Fact, "operator", ff.Operator, "value", ff.Value, "error", err)
			return false
		}

		if !ok {
			return false
		}
	}

	return len(filters) > 0
}

// factKind is the JSON type of a fact, which is what decides how Choria
// compares it: a string fact is compared as a string even when both sides
// look numeric.
type factKind uint8

const (
	factMissing factKind = iota // never matches, not even with "!="
	factOther                   // null, array or object: never equal, cannot be ordered
	factString
	factNumber
	factBool
)

// factValue is a fact looked up once and reduced to what the operators
// look at.
type factValue struct {
	kind  factKind
	text  string  // factString
	num   float64 // factNumber
	whole int     // factNumber as an integer, converted as Choria does (see factInt)
	truth bool    // factBool
}

func lookupFact(facts json.RawMessage, path string) factValue {
	r := gjson.GetBytes(facts, path)

	switch {
	case !r.Exists():
		return factValue{kind: factMissing}
	case r.Type == gjson.String:
		return factValue{kind: factString, text: r.Str}
	case r.Type == gjson.Number:
		return factValue{kind: factNumber, num: r.Num, whole: factInt(r)}
	case r.Type == gjson.True || r.Type == gjson.False:
		return factValue{kind: factBool, truth: r.Type == gjson.True}
	default:
		return factValue{kind: factOther}
	}
}

// satisfies evaluates "fact op value", with Choria's rules:
//
//   - Strings: "==" and "!=" ignore case, the ordering operators compare
//     byte-wise after lower-casing, "=~" is a case-insensitive regexp.
//   - Numbers: a value with a dot in it is a float, and with one Choria's
//     ">" is really ">="; without a dot the fact is taken as an integer,
//     compared numerically by the ordering operators but textually by "=="
//     and "!=" (2048 is not "02048"), and "=~" sees the integer's decimal
//     form, or four decimals when the pattern has a dot.
//   - Booleans: the value is a word, true when strconv.ParseBool reads it
//     as true and false otherwise. "=~" lower-cases it first; "!=" does too,
//     and is true whenever the word is false, whatever the fact holds.
//   - Booleans, null, arrays and objects cannot be ordered (an error);
//     null, arrays and objects equal and match nothing.
func (f factValue) satisfies(op string, value string, b *budget) (bool, error) {
	if f.kind == factMissing {
		return false, nil
	}

	floatValue := strings.Contains(value, ".")

	switch op {
	case "==", "!=":
		switch f.kind {
		case factOther:
			return false, nil
		case factBool:
			if op == "!=" {
				return !trueWord(strings.ToLower(value)), nil
			}
			return trueWord(value) == f.truth, nil
		}
		eq, err := f.equals(value, floatValue)
		if err != nil {
			return false, err
		}
		return eq == (op == "=="), nil

	case "=~":
		switch f.kind {
		case factString:
			return regexMatch(f.text, value, b)
		case factNumber:
			if floatValue {
				return regexMatch(fmt.Sprintf("%.4f", f.num), value, b)
			}
			return regexMatch(strconv.Itoa(f.whole), value, b)
		case factBool:
			return trueWord(strings.ToLower(value)) == f.truth, nil
		default:
			return false, nil
		}

	case "<", "<=", ">", ">=":
		switch f.kind {
		case factString:
			return ordered(op, strings.Compare(strings.ToLower(f.text), strings.ToLower(value))), nil
		case factNumber:
			if floatValue {
				v, err := parseFloatValue(value)
				if err != nil {
					return false, err
				}
				if op == ">" {
					op = ">="
				}
				c, comparable := compareFloats(f.num, v)
				return comparable && ordered(op, c), nil
			}
			v, err := strconv.Atoi(value)
			if err != nil {
				return false, fmt.Errorf("comparing number fact: %w", err)
			}
			return ordered(op, cmp.Compare(f.whole, v)), nil
		default:
			return false, fmt.Errorf("cannot order a fact that is not a string or a number with %q", op)
		}

	default:
		return false, fmt.Errorf("unknown fact operator %q", op)
	}
}

// equals is "==" for string and number facts.
func (f factValue) equals(value string, floatValue bool) (bool, error) {
	if f.kind == factString {
		return strings.EqualFold(f.text, value), nil
	}

	if !floatValue {
		return strconv.Itoa(f.whole) == value, nil
	}

	v, err := parseFloatValue(value)
	if err != nil {
		return false, err
	}
	return f.num == v, nil
}

func parseFloatValue(value string) (float64, error) {
	v, err := strconv.ParseFloat(value, 64)
	if err != nil {
		return 0, fmt.Errorf("comparing number fact: %w", err)
	}
	return v, nil
}

// compareFloats is a three-way comparison that reports NaN as not
// comparable, so that every ordering is false for it, as with Go's < and >.
func compareFloats(a, b float64) (c int, comparable bool) {
	if math.IsNaN(a) || math.IsNaN(b) {
		return 0, false
	}
	return cmp.Compare(a, b), true
}

// ordered turns a three-way comparison into the result of op.
func ordered(op string, c int) bool {
	switch op {
	case "<":
		return c < 0
	case "<=":
		return c <= 0
	case ">":
		return c > 0
	default: // ">="
		return c >= 0
	}
}

// regexMatch matches subject against a fact filter pattern: any leading
// and trailing slashes are dropped and the match ignores case.
func regexMatch(subject string, pattern string, b *budget) (bool, error) {
	matched, err := b.regexpMatch("(?i)"+strings.Trim(pattern, "/"), []byte(subject))
	if err != nil && b.err == nil {
		return false, fmt.Errorf("compiling fact pattern: %w", err)
	}
	return matched, err
}

// trueWord reports whether strconv.ParseBool reads s as true ("1", "t",
// "T", "true", "TRUE", "True"); it returns false for anything it cannot
// read.
func trueWord(s string) bool {
	b, _ := strconv.ParseBool(s)
	return b
}

// factInt converts a number fact to an int the way gjson v1.19, the
// version Choria v0.30.2 is built with, does: exact below 2^53, else
// parse the literal with wrap-around, else Go's float conversion. Newer
// gjson saturates instead, which would change results for huge facts.
func factInt(fact gjson.Result) int {
	const maxSafe = 9007199254740991
	if !(fact.Num < -maxSafe || fact.Num > maxSafe) {
		return int(int64(fact.Num))
	}

	if n, ok := parseWrappingInt(fact.Raw); ok {
		return int(n)
	}

	return int(int64(fact.Num))
}

// parseWrappingInt parses an optionally negative run of digits, letting
// overflow wrap around as gjson v1.19 does.
func parseWrappingInt(s string) (int64, bool) {
	neg := strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
	}
	if s == "" {
		return 0, false
	}

	var n int64
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int64(s[i]-'0')
	}

	if neg {
		n = -n
	}

	return n, true
}
