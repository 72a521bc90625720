package policy

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/agent-host/agent-host/protocol"
	"github.com/agent-host/agent-host/protocol/filter"
)

// The actionpolicy grammar, as Choria's parser reads it. A line is a
// comment when it starts with # or holds only white space; anything that
// is neither a comment, a default nor a rule is skipped with a warning.
var (
	// policy default allow|deny: any word but "allow" (case matters)
	// denies, and whatever follows the word is ignored.
	defaultLine = regexp.MustCompile(`^policy\s+default\s+(\w+)`)
	// allow|deny, then callers, actions, facts and optionally classes,
	// separated by runs of TABs. With more than four columns the last is
	// the classes and those between it and the facts are ignored; a
	// trailing TAB becomes part of the column before it.
	ruleLine = regexp.MustCompile(`^(allow|deny)\t+(.+?)\t+(.+?)\t+(.+?)(?:\t+(.+?))*$`)
	// A group's name, first on its line of the groups file.
	groupName = regexp.MustCompile(`^[\w.\-]+$`)
)

// policyFile is a policy file as parsed: its rules in order, the last
// `policy default` line and, when reading stopped early, why.
type policyFile struct {
	path  string
	rules []rule
	// defaultAllow is the verdict of the last `policy default` line, nil
	// without one. Only the last counts: the first matching rule decides
	// before any default is looked at.
	defaultAllow *bool
	// err ends the file where Choria's line reader stops (a line longer
	// than 64 KiB): a request no earlier rule decides is denied with it.
	err error
}

// rule is one allow or deny line. Each column is a space-separated list,
// or * for anything; only the whole column being * means anything.
type rule struct {
	line    int
	allow   bool
	callers callers
	// anyAction, or one of actions.
	anyAction bool
	actions   []string
	// facts and classes, all of which must hold; nil for *.
	facts   []protocol.FactFilter
	classes []string
	// err is a facts or classes column that cannot be evaluated: Choria
	// finds it only when caller and action match, and then denies.
	err error
}

// callers is a callers column: caller IDs, /regular expressions/ and
// group names.
type callers struct {
	any    bool
	tokens []callerToken
}

type callerToken struct {
	text string
	re   *regexp.Regexp
	// bad is a token that starts with / but is not a valid /regexp/:
	// reaching it ends the search without a match, as in Choria.
	bad bool
}

// groups maps a group name to its members.
type groups map[string][]string

func parsePolicy(path string, data []byte, log *slog.Logger) *policyFile {
	p := &policyFile{path: path}
	log = log.With("policy", path)

	sc := bufio.NewScanner(bytes.NewReader(data))
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()

		if isComment(line) {
			continue
		}
		if m := defaultLine.FindStringSubmatch(line); m != nil {
			allow := m[1] == "allow"
			p.defaultAllow = &allow
			continue
		}
		if m := ruleLine.FindStringSubmatch(line); m != nil {
			if r, ok := parseRule(m, n, log); ok {
				p.rules = append(p.rules, r)
			}
			continue
		}
		log.Warn("skipping a line that is neither a rule nor a policy default (are its columns separated by TABs?)", "line", n, "text", line)
	}

	// Like Choria, the file is read through a bufio.Scanner with its
	// default limit, so a line beyond 64 KiB ends it with an error.
	if err := sc.Err(); err != nil {
		p.err = fmt.Errorf("reading %s after line %d: %w", path, n, err)
		log.Error("cannot read the policy beyond a line: requests no earlier line decides will be denied", "line", n+1, "error", err)
	}

	return p
}

// parseRule reads a line ruleLine matched; ok is false for a line to skip.
func parseRule(m []string, n int, log *slog.Logger) (r rule, ok bool) {
	verb, callerCol, actionCol, factCol, classCol := m[1], m[2], m[3], m[4], m[5]

	// Choria checks only the facts and classes columns for compound
	// statements, and skips the line rather than deny.
	if isCompound(factCol) || isCompound(classCol) {
		log.Warn("skipping a line with a compound statement (!, not, and, or, parentheses), which actionpolicy does not support", "line", n, "text", m[0])
		return rule{}, false
	}

	r = rule{line: n, allow: verb == "allow", callers: parseCallers(callerCol, n, log)}

	if actionCol == "*" {
		r.anyAction = true
	} else {
		r.actions = strings.Split(actionCol, " ")
	}

	if factCol != "*" {
		for _, tok := range strings.Split(factCol, " ") {
			ff, err := filter.ParseFactFilter(tok)
			if err != nil {
				r.err = fmt.Errorf("%w: line %d: invalid fact matcher: %w", ErrInvalidPolicy, n, err)
				break
			}
			r.facts = append(r.facts, ff)
		}
	}

	// The facts column's error is the one Choria reports when both have one.
	if r.err == nil {
		switch classCol {
		case "*":
		case "":
			r.err = fmt.Errorf("%w: line %d has no classes column (write * for any classes)", ErrInvalidPolicy, n)
		default:
			r.classes = strings.Split(classCol, " ")
			for _, c := range r.classes {
				if looksLikeFact(c) {
					r.err = fmt.Errorf("%w: line %d: fact %q found where a class was expected", ErrInvalidPolicy, n, c)
					break
				}
			}
		}
	}

	if r.err != nil {
		log.Warn("this line denies every request whose caller and action it matches", "line", n, "error", r.err)
	}

	return r, true
}

