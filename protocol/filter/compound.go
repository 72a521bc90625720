package filter

import (
	"container/list"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"
	"github.com/tidwall/gjson"

	"github.com/agent-host/agent-host/protocol"
)

// matchCompound applies Choria's rule for the compound category, which is
// not a plain AND but a vote with a veto: the node is selected when
// strictly more than half of the entries are true and none failed to
// compile or run. A malformed filter (an entry that is not exactly one map
// with an "expr" key) selects nothing.
func (m *Matcher) matchCompound(entries [][]map[string]string, n *Node) bool {
	expressions, ok := compoundExpressions(entries)
	if !ok {
		m.log.Warn("malformed compound filter", "filter", entries)
		return false
	}

	env := exprEnv(m, n)
	trues := 0
	for _, expression := range expressions {
		switch m.judge(expression, env) {
		case verdictFailed:
			return false
		case verdictTrue:
			trues++
		}
	}

	return 2*trues > len(expressions)
}

// compoundExpressions returns the expression of each entry, or false if
// any entry is malformed.
func compoundExpressions(entries [][]map[string]string) ([]string, bool) {
	expressions := make([]string, 0, len(entries))
	for _, entry := range entries {
		if len(entry) != 1 {
			return nil, false
		}
		expression, ok := entry[0]["expr"]
		if !ok {
			return nil, false
		}
		expressions = append(expressions, expression)
	}

	return expressions, true
}

// verdict is what one compound expression contributes to the category.
type verdict int8

const (
	verdictFalse  verdict = iota
	verdictTrue           // counts towards the majority
	verdictFailed         // did not compile, did not run, or was not a boolean: vetoes the category
)

// judge compiles (or fetches from the cache) and runs one expression.
func (m *Matcher) judge(expression string, env map[string]any) verdict {
	prog, err := m.programs.get(expression)
	if err != nil {
		m.log.Warn("cannot compile compound filter", "expr", expression, "error", err)
		return verdictFailed
	}

	out, err := expr.Run(prog, env)
	b, isBool := out.(bool)
	switch {
	case err != nil:
		m.log.Warn("cannot evaluate compound filter", "expr", expression, "error", err)
		return verdictFailed
	case !isBool:
		m.log.Warn("cannot evaluate compound filter", "expr", expression, "error", fmt.Sprintf("result is %T, not a boolean", out))
		return verdictFailed
	case b:
		return verdictTrue
	default:
		return verdictFalse
	}
}

// exprEnv is the environment compound expressions see: the node's agents,
// classes and raw facts (so facts.x does not compile, as in Choria, and
// expressions reach facts through fact() or with()) and the functions
// Choria provides. Compilation uses it too, with no Matcher and an empty
// node, since only the types of its values matter then; nothing is
// called. Choria would add the functions of its data plugins; agent-host
// has none, so expressions calling them fail to compile and select
// nothing.
//
// It is a plain map rather than a struct: expr reads names missing from a
// map as nil, as Choria relies on with AllowUndefinedVariables, but fails
// on names missing from a struct, and $env must stay a map.
func exprEnv(m *Matcher, n *Node) map[string]any {
	return map[string]any{
		"agents":  n.Agents,
		"classes": n.Classes,
		"facts":   n.Facts,
		"fact":    func(path string) (any, error) { return factLookup(n.Facts, path) },
		"with":    func(query string) (bool, error) { return m.with(query, n) },
		"include": include,
		"semver":  semverSatisfies,
	}
}

// factLookup implements fact(path); a path beyond the limits is an
// evaluation error rather than a gjson query.
func factLookup(facts []byte, path string) (any, error) {
	if err := checkFactPath(path); err != nil {
		return nil, err
	}
	return gjson.GetBytes(facts, path).Value(), nil
}

// with implements with(q): q is a fact filter in command-line syntax if
// it parses as one, else a class filter, else an agent filter. A fact path
// beyond the limits is an evaluation error, which vetoes the expression.
func (m *Matcher) with(q string, n *Node) (bool, error) {
	if ff, err := ParseFactFilter(q); err == nil {
		if err := checkFactPath(ff.Fact); err != nil {
			return false, err
		}
		return m.matchFacts([]protocol.FactFilter{ff}, n.Facts), nil
	}

	return matchClasses([]string{q}, n.Classes) || matchAgents([]string{q}, n.Agents), nil
}

// compileExpr compiles a compound expression against exprEnv's types.
func compileExpr(expression string) (prog *vm.Program, err error) {
	// The expression comes from the network; a compiler bug must cost one
	// request, not the host.
	defer func() {
		if r := recover(); r != nil {
			prog, err = nil, fmt.Errorf("compiling compound filter: panic: %v", r)
		}
	}()

	if err := checkExpression(expression); err != nil {
		return nil, err
	}
	env := exprEnv(nil, withDefaults(nil))
	prog, err = expr.Compile(expression, expr.Env(env), expr.AsBool(), expr.AllowUndefinedVariables(), expr.MaxNodes(MaxExpressionNodes))
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
