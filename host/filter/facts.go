package filter

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/agent-host/agent-host/protocol"
)

// factOperator finds the operators of a command-line fact filter. The
// alternatives are tried in order at each position, so "<=" wins over "<"
// and "=~" over "=", exactly as in Choria's parser.
var factOperator = regexp.MustCompile(`<=|>=|=>|=<|<|>|!=|=~|==?`)

// ParseFactFilter parses a fact filter as typed on the command line
// (os.family=Debian, memory>=1024, os=~/deb/) the way Choria does: the
// right-most operator splits fact from value, "=", "=<" and "=>" become
// "==", "<=" and ">=", and a value written as /re/ turns any operator into
// "=~". Errors wrap ErrInvalidFactFilter.
func ParseFactFilter(s string) (protocol.FactFilter, error) {
	ops := factOperator.FindAllStringIndex(s, -1)
	if len(ops) == 0 {
		return protocol.FactFilter{}, fmt.Errorf("%w %q: want fact, operator and value such as os=linux", ErrInvalidFactFilter, s)
	}

	at := ops[len(ops)-1]
	op := s[at[0]:at[1]]
	fact := strings.TrimSpace(s[:at[0]])
	value := strings.TrimSpace(s[at[1]:])

	if fact == "" || value == "" || isOperatorByte(fact[0]) || isOperatorByte(value[len(value)-1]) {
		return protocol.FactFilter{}, fmt.Errorf("%w %q: want fact, operator and value such as os=linux", ErrInvalidFactFilter, s)
	}

	switch op {
	case "=":
		op = "=="
	case "=<":
		op = "<="
	case "=>":
		op = ">="
	}

	if value[0] == '/' && value[len(value)-1] == '/' {
		op = "=~"
	}

	return protocol.FactFilter{Fact: fact, Operator: op, Value: value}, nil
}

// isOperatorByte reports whether b on its own is an operator; Choria
// rejects filters whose fact starts, or whose value ends, with one.
func isOperatorByte(b byte) bool {
	return b == '<' || b == '>' || b == '='
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
func (m *Matcher) matchFacts(filters []protocol.FactFilter, facts json.RawMessage) bool {
	for _, ff := range filters {
		ok, err := hasFact(ff, facts)
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

// hasFact evaluates one fact filter. Choria decides how to compare by the
// JSON type of the fact, not by what the value looks like: a string fact
// is compared as a string (case-insensitively) even when both sides look
// numeric, and a number fact is compared as a float only when the value
// has a dot in it. A missing fact never matches, not even with "!=".
func hasFact(ff protocol.FactFilter, facts json.RawMessage) (bool, error) {
	fact := gjson.GetBytes(facts, ff.Fact)
	if !fact.Exists() {
		return false, nil
	}

	switch ff.Operator {
	case "==":
		return factEqual(fact, ff.Value)
	case "!=":
		return factNotEqual(fact, ff.Value)
	case "=~":
		return factMatches(fact, ff.Value)
	case "<", "<=", ">", ">=":
		return factCompare(fact, ff.Operator, ff.Value)
	default:
		return false, fmt.Errorf("unknown fact operator %q", ff.Operator)
	}
}

func factEqual(fact gjson.Result, value string) (bool, error) {
	switch fact.Type {
	case gjson.String:
		return strings.EqualFold(fact.Str, value), nil
	case gjson.Number:
		if strings.Contains(value, ".") {
			f, err := strconv.ParseFloat(value, 64)
			if err != nil {
				return false, fmt.Errorf("comparing number fact: %w", err)
			}
			return fact.Num == f, nil
		}
		return strconv.Itoa(factInt(fact)) == value, nil
	case gjson.True:
		return truthy(value), nil
	case gjson.False:
		return !truthy(value), nil
	default: // null, objects and arrays
		return false, nil
	}
}

// factNotEqual is not the negation of factEqual: Choria lower-cases the
// value for booleans here, and a false fact is "!=" to any value that is
// not truthy, "false" included.
func factNotEqual(fact gjson.Result, value string) (bool, error) {
	switch fact.Type {
	case gjson.String:
		return !strings.EqualFold(fact.Str, value), nil
	case gjson.Number:
		if strings.Contains(value, ".") {
			f, err := strconv.ParseFloat(value, 64)
			if err != nil {
				return false, fmt.Errorf("comparing number fact: %w", err)
			}
			return fact.Num != f, nil
		}
		return strconv.Itoa(factInt(fact)) != value, nil
	case gjson.True:
		return !truthy(strings.ToLower(value)), nil
	case gjson.False:
		return !truthy(strings.ToLower(value)), nil
	default:
		return false, nil
	}
}

// factMatches implements "=~": numbers are matched in their decimal form
// (four decimals when the pattern has a dot), booleans ignore the pattern
// as a pattern and treat it as a truthy/falsy word.
func factMatches(fact gjson.Result, value string) (bool, error) {
	switch fact.Type {
	case gjson.String:
		return regexMatch(fact.Str, value)
	case gjson.Number:
		if strings.Contains(value, ".") {
			return regexMatch(fmt.Sprintf("%.4f", fact.Num), value)
		}
		return regexMatch(strconv.Itoa(factInt(fact)), value)
	case gjson.True:
		return truthy(strings.ToLower(value)), nil
	case gjson.False:
		return !truthy(strings.ToLower(value)), nil
	default:
		return false, nil
	}
}

// factCompare implements the ordering operators. Strings compare
// byte-wise after lower-casing. For numbers, Choria's ">" with a
// fractional value is really ">=", which is kept for compatibility.
func factCompare(fact gjson.Result, op string, value string) (bool, error) {
	switch fact.Type {
	case gjson.String:
		return ordered(op, strings.Compare(strings.ToLower(fact.Str), strings.ToLower(value))), nil
	case gjson.Number:
		if !strings.Contains(value, ".") {
			v, err := strconv.Atoi(value)
			if err != nil {
				return false, fmt.Errorf("comparing number fact: %w", err)
			}
			return ordered(op, cmp.Compare(factInt(fact), v)), nil
		}

		f, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return false, fmt.Errorf("comparing number fact: %w", err)
		}
		// Plain operators rather than cmp.Compare: NaN must compare false.
		switch op {
		case "<":
			return fact.Num < f, nil
		case "<=":
			return fact.Num <= f, nil
		default: // ">=" and, as in Choria, ">"
			return fact.Num >= f, nil
		}
	default:
		return false, fmt.Errorf("cannot order a %s fact", fact.Type)
	}
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
func regexMatch(subject string, pattern string) (bool, error) {
	re, err := regexp.Compile("(?i)" + strings.TrimRight(strings.TrimLeft(pattern, "/"), "/"))
	if err != nil {
		return false, fmt.Errorf("compiling fact pattern: %w", err)
	}

	return re.MatchString(subject), nil
}

// truthy accepts what strconv.ParseBool reads as true ("1", "t", "T",
// "true", "TRUE", "True"); Choria calls everything else falsy.
func truthy(value string) bool {
	b, err := strconv.ParseBool(value)
	return err == nil && b
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
