package policy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
)

// How a change to a policy file reaches the next request.
//
// Every Authorize stats the file it uses (as Choria's lookup does) and
// compares the result with what was recorded when the compiled content was
// read: size, modification and change times, inode and device. Any
// difference means the file is read again, and compiled again only if its
// bytes differ. The watcher (rego_watch.go) only compiles changed files
// early and logs their errors; nothing depends on its events arriving.
//
// A stat alone can miss a write: file times come from a coarse clock, so a
// same-sized write soon after the read may leave every field equal. So a
// file whose last change is less than regoSettle older than the moment its
// content was read is not trusted on its stat: each request reads it again
// and compares the bytes, until a read finds it settled. Any later write
// then moves its change time, which the stat sees (git's "racy clean" rule).
// The margin is far beyond a tick of that clock (at most 10 ms on Linux)
// and leaves room for a file server's clock a little off ours.
const regoSettle = 2 * time.Second

// maxPolicySize bounds how much of a policy file is read.
const maxPolicySize = 4 << 20

// v0Hint is how to fix a policy written in OPA's pre-1.0 syntax.
const v0Hint = "it is written in OPA's pre-1.0 (v0) syntax, which Choria no longer reads: " +
	"add `if` before each rule body (and `contains` to partial set rules; " +
	"`opa fmt --write --v0-v1 FILE` rewrites it), or set plugin.agent_host.rego_v0_compatible = true"

// regoFile is one policy path and the latest compiled form of its content.
type regoFile struct {
	// mu serialises compiles of this file; evaluations never take it.
	mu  sync.Mutex
	cur atomic.Pointer[compiledPolicy]
}

// compiledPolicy is one content of a policy file, compiled. It never
// changes once published; a new stamp or content is a new value.
type compiledPolicy struct {
	file string
	src  []byte
	// stamp is the file's stat when src was read; settled says that
	// stamp alone proves the content unchanged (see regoSettle).
	stamp   fileStamp
	settled bool
	// read is the order of the read that found src.
	read uint64

	query  rego.PreparedEvalQuery
	syntax ast.RegoVersion
	pkg    string
	// err is why src does not compile; kept, so a broken file is not
	// compiled again until it changes.
	err error
}

// current returns the compiled form of file, whose stat is fi, compiling
// it again if it changed.
func (r *Rego) current(file string, fi fs.FileInfo) (*compiledPolicy, error) {
	e := r.entry(file)
	if c := e.cur.Load(); c != nil && c.settled && c.stamp == stampOf(fi) {
		return c, nil
	}
	return r.reload(e, file)
}

func (r *Rego) entry(file string) *regoFile {
	if v, ok := r.files.Load(file); ok {
		return v.(*regoFile)
	}
	v, _ := r.files.LoadOrStore(file, &regoFile{})
	return v.(*regoFile)
}

