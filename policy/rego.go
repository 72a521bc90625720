// Rego authorizes as Choria's rego_policy provider does: a request is
// decided by one file, <agent>.rego or else default.rego, whose package
// io.choria.mcorpc.authpolicy must give a boolean allow for the input
// document RegoInput builds.
//
// Choria reads, parses and compiles that file for every request, which
// costs far more than evaluating it. Here each file is compiled once and
// its prepared query kept; a changed file is compiled again, so an edit
// still applies to the next request without a restart, and an edit that
// does not compile denies the requests that file decides (rego_load.go
// says how changes are noticed).

package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"
)

const (
	// RegoPackage is the package a policy file declares.
	RegoPackage = "io.choria.mcorpc.authpolicy"
	// RegoQuery is the query every request evaluates.
	RegoQuery = "data." + RegoPackage + ".allow"
)

var (
	// ErrNoPolicy means neither <agent>.rego nor default.rego exists.
	ErrNoPolicy = errors.New("policy: no Rego policy file")
	// ErrPolicyInvalid means the policy file does not parse or compile.
	ErrPolicyInvalid = errors.New("policy: the Rego policy does not compile")
	// ErrPolicyResult means allow was undefined, not a boolean, or not
	// a single value.
	ErrPolicyResult = errors.New("policy: the Rego policy gave no single boolean allow")
)

// RegoOptions configures the Rego authorizer.
type RegoOptions struct {
	// Dir holds <agent>.rego and default.rego. It need not exist yet:
	// until it does every request is denied.
	Dir string
	// Trace logs OPA's trace of every evaluation at info level
	// (plugin.regopolicy.tracing). A logger enabled for debug gets the
	// trace at debug level without it, as Choria does.
	Trace bool
	// V0Compatible also accepts policies in OPA's pre-1.0 syntax
	// (`allow { … }`): a file that does not parse as OPA v1 is read as
	// v0. Default (false): v1 only, as Choria, and a v0 policy's error
	// says how to convert it.
	V0Compatible bool
	// Logger receives policy loads, compile errors and traces.
	// Default: discard.
	Logger *slog.Logger
}

// Rego authorizes with Choria's rego_policy rules. Authorize is safe for
// concurrent use; evaluations share the prepared queries and take no lock.
type Rego struct {
	o   RegoOptions
	log *slog.Logger

	// files maps a policy path to its *regoFile.
	files sync.Map
	// reads orders reads of policy files, so that a slow read never
	// replaces what a later one found.
	reads atomic.Uint64
	// settle is regoSettle; tests shorten it.
	settle time.Duration
	// facts are the last facts seen, converted for OPA.
	facts regoFacts

	closeOnce sync.Once
	closed    chan struct{}
	watchDone chan struct{}
}

// NewRego returns the Rego authorizer. It compiles the policies already in
// Dir, logging those that do not compile, and watches Dir for changes
// until Close. Problems with policies are not returned: they deny the
// requests they concern.
func NewRego(o RegoOptions) *Rego { return newRego(o, regoSettle) }

func newRego(o RegoOptions, settle time.Duration) *Rego {
	o.Dir = filepath.Clean(o.Dir)
	r := &Rego{o: o, log: o.Logger, settle: settle, closed: make(chan struct{}), watchDone: make(chan struct{})}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.log = r.log.With("authorizer", "rego_policy")
	r.startWatch()
	return r
}

// Authorize decides the request with <Dir>/<agent>.rego, or
// <Dir>/default.rego when there is none. Every error denies: no policy
// file, one that does not compile, an evaluation error or an ended ctx,
// and an allow that is undefined or not a boolean. Decision.Policy names
// the file whenever one was found.
func (r *Rego) Authorize(ctx context.Context, in *Input) (Decision, error) {
	if in == nil {
		return deny("", errors.New("policy: no request to authorize"))
	}
	p, file, err := r.policyFor(in.Agent)
	if err != nil {
		return deny(file, err)
	}
	if p.err != nil {
		return deny(file, p.err)
	}
	if err := ctx.Err(); err != nil {
		return deny(file, fmt.Errorf("could not evaluate rego policy %s: %w", file, err))
	}
	doc, err := r.inputValue(in)
	if doc == nil {
		return deny(file, fmt.Errorf("could not make the input of rego policy %s: %w", file, err))
	}
	if err != nil {
		// Choria logs these and goes on with an empty object.
		r.log.Error("part of the request cannot be given to the Rego policy", "agent", in.Agent, "error", err)
	}
	allowed, err := r.eval(ctx, p, doc)
	if err != nil {
		return deny(file, err)
	}
	if !allowed {
		return Decision{Reason: "denied by " + file, Policy: file}, nil
	}
	return Decision{Allowed: true, Reason: "allowed by " + file, Policy: file}, nil
}

func deny(file string, err error) (Decision, error) {
	return Decision{Reason: err.Error(), Policy: file}, err
}

// Reload compiles every changed policy in Dir now and forgets removed
// ones, as the watcher does after an event.
func (r *Rego) Reload() { r.scan() }

// Close stops watching Dir. Authorize still works after Close: it notices
// changed files on its own.
func (r *Rego) Close() error {
	r.closeOnce.Do(func() { close(r.closed) })
	<-r.watchDone
	return nil
}

