package filter

import (
	"container/list"
	"encoding/json"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"

	"github.com/Masterminds/semver/v3"
	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"
	"github.com/tidwall/gjson"

	"github.com/agent-host/agent-host/protocol"
)

// matchCompound evaluates the compound filters the way Choria does, which
// is not a plain AND: an entry that fails to compile or run fails the
// category, and otherwise each true result counts +1 and each false one
// -1, the category matching when the sum is positive. A malformed entry
// (not exactly one map, or no "expr" key) fails the category outright.
func (m *Matcher) matchCompound(entries [][]map[string]string, n *Node) bool {
	matched, failed := 0, 0

	for _, entry := range entries {
		if len(entry) != 1 {
			m.log.Warn("malformed compound filter", "entry", entry)
			return false
		}

		expression, ok := entry[0]["expr"]
		if !ok {
			m.log.Warn("malformed compound filter", "entry", entry)
			return false
		}

		prog, err := m.programs.get(expression)
		if err != nil {
			m.log.Warn("cannot compile compound filter", "expr", expression, "error", err)
			failed++
			continue
		}

		res, err := m.evalProgram(prog, n)
		if err != nil {
			m.log.Warn("cannot evaluate compound filter", "expr", expression, "error", err)
			failed++
			continue
		}

		if res {
			matched++
		} else {
			matched--
		}
	}

	return failed == 0 && matched > 0
}

// evalProgram runs a compiled compound expression against n.
func (m *Matcher) evalProgram(prog *vm.Program, n *Node) (bool, error) {
	env := map[string]any{
		"agents":  n.Agents,
		"classes": n.Classes,
		// The raw JSON bytes, as in Choria: facts.x does not compile, and
		// expressions reach facts through fact() or with().
		"facts":   n.Facts,
		"with":    func(q string) bool { return m.with(q, n) },
		"fact":    func(q string) any { return gjson.GetBytes(n.Facts, q).Value() },
		"include": include,
		"semver":  semverCheck,
	}

	res, err := expr.Run(prog, env)
	if err != nil {
		return false, fmt.Errorf("running compound filter: %w", err)
	}

	b, ok := res.(bool)
	if !ok {
		return false, fmt.Errorf("compound filter returned %T, not a boolean", res)
	}

	return b, nil
}

// with implements with(q): q is a fact filter in command-line syntax if
// it parses as one, else a class filter, else an agent filter.
func (m *Matcher) with(q string, n *Node) bool {
	if ff, err := ParseFactFilter(q); err == nil {
		return m.matchFacts([]protocol.FactFilter{ff}, n.Facts)
	}

	return matchClasses([]string{q}, n.Classes) || matchAgents([]string{q}, n.Agents)
}

// include reports whether hay holds needle. An int needle (an expression
// literal) is compared as float64, the type of every JSON number from
// fact(). Choria compares with go-cmp; reflect.DeepEqual gives the same
// answer for every value JSON and expression literals can produce.
func include(hay []any, needle any) bool {
	if i, ok := needle.(int); ok {
		needle = float64(i)
	}

	for _, v := range hay {
		if reflect.DeepEqual(v, needle) {
			return true
		}
	}

	return false
}

// semverCheck implements semver(version, constraint); a version or
// constraint that does not parse is an evaluation error.
func semverCheck(version string, constraint string) (bool, error) {
	c, err := semver.NewConstraint(constraint)
	if err != nil {
		return false, fmt.Errorf("parsing constraint %q: %w", constraint, err)
	}

	v, err := semver.NewVersion(version)
	if err != nil {
		return false, fmt.Errorf("parsing version %q: %w", version, err)
	}

	return c.Check(v), nil
}

// compileExpr compiles a compound expression against the environment
// Choria declares: only the types of its values matter here, the real
// values are supplied per evaluation. Choria would add the functions of
// its data plugins; agent-host has none, so expressions calling them
// fail to compile and select nothing.
func compileExpr(expression string) (prog *vm.Program, err error) {
	env := map[string]any{
		"agents":  []string{},
		"classes": []string{},
		"facts":   json.RawMessage{},
		"with":    func(string) bool { return false },
		"fact":    func(string) any { return nil },
		"include": func([]any, any) bool { return false },
		"semver":  func(string, string) (bool, error) { return false, nil },
	}

	// The expression comes from the network; a compiler bug must cost one
	// request, not the host.
	defer func() {
		if r := recover(); r != nil {
			prog, err = nil, fmt.Errorf("compiling compound filter: panic: %v", r)
		}
	}()

	prog, err = expr.Compile(expression, expr.Env(env), expr.AsBool(), expr.AllowUndefinedVariables())
	if err != nil {
		return nil, fmt.Errorf("compiling compound filter: %w", err)
	}

	return prog, nil
}

// maxCachedExprLen bounds the expressions kept in the cache, so that the
// cache holds at most programCacheSize small programs however large the
// requests; longer expressions are compiled on every use.
const maxCachedExprLen = 4 << 10

// programCache is a bounded least-recently-used cache of compiled
// expressions, compile errors included. Two goroutines missing on the
// same expression at once both compile it; that is rare and harmless.
type programCache struct {
	size int // entries kept; 0 disables caching

	mu      sync.Mutex
	order   *list.List               // of *compiled, most recently used first
	entries map[string]*list.Element // by expression

	compiles atomic.Int64 // calls to compileExpr, for tests
}

type compiled struct {
	expression string
	prog       *vm.Program
	err        error
}

func newProgramCache(size int) *programCache {
	return &programCache{
		size:    size,
		order:   list.New(),
		entries: make(map[string]*list.Element),
	}
}

// get returns the compiled program for expression, compiling it on a miss.
func (c *programCache) get(expression string) (*vm.Program, error) {
	cacheable := c.size > 0 && len(expression) <= maxCachedExprLen

	if cacheable {
		c.mu.Lock()
		if el, ok := c.entries[expression]; ok {
			c.order.MoveToFront(el)
			e := el.Value.(*compiled)
			c.mu.Unlock()
			return e.prog, e.err
		}
		c.mu.Unlock()
	}

	c.compiles.Add(1)
	prog, err := compileExpr(expression)

	if cacheable {
		c.mu.Lock()
		if _, ok := c.entries[expression]; !ok {
			c.entries[expression] = c.order.PushFront(&compiled{expression: expression, prog: prog, err: err})
			for c.order.Len() > c.size {
				oldest := c.order.Back()
				c.order.Remove(oldest)
				delete(c.entries, oldest.Value.(*compiled).expression)
			}
		}
		c.mu.Unlock()
	}

	return prog, err
}
