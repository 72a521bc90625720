package filter

import (
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/agent-host/agent-host/protocol"
)

// ErrInvalidFactFilter is wrapped by ParseFactFilter errors.
var ErrInvalidFactFilter = errors.New("filter: invalid fact filter")

// Node is what a request's filter is matched against. Build it the way
// Choria presents a server, or compound expressions that look at order or
// raw bytes can see a difference: Facts from NormalizeFacts, Classes from
// ParseClasses, Agents sorted.
type Node struct {
	// Identity is the node's identity (certificate name).
	Identity string
	// Facts is the node's facts as a JSON object, {} when there are none.
	Facts json.RawMessage
	// Classes are the configuration-management classes applied to the node.
	Classes []string
	// Agents names every agent the node serves, including the built-in
	// discovery and rpcutil.
	Agents []string
}

// Option configures a Matcher.
type Option func(*Matcher)

// WithLogger sets the logger that receives filters that cannot be
// evaluated (compound expressions that fail to compile or run, fact
// filters with bad values) and, at debug level, why a node was not
// selected. By default nothing is logged.
func WithLogger(l *slog.Logger) Option {
	return func(m *Matcher) {
		if l != nil {
			m.log = l
		}
	}
}

// Matcher decides whether request filters select a node. It caches the
// compiled compound expressions, and is safe for concurrent use.
type Matcher struct {
	log      *slog.Logger
	programs *programCache
	// evaluation is MaxEvaluation, but for tests that check something
	// else on a machine too busy to keep to it.
	evaluation time.Duration
}

// programCacheSize bounds the number of compiled compound expressions
// kept; a host sees few distinct expressions, so this is plenty.
const programCacheSize = 256

// NewMatcher returns a Matcher.
func NewMatcher(opts ...Option) *Matcher {
	m := &Matcher{
		log:        slog.New(slog.DiscardHandler),
		programs:   newProgramCache(programCacheSize),
		evaluation: MaxEvaluation,
	}

	for _, opt := range opts {
		if opt != nil {
			opt(m)
		}
	}

	return m
}

// Match reports whether f selects n: an empty (or nil) filter selects
// every node, otherwise every non-empty category must match. A filter that
// cannot be evaluated does not match, as in Choria. A filter beyond the
// limits Check enforces does not match either, and is not parsed; nor
// does one whose matching goes beyond the budget of regular expression
// matching and expression evaluation a filter has. The error, which
// wraps ErrFilterTooComplex, says why.
func (m *Matcher) Match(f *protocol.Filter, n *Node) (bool, error) {
	if f.Empty() {
		return true, nil
	}
	if err := m.Check(f); err != nil {
		return false, err
	}
	b := newBudget()
	b.evaluation = m.evaluation
	matched := m.match(f, withDefaults(n), b)
	if b.err != nil {
		return false, b.err
	}
	return matched, nil
}

func (m *Matcher) match(f *protocol.Filter, n *Node, b *budget) bool {
	if len(f.Identity) > 0 && !matchIdentity(f.Identity, n.Identity, b) {
		m.log.Debug("filter does not select node", "category", "identity", "filter", f.Identity)
		return false
	}

	if len(f.Agent) > 0 && !matchAgents(f.Agent, n.Agents, b) {
		m.log.Debug("filter does not select node", "category", "agent", "filter", f.Agent)
		return false
	}

	if len(f.Class) > 0 && !matchClasses(f.Class, n.Classes, b) {
		m.log.Debug("filter does not select node", "category", "cf_class", "filter", f.Class)
		return false
	}

	if len(f.Fact) > 0 && !m.matchFacts(f.Fact, n.Facts, b) {
		m.log.Debug("filter does not select node", "category", "fact", "filter", f.Fact)
		return false
	}

	if len(f.Compound) > 0 && !m.matchCompound(f.Compound, n, b) {
		m.log.Debug("filter does not select node", "category", "compound", "filter", f.Compound)
		return false
	}

	return true
}

// withDefaults returns n, or a copy with the empty values a Choria server
// would present in place of nil ones, so that compound expressions such as
// len(facts) or agents == nil behave the same.
func withDefaults(n *Node) *Node {
	if n != nil && len(n.Facts) > 0 && n.Classes != nil && n.Agents != nil {
		return n
	}

	c := Node{}
	if n != nil {
		c = *n
	}
	if len(c.Facts) == 0 {
		c.Facts = json.RawMessage("{}")
	}
	if c.Classes == nil {
		c.Classes = []string{}
	}
	if c.Agents == nil {
		c.Agents = []string{}
	}

	return &c
}

// Regular expressions in identity, agent, class and fact filters are
// compiled once per filter rather than cached across requests: a filter
// carries a handful of short patterns, and not caching keeps
// request-supplied patterns from being retained in memory. Go's RE2
// engine matches in time linear in the subject, but also in the pattern
// in the worst case, so every match is charged against the budget.

// slashed reports whether s is written as /re/ and returns the pattern.
// A lone "/" counts, and yields an empty pattern that matches anything.
func slashed(s string) (string, bool) {
	if !strings.HasPrefix(s, "/") || !strings.HasSuffix(s, "/") {
		return "", false
	}

	return strings.TrimSuffix(strings.TrimPrefix(s, "/"), "/"), true
}

// matchIdentity selects the node if any entry matches its identity. A
// /re/ entry that does not match as a regular expression still matches an
// identity equal to the text between the slashes, as in Choria.
func matchIdentity(filters []string, identity string, b *budget) bool {
	for _, f := range filters {
		if re, ok := slashed(f); ok {
			if matched, _ := b.regexpMatch(re, []byte(identity)); matched {
				return true
			}
			f = re
		}

		if identity == f {
			return true
		}
	}

	return false
}

// matchAgents selects the node if every entry names, or as /re/ matches,
// one of its agents.
func matchAgents(filters []string, agents []string, b *budget) bool {
	for _, f := range filters {
		if re, ok := slashed(f); ok {
			if !anyMatches(re, agents, b) {
				return false
			}
			continue
		}

		if !slices.Contains(agents, f) {
			return false
		}
	}

	return true
}

// matchClasses selects the node if every entry names one of its classes
// or matches one as /re/. Patterns ignore case; a plain entry is
// lower-cased before it is compared, but the node's classes are not.
func matchClasses(filters []string, classes []string, b *budget) bool {
	for _, f := range filters {
		if re, ok := slashed(f); ok {
			if !anyMatches("(?i)"+re, classes, b) {
				return false
			}
			continue
		}

		if !slices.Contains(classes, strings.ToLower(f)) {
			return false
		}
	}

	return true
}

// anyMatches reports whether pattern matches any of subjects; an invalid
// pattern matches nothing.
func anyMatches(pattern string, subjects []string, b *budget) bool {
	for _, s := range subjects {
		matched, err := b.regexpMatch(pattern, []byte(s))
		if err != nil {
			return false
		}
		if matched {
			return true
		}
	}

	return false
}