// reload reads file and returns its compiled form: the published one when
// the bytes are the same (with the new stamp), else a new compile.
func (r *Rego) reload(e *regoFile, file string) (*compiledPolicy, error) {
	read := r.reads.Add(1)
	src, stamp, settled, err := readPolicy(file, r.settle)
	if err != nil {
		return nil, fmt.Errorf("reading rego policy %s: %w", file, err)
	}
	if c := e.cur.Load(); c != nil && bytes.Equal(c.src, src) {
		return e.restamp(c, stamp, settled, read), nil
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.cur.Load()
	switch {
	case c != nil && bytes.Equal(c.src, src):
		return e.restamp(c, stamp, settled, read), nil
	case c != nil && c.read > read:
		// A read that started after ours published while we waited.
		return c, nil
	}
	p := compilePolicy(file, src, r.o.V0Compatible)
	p.stamp, p.settled, p.read = stamp, settled, read
	e.cur.Store(p)
	// Logged once per content, whichever request or scan compiled it:
	// the log says when a file broke, the requests it denies return the
	// error each time.
	if p.err != nil {
		r.log.Error("Rego policy does not compile: the requests it decides are denied", "policy", file, "error", p.err)
	} else {
		r.log.Info("loaded Rego policy", "policy", file, "syntax", p.syntax.String())
	}
	return p, nil
}

// restamp publishes c with a newer stamp, unless a later read did.
func (e *regoFile) restamp(c *compiledPolicy, stamp fileStamp, settled bool, read uint64) *compiledPolicy {
	if c.read > read || (c.stamp == stamp && c.settled == settled) {
		return c
	}
	n := *c
	n.stamp, n.settled, n.read = stamp, settled, read
	e.cur.CompareAndSwap(c, &n)
	return &n
}

// readPolicy reads file and stats it after the read, so the stamp covers
// every write the content may show.
func readPolicy(file string, settle time.Duration) (src []byte, stamp fileStamp, settled bool, err error) {
	start := time.Now()
	f, _, err := openRegular(file)
	if err != nil {
		return nil, stamp, false, err
	}
	defer f.Close()
	src, err = io.ReadAll(io.LimitReader(f, maxPolicySize+1))
	if err != nil {
		return nil, stamp, false, err
	}
	if len(src) > maxPolicySize {
		return nil, stamp, false, fmt.Errorf("larger than %d bytes", maxPolicySize)
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, stamp, false, err
	}
	stamp = stampOf(fi)
	return src, stamp, stamp.changed().Before(start.Add(-settle)), nil
}

// compilePolicy parses and prepares the query for one policy file. The
// module is named after the file, so OPA's errors say file:row.
func compilePolicy(file string, src []byte, v0 bool) *compiledPolicy {
	p := &compiledPolicy{file: file, src: src}
	mod, syntax, text, err := parseRego(file, string(src), v0)
	if err != nil {
		p.err = &regoError{msg: fmt.Sprintf("rego policy %s does not compile: %s", file, text), kind: ErrPolicyInvalid, cause: err}
		return p
	}
	p.syntax, p.pkg = syntax, strings.TrimPrefix(mod.Package.Path.String(), "data.")
	p.query, err = prepareRego(mod, syntax)
	if err != nil {
		msg := fmt.Sprintf("rego policy %s does not compile: %s", file, regoErrorText(err)) + withheldHint(regoErrorText(err))
		if syntax == ast.RegoV1 && !v0 && compilesAsV0(file, string(src)) {
			msg += "; " + v0Hint
		}
		p.err = &regoError{msg: msg, kind: ErrPolicyInvalid, cause: err}
	}
	return p
}

func prepareRego(mod *ast.Module, syntax ast.RegoVersion) (rego.PreparedEvalQuery, error) {
	// Compiling waits on nothing, so no request's deadline is passed in:
	// a cancelled compile would be kept as the file's error.
	return rego.New(
		rego.Query(RegoQuery),
		rego.ParsedModule(mod),
		rego.SetRegoVersion(syntax),
		rego.Capabilities(regoCapabilities),
	).PrepareForEval(context.Background())
}

// regoWithheld are the built-ins a policy may not call: they reach outside
// the request (the network, the host's environment), so a policy could
// send a request's data away or stall every request on a slow endpoint.
// Choria leaves them on; here a policy that calls one does not compile,
// and denies, saying why.
var regoWithheld = []string{"http.send", "net.lookup_ip_addr", "opa.runtime"}

// regoCapabilities are OPA's own, less regoWithheld.
var regoCapabilities = func() *ast.Capabilities {
	c := ast.CapabilitiesForThisVersion()
	kept := make([]*ast.Builtin, 0, len(c.Builtins))
	for _, b := range c.Builtins {
		if !slices.Contains(regoWithheld, b.Name) {
			kept = append(kept, b)
		}
	}
	c.Builtins = kept
	return c
}()

// withheldHint says why a policy calling a withheld built-in is refused.
func withheldHint(text string) string {
	for _, name := range regoWithheld {
		if strings.Contains(text, "undefined function "+name) {
			return "; agent-host does not let policies call " + strings.Join(regoWithheld, ", ") + ": a decision is made from the request alone"
		}
	}
	return ""
}

// parseRego parses src as OPA v1, as Choria does; with v0, a file that
// does not parse as v1 is read as v0. On failure, text describes OPA's
// errors (err, v1's), and points a v0 file at v0Hint.
func parseRego(file, src string, v0 bool) (mod *ast.Module, syntax ast.RegoVersion, text string, err error) {
	mod, err = ast.ParseModuleWithOpts(file, src, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err == nil {
		return mod, ast.RegoV1, "", nil
	}
	mod0, err0 := ast.ParseModuleWithOpts(file, src, ast.ParserOptions{RegoVersion: ast.RegoV0})
	switch {
	case v0 && err0 == nil:
		return mod0, ast.RegoV0, "", nil
	case v0:
		text = regoErrorText(err)
		if t0 := regoErrorText(err0); t0 != text {
			text = fmt.Sprintf("%s (as OPA v1); %s (as OPA v0)", text, t0)
		}
	case err0 == nil:
		text = regoErrorText(err) + "; " + v0Hint
	default:
		text = regoErrorText(err)
	}
	return nil, ast.RegoV1, text, err
}

// compilesAsV0 reports whether src, which fails as v1, is a valid v0 policy.
func compilesAsV0(file, src string) bool {
	mod, err := ast.ParseModuleWithOpts(file, src, ast.ParserOptions{RegoVersion: ast.RegoV0})
	if err != nil {
		return false
	}
	_, err = prepareRego(mod, ast.RegoV0)
	return err == nil
}

// regoErrorText lists OPA's errors on one line, each with file:row.
func regoErrorText(err error) string {
	var errs ast.Errors
	if !errors.As(err, &errs) || len(errs) == 0 {
		return err.Error()
	}
	// Each error's own Error adds the source line and a caret on
	// lines of their own; the row is enough in a log line.
	lines := make([]string, len(errs))
	for i, e := range errs {
		lines[i] = fmt.Sprintf("%s: %s: %s", e.Location, e.Code, e.Message)
	}
	return strings.Join(lines, "; ")
}