func parseCallers(col string, n int, log *slog.Logger) callers {
	if col == "*" {
		return callers{any: true}
	}

	var c callers
	for _, tok := range strings.Split(col, " ") {
		t := callerToken{text: tok}
		if strings.HasPrefix(tok, "/") {
			if len(tok) < 3 || !strings.HasSuffix(tok, "/") {
				t.bad = true
				log.Warn("invalid caller matcher: neither a caller ID nor a /regular expression/; the line matches no caller not listed before it", "line", n, "caller", tok)
			} else if re, err := regexp.Compile(tok[1 : len(tok)-1]); err != nil {
				t.bad = true
				log.Warn("cannot compile a caller regular expression; the line matches no caller not listed before it", "line", n, "caller", tok, "error", err)
			} else {
				t.re = re
			}
		}
		c.tokens = append(c.tokens, t)
	}

	return c
}

// isComment is true for a line starting with # or holding only the
// characters of RE2's \s.
func isComment(line string) bool {
	return strings.HasPrefix(line, "#") || strings.Trim(line, "\t\n\f\r ") == ""
}

// isCompound reports whether any space-separated token of a column is
// part of a compound statement: it starts with !, is not, and or or, or
// holds parentheses around something.
func isCompound(col string) bool {
	for _, tok := range strings.Split(col, " ") {
		if strings.HasPrefix(tok, "!") || tok == "not" || tok == "and" || tok == "or" {
			return true
		}
		if open := strings.IndexByte(tok, '('); open >= 0 && strings.LastIndexByte(tok, ')') > open+1 {
			return true
		}
	}
	return false
}

// looksLikeFact reports whether a class has <, > or = after its first
// and before its last character, which Choria takes for a misplaced fact.
func looksLikeFact(class string) bool {
	return len(class) >= 3 && strings.ContainsAny(class[1:len(class)-1], "<>=")
}

// decide returns the verdict of the first rule matching in, else the
// file's default.
func (p *policyFile) decide(m *filter.Matcher, in *Input, grp groups, allowUnconfigured bool, log *slog.Logger) (Decision, error) {
	name := filepath.Base(p.path)

	for i := range p.rules {
		r := &p.rules[i]
		ok, err := r.matches(m, in, grp)
		if err != nil {
			return Decision{Policy: p.path}, fmt.Errorf("evaluating %s: %w", p.path, err)
		}
		if !ok {
			continue
		}

		log.Debug("policy line matches the request", "policy", p.path, "line", r.line, "allow", r.allow)
		if r.allow {
			return Decision{Allowed: true, Reason: "Allowing based on explicit 'allow' policy in " + name, Policy: p.path}, nil
		}
		return Decision{Reason: "Denying based on explicit 'deny' policy in " + name, Policy: p.path}, nil
	}

	if p.err != nil {
		return Decision{Policy: p.path}, p.err
	}

	allow := allowUnconfigured
	if p.defaultAllow != nil {
		allow = *p.defaultAllow
	}
	if allow {
		return Decision{Allowed: true, Reason: "Allowing based on default policy in " + name, Policy: p.path}, nil
	}
	return Decision{Reason: "Denying based on default policy in " + name, Policy: p.path}, nil
}

// matches checks the columns in Choria's order: callers and actions
// first, so that a broken facts or classes column only denies requests
// it would otherwise have decided.
//
// Choria reads the facts and classes files itself; here they are the
// host's, in Input. Choria's error for a classes column when no classes
// file is configured cannot arise: no classes match nothing.
func (r *rule) matches(m *filter.Matcher, in *Input, grp groups) (bool, error) {
	if !r.callers.match(in.CallerID, grp) {
		return false, nil
	}
	if !r.anyAction && !slices.Contains(r.actions, in.Action) {
		return false, nil
	}
	if r.err != nil {
		return false, r.err
	}

	// The same fact and class matching as a request's filter; with both
	// columns * the filter is empty and matches.
	ok, err := m.Match(&protocol.Filter{Fact: r.facts, Class: r.classes}, &filter.Node{Facts: in.Facts, Classes: in.Classes})
	if err != nil {
		return false, fmt.Errorf("matching the facts and classes of line %d: %w", r.line, err)
	}
	return ok, nil
}

// match checks group membership first, for every token, then each token
// in order as a caller ID or /regexp/, stopping at a bad one.
func (c *callers) match(id string, grp groups) bool {
	if c.any {
		return true
	}

	for _, t := range c.tokens {
		if slices.Contains(grp[t.text], id) {
			return true
		}
	}

	for _, t := range c.tokens {
		switch {
		case t.text == id:
			return true
		case t.bad:
			return false
		case t.re != nil && t.re.MatchString(id):
			return true
		}
	}

	return false
}

func parseGroups(path string, data []byte, log *slog.Logger) groups {
	g := groups{}
	log = log.With("groups", path)

	sc := bufio.NewScanner(bytes.NewReader(data))
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if isComment(line) {
			continue
		}

		// Members are separated by single spaces, as in Choria: a TAB
		// makes the line one word, a group without members.
		parts := strings.Split(line, " ")
		if len(parts) < 2 {
			log.Warn("skipping a group line without members (name and members are separated by spaces)", "line", n, "text", line)
			continue
		}
		if !groupName.MatchString(parts[0]) {
			log.Warn("skipping a group with an invalid name (letters, digits, _ . and - only)", "line", n, "group", parts[0])
			continue
		}
		// A later line for the same group replaces the earlier one.
		g[parts[0]] = parts[1:]
	}

	// Like Choria, keep the groups read before the line that stopped it.
	if err := sc.Err(); err != nil {
		log.Error("cannot read the groups file beyond a line: groups after it are unknown", "line", n+1, "error", err)
	}

	return g
}
