package filter

import (
	"container/list"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/checker"
	"github.com/expr-lang/expr/conf"
	"github.com/expr-lang/expr/vm"
	"github.com/tidwall/gjson"

	"github.com/agent-host/agent-host/protocol"
)

// matchCompound applies Choria's rule for the compound category, which is
// not a plain AND but a vote with a veto: the node is selected when
// strictly more than half of the entries are true and none failed to
// compile or run. A malformed filter (an entry that is not exactly one map
// with an "expr" key) selects nothing.
func (m *Matcher) matchCompound(entries [][]map[string]string, n *Node, b *budget) bool {
	expressions, ok := compoundExpressions(entries)
	if !ok {
		m.log.Warn("malformed compound filter", "entries", len(entries))
		return false
	}

	env := exprEnv(m, n, b)
	trues := 0
	for _, expression := range expressions {
		switch m.judge(expression, env, b) {
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
func (m *Matcher) judge(expression string, env map[string]any, b *budget) verdict {
	prog, err := m.programs.get(expression)
	if err != nil {
		m.log.Warn("cannot compile compound filter", "expr", clip(expression), "error", clip(err.Error()))
		return verdictFailed
	}

	b.start()
	machine := vm.VM{MemoryBudget: exprMemoryBudget}
	out, err := machine.Run(prog, env)
	if err == nil {
		// What runs between the budget's checks, such as a builtin, can
		// overrun the time; the filter then fails all the same.
		err = b.inTime()
	}
	result, isBool := out.(bool)
	switch {
	case err != nil:
		m.log.Warn("cannot evaluate compound filter", "expr", clip(expression), "error", clip(err.Error()))
		return verdictFailed
	case !isBool:
		m.log.Warn("cannot evaluate compound filter", "expr", clip(expression), "error", fmt.Sprintf("result is %T, not a boolean", out))
		return verdictFailed
	case result:
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
func exprEnv(m *Matcher, n *Node, b *budget) map[string]any {
	env := map[string]any{
		"agents":  n.Agents,
		"classes": n.Classes,
		"facts":   n.Facts,
		// The closures of an expression call this for every element; see
		// exprPolicy.
		tickFunc:  func(v any) (any, error) { return v, b.step() },
		costFunc:  func(v any) (any, error) { return v, b.charge(v) },
		matchFunc: func(subject any, pattern string) (bool, error) { return exprMatches(subject, pattern, b) },
		"fact": func(path string) (any, error) {
			if err := b.call(); err != nil {
				return nil, err
			}
			return factLookup(n.Facts, path)
		},
		"with": func(query string) (bool, error) {
			if err := b.withQuery(query); err != nil {
				return false, err
			}
			return m.with(query, n, b)
		},
		"include": func(list []any, x any) (bool, error) {
			if err := b.call(); err != nil {
				return false, err
			}
			return include(list, x), nil
		},
		"semver": func(version string, constraint string) (bool, error) {
			if err := b.call(); err != nil {
				return false, err
			}
			return semverSatisfies(version, constraint)
		},
	}
	return env
}

// factLookup implements fact(path); a path beyond the limits is an
// evaluation error rather than a gjson query.
func factLookup(facts []byte, path string) (any, error) {
	if err := CheckFactPath(path); err != nil {
		return nil, err
	}
	return gjson.GetBytes(facts, path).Value(), nil
}

// with implements with(q): q is a fact filter in command-line syntax if
// it parses as one, else a class filter, else an agent filter. A fact path
// beyond the limits is an evaluation error, which vetoes the expression.
func (m *Matcher) with(q string, n *Node, b *budget) (bool, error) {
	if ff, err := ParseFactFilter(q); err == nil {
		if err := CheckFactPath(ff.Fact); err != nil {
			return false, err
		}
		matched := m.matchFacts([]protocol.FactFilter{ff}, n.Facts, b)
		return matched, b.err
	}

	matched := matchClasses([]string{q}, n.Classes, b) || matchAgents([]string{q}, n.Agents, b)
	return matched, b.err
}

// exprMatches implements expr-lang's matches operator, which exprPolicy
// turns into a call of this with a literal pattern: the same results, but
// charged against the budget.
func exprMatches(subject any, pattern string, b *budget) (bool, error) {
	var text []byte
	switch s := subject.(type) {
	case nil:
		return false, nil
	case string:
		text = []byte(s)
	case []byte:
		text = s
	default:
		return false, fmt.Errorf("matches needs a string, not %T", subject)
	}
	if err := b.inTime(); err != nil {
		return false, err
	}
	return b.regexpMatch(pattern, text)
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
	env := exprEnv(nil, withDefaults(nil), newBudget())
	opts := []expr.Option{expr.Env(env), expr.AsBool(), expr.AllowUndefinedVariables(), expr.MaxNodes(MaxExpressionNodes), expr.DisableAllBuiltins()}
	for _, name := range allowedBuiltins {
		opts = append(opts, expr.EnableBuiltin(name))
	}
	if err := typeCheck(expression, opts); err != nil {
		return nil, fmt.Errorf("compiling compound filter: %w", err)
	}
	policy := &exprPolicy{}
	opts = append(opts, expr.Patch(policy))
	prog, err = expr.Compile(expression, opts...)
	if err == nil {
		err = policy.err
	}
	if err != nil {
		return nil, fmt.Errorf("compiling compound filter: %w", err)
	}

	return prog, nil
}

// typeCheck reports the type errors of expression as written. exprPolicy
// wraps values in charging functions, some typed any, and the checker
// ignores type errors until the patching is done, so a comparison of a
// list with a number would otherwise compile.
func typeCheck(expression string, opts []expr.Option) error {
	config := conf.CreateNew()
	for _, op := range opts {
		op(config)
	}
	for name := range config.Disabled {
		delete(config.Builtins, name)
	}
	_, err := checker.ParseCheck(expression, config)
	return err
}

// exprMemoryBudget bounds what one evaluation may allocate in ranges,
// arrays and maps, in expr-lang's units (elements); its default is 100
// times this.
const exprMemoryBudget = 10_000

// allowedBuiltins are the expr-lang builtins a compound expression may
// call: those whose result is no larger than their arguments and whose
// work is linear in them, or n log n for sort. The others (repeat,
// replace, join, map, reduce, groupBy, sortBy, concat, flatten, toJSON,
// fromJSON, toBase64, fromBase64, toPairs, fromPairs) can build values
// far larger than the expression, exponentially so when nested, and uniq
// compares every element with every other; they are refused.
var allowedBuiltins = []string{
	"all", "none", "any", "one", "filter", "find", "findIndex", "findLast", "findLastIndex", "count", "sum",
	"len", "type", "abs", "ceil", "floor", "round", "int", "float", "string",
	"trim", "trimPrefix", "trimSuffix", "upper", "lower", "split", "splitAfter",
	"indexOf", "lastIndexOf", "hasPrefix", "hasSuffix", "max", "min", "mean", "median",
	"now", "duration", "date", "timezone", "first", "last", "get", "take", "keys", "values",
	"reverse", "sort", "bitnot",
}

// The functions exprPolicy has expressions call: tickFunc for every
// element a closure visits, so that closures run within the budget's
// steps and time, costFunc on what builtins take and return, and
// matchFunc in place of the matches operator. Expressions may not name
// them.
const (
	reservedPrefix = "__agent_host"
	tickFunc       = reservedPrefix + "_step"
	costFunc       = reservedPrefix + "_cost"
	matchFunc      = reservedPrefix + "_matches"
)

// exprPolicy refuses, while an expression compiles, what would make its
// evaluation cost more than linear in its size: variables (let), which
// can double a value at every use, closures inside closures, which
// multiply their loops, regular expressions that are not literals or are
// large, and the raw facts document, which costs its whole size to turn
// into anything. It also makes every closure count its steps.
type exprPolicy struct {
	err       error
	regexSize int // of the matches patterns so far
}

func (p *exprPolicy) Visit(node *ast.Node) {
	if p.err != nil {
		return
	}
	switch n := (*node).(type) {
	case *ast.IdentifierNode:
		switch {
		case n.Value == "facts" || n.Value == "$env":
			p.err = fmt.Errorf("%w: %s is not allowed in a compound filter; use fact() or with()", ErrFilterTooComplex, n.Value)
		case strings.HasPrefix(n.Value, reservedPrefix):
			// Calling the budget's functions directly would skip what
			// they are inserted to check.
			p.err = fmt.Errorf("%w: %s is reserved", ErrFilterTooComplex, n.Value)
		}
	case *ast.BinaryNode:
		if n.Operator == "+" {
			*node = costed(n)
			return
		}
		if n.Operator == "matches" {
			pattern, literal := n.Right.(*ast.StringNode)
			switch {
			case !literal:
				p.err = fmt.Errorf("%w: matches needs a literal pattern", ErrFilterTooComplex)
				return
			case len(pattern.Value) > MaxRegexBytes:
				p.err = fmt.Errorf("%w: a pattern of %d bytes, more than %d", ErrFilterTooComplex, len(pattern.Value), MaxRegexBytes)
				return
			}
			// Compiled at run time, within the budget; what compiling
			// costs is bounded per expression here, as its programs are
			// cached.
			_, size, err := regexpCost(pattern.Value)
			if err != nil {
				p.err = fmt.Errorf("compiling the pattern of matches: %w", err)
				return
			}
			if p.regexSize += size; p.regexSize > MaxRegexCompile {
				p.err = fmt.Errorf("%w: matches patterns larger than %d in one expression", ErrFilterTooComplex, MaxRegexCompile)
				return
			}
			*node = call(matchFunc, n.Left, n.Right)
		}
	case *ast.BuiltinNode:
		// The closure builtins (map, reduce...) are parsed whatever is
		// disabled, so the allow-list is applied here too.
		if !slices.Contains(allowedBuiltins, n.Name) {
			p.err = fmt.Errorf("%w: %s() is not allowed in a compound filter", ErrFilterTooComplex, n.Name)
			return
		}
		// Builtins do not count steps: what they take and return is
		// charged instead, which is what their work is proportional to.
		// The closure builtins count steps, and the optimizer fuses them
		// with what takes their result (len(filter(...)) counts without
		// building an array), so their results are not charged.
		for i, arg := range n.Arguments {
			if _, closure := arg.(*ast.PredicateNode); !closure && !hasClosure(arg) && !isCosted(arg) {
				n.Arguments[i] = costed(arg)
			}
		}
		if !hasClosure(n) {
			*node = costed(n)
		}
	case *ast.VariableDeclaratorNode:
		p.err = fmt.Errorf("%w: let is not allowed in a compound filter", ErrFilterTooComplex)
	case *ast.PredicateNode:
		inner := &closureCount{}
		ast.Walk(&n.Node, inner)
		if inner.n > 0 {
			p.err = fmt.Errorf("%w: closures may not nest in a compound filter", ErrFilterTooComplex)
			return
		}
		n.Node = call(tickFunc, n.Node)
	}
}

func call(function string, args ...ast.Node) ast.Node {
	return &ast.CallNode{Callee: &ast.IdentifierNode{Value: function}, Arguments: args}
}

// costed wraps n in the charging function, so that its value is charged
// against the budget. The function is typed any: a wrapper typed by the
// checker's idea of n would convert values the checker types wrongly
// (max(1, 2.5) is typed int, get(agents, 9) string though it is nil), and
// typeCheck has already caught the type errors the wrapper would hide.
func costed(n ast.Node) ast.Node { return call(costFunc, n) }

// hasClosure says n is a builtin given a closure.
func hasClosure(n ast.Node) bool {
	b, ok := n.(*ast.BuiltinNode)
	return ok && slices.ContainsFunc(b.Arguments, func(a ast.Node) bool {
		_, closure := a.(*ast.PredicateNode)
		return closure
	})
}

// isCosted says n is already charged.
func isCosted(n ast.Node) bool {
	c, ok := n.(*ast.CallNode)
	if !ok {
		return false
	}
	id, ok := c.Callee.(*ast.IdentifierNode)
	return ok && id.Value == costFunc
}

type closureCount struct{ n int }

func (c *closureCount) Visit(node *ast.Node) {
	if _, ok := (*node).(*ast.PredicateNode); ok {
		c.n++
	}
}

// clip shortens a filter for a log line.
func clip(s string) string {
	const max = 200
	if len(s) <= max {
		return s
	}
	return s[:max] + fmt.Sprintf("… (%d bytes)", len(s))
}

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
	// Match checks expressions against the limits first, so the cache
	// holds at most programCacheSize programs of MaxExpressionBytes.
	cacheable := c.size > 0

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