// RegoInput returns the input document of Choria's Rego authorizer for in,
// with the values OPA sees: data and facts are objects, classes and
// agents arrays (empty rather than null), time is the request time as Go
// encodes it in JSON. Encoded with encoding/json it is exactly the input
// policies are given. The document is complete even when the error is not
// nil: as in Choria, data or facts that do not decode as a JSON object
// become {}, and the error says which.
func RegoInput(in *Input) (map[string]any, error) {
	data, errData := jsonObject(in.Data)
	if errData != nil {
		errData = fmt.Errorf("decoding the request data: %w", errData)
	}
	facts, errFacts := jsonObject(in.Facts)
	if errFacts != nil {
		errFacts = fmt.Errorf("decoding the facts: %w", errFacts)
	}
	return map[string]any{
		"agent":          in.Agent,
		"action":         in.Action,
		"callerid":       in.CallerID,
		"collective":     in.Collective,
		"data":           data,
		"ttl":            in.TTL,
		"time":           in.Time,
		"facts":          facts,
		"classes":        orEmpty(in.Classes),
		"agents":         orEmpty(in.Agents),
		"provision_mode": in.ProvisionMode,
	}, errors.Join(errData, errFacts)
}

// jsonObject decodes raw as Choria does, into a map that stays empty when
// raw is not an object. Choria's facts are never empty (it sends {}
// without a facts file), so empty raw is {} without complaint.
func jsonObject(raw json.RawMessage) (map[string]any, error) {
	m := map[string]any{}
	if len(raw) == 0 {
		return m, nil
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return map[string]any{}, err
	}
	if m == nil { // JSON null; OPA would see {} for the nil map too
		m = map[string]any{}
	}
	return m, nil
}

// orEmpty keeps a nil list from encoding as null: OPA turns a nil
// []string into [], and Choria always sends a list.
func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// policyFor finds the file that decides agent's requests, as Choria's
// lookup does (a path that exists but cannot be read is used, and fails),
// and returns its current compiled form.
func (r *Rego) policyFor(agent string) (*compiledPolicy, string, error) {
	if agent == "" || agent == "." || agent == ".." || strings.ContainsAny(agent, `/\`) {
		return nil, "", fmt.Errorf("policy: invalid agent name %q", agent)
	}
	file := filepath.Join(r.o.Dir, agent+".rego")
	fi, err := os.Stat(file)
	if errors.Is(err, fs.ErrNotExist) {
		file = filepath.Join(r.o.Dir, "default.rego")
		fi, err = os.Stat(file)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, "", &regoError{
				msg:  fmt.Sprintf("no policy %s found for %s in %s", file, agent, r.o.Dir),
				kind: ErrNoPolicy,
			}
		}
	}
	if err != nil {
		return nil, file, fmt.Errorf("reading rego policy %s: %w", file, err)
	}
	p, err := r.current(file, fi)
	return p, file, err
}

// eval runs the prepared query, with OPA's trace when asked for.
func (r *Rego) eval(ctx context.Context, p *compiledPolicy, doc ast.Value) (bool, error) {
	level := slog.LevelDebug
	if r.o.Trace {
		level = slog.LevelInfo
	}
	tracing := r.log.Enabled(ctx, level)

	opts := []rego.EvalOption{rego.EvalParsedInput(doc)}
	var buf *topdown.BufferTracer
	if tracing {
		buf = topdown.NewBufferTracer()
		opts = append(opts, rego.EvalQueryTracer(buf))
	}
	rs, err := p.query.Eval(ctx, opts...)
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		err = fmt.Errorf("could not evaluate rego policy %s: %w", p.file, err)
	}
	var allowed bool
	if err == nil {
		allowed, err = allowFrom(rs, p)
	}
	if tracing {
		var sb strings.Builder
		topdown.PrettyTrace(&sb, *buf)
		r.log.Log(ctx, level, "Rego policy evaluation", "policy", p.file,
			"allowed", allowed, "error", err, "trace", sb.String())
		// The input holds the request's data, which may be secret: only
		// at debug, as Choria logs it.
		r.log.Debug("Rego policy input", "policy", p.file, "input", doc)
	}
	return allowed, err
}

// allowFrom reads the decision out of a result set as Choria does: exactly
// one result, and a boolean.
func allowFrom(rs rego.ResultSet, p *compiledPolicy) (bool, error) {
	if len(rs) != 1 || len(rs[0].Expressions) != 1 {
		msg := fmt.Sprintf("invalid result from rego policy %s: expected 1 received %d", p.file, len(rs))
		if len(rs) == 0 {
			msg += ": allow is undefined"
			if p.pkg != RegoPackage {
				msg += fmt.Sprintf(" (the policy's package is %s, and %s is queried)", p.pkg, RegoQuery)
			} else {
				msg += " (declare `default allow := false`)"
			}
		}
		return false, &regoError{msg: msg, kind: ErrPolicyResult}
	}
	v := rs[0].Expressions[0].Value
	allowed, ok := v.(bool)
	if !ok {
		got, _ := json.Marshal(v)
		return false, &regoError{
			msg:  fmt.Sprintf("did not receive a boolean for 'allow' from rego evaluation of %s: received %s", p.file, got),
			kind: ErrPolicyResult,
		}
	}
	return allowed, nil
}

// regoError keeps Choria's wording while matching a sentinel with
// errors.Is, and keeps OPA's error when there is one.
type regoError struct {
	msg   string
	kind  error
	cause error
}

func (e *regoError) Error() string { return e.msg }

func (e *regoError) Unwrap() []error {
	if e.cause == nil {
		return []error{e.kind}
	}
	return []error{e.kind, e.cause}
}

// Interface guards
var (
	_ Authorizer = (*Rego)(nil)
	_ Closer     = (*Rego)(nil)
	_ Reloader   = (*Rego)(nil)
)
