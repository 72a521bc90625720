package policy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/agent-host/agent-host/protocol/filter"
)

// Errors of the actionpolicy authorizer; each denies the request.
var (
	// ErrNoPolicyFile: neither <agent>.policy nor, when enabled, the
	// default policy exists.
	ErrNoPolicyFile = errors.New("policy: no actionpolicy file")
	// ErrPolicyFileTooLarge: a policy or groups file is larger than
	// MaxActionPolicyBytes.
	ErrPolicyFileTooLarge = errors.New("policy: actionpolicy file too large")
	// ErrInvalidPolicy: a policy line the request reached cannot be
	// evaluated (a bad fact filter, a missing classes field...). Choria
	// denies the request then rather than skipping the line.
	ErrInvalidPolicy = errors.New("policy: invalid actionpolicy line")
)

// MaxActionPolicyBytes bounds a policy or groups file. Real files are a
// few lines; a larger one denies every request it would decide.
const MaxActionPolicyBytes = 1 << 20

// ActionPolicyOptions configures the actionpolicy authorizer: Choria's
// plugin.actionpolicy.* settings.
type ActionPolicyOptions struct {
	// Dir holds <agent>.policy, the default policy and the groups file.
	Dir string
	// EnableDefault is plugin.actionpolicy.enable_default: without
	// <agent>.policy, use <DefaultName>.policy.
	EnableDefault bool
	// DefaultName is plugin.actionpolicy.default_name; empty means
	// "default".
	DefaultName string
	// AllowUnconfigured is plugin.actionpolicy.allow_unconfigured: the
	// verdict of a policy file that has no `policy default` line and no
	// line matching the request. Despite its name it does not allow
	// agents without a policy file: Choria denies those whatever it says.
	AllowUnconfigured bool
	// Logger receives problems found in policy and groups files, once
	// each time a file is read. Nil discards them.
	Logger *slog.Logger
}

// ActionPolicy authorizes with MCollective's actionpolicy files, as
// Choria's action_policy provider does. Files are read when first needed
// and again whenever they change on disk, so an edit applies to the next
// request. It is safe for concurrent use.
type ActionPolicy struct {
	o        ActionPolicyOptions
	log      *slog.Logger
	matcher  *filter.Matcher
	policies *fileCache[*policyFile]
	groups   *fileCache[groups]
}

// NewActionPolicy returns the actionpolicy authorizer. It reads nothing
// yet: problems with the files are found, logged and denied on the
// requests they concern.
func NewActionPolicy(o ActionPolicyOptions) *ActionPolicy {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("authorizer", "actionpolicy")

	return &ActionPolicy{
		o:       o,
		log:     log,
		matcher: filter.NewMatcher(filter.WithLogger(log)),
		policies: newFileCache(func(path string, data []byte) *policyFile {
			return parsePolicy(path, data, log)
		}),
		groups: newFileCache(func(path string, data []byte) groups {
			return parseGroups(path, data, log)
		}),
	}
}

// Reload forgets every parsed file, so the next request reads its
// policy and groups files again even where their sizes and times did
// not change.
func (a *ActionPolicy) Reload() {
	a.policies.clear()
	a.groups.clear()
}

// Authorize decides in by the first line of the agent's policy file that
// matches it, else by the file's default. Every error denies.
func (a *ActionPolicy) Authorize(ctx context.Context, in *Input) (Decision, error) {
	if err := ctx.Err(); err != nil {
		return Decision{}, fmt.Errorf("authorizing with actionpolicy: %w", err)
	}
	if in == nil || in.Agent == "" {
		return Decision{}, errors.New("authorizing with actionpolicy: the request names no agent")
	}
	// Agents come from the host's DDLs, but a name is still never allowed
	// to lead out of the policies directory.
	if strings.ContainsAny(in.Agent, `/\`+"\x00") {
		return Decision{}, fmt.Errorf("authorizing with actionpolicy: agent name %q cannot name a policy file", in.Agent)
	}

	pol, err := a.lookup(in.Agent)
	if err != nil {
		return Decision{}, err
	}

	// Choria reads the groups file for every request and, if that fails,
	// goes on without groups; only a file too large to read denies here.
	grp, _, err := a.groups.load(filepath.Join(a.o.Dir, "groups"))
	if errors.Is(err, ErrPolicyFileTooLarge) {
		return Decision{Policy: pol.path}, fmt.Errorf("reading actionpolicy groups: %w", err)
	}
	if err != nil {
		a.log.Error("cannot read the groups file: going on without groups", "error", err)
	}

	d, err := pol.decide(a.matcher, in, grp, a.o.AllowUnconfigured, a.log)
	if err != nil {
		return d, fmt.Errorf("authorizing %s#%s for %s: %w", in.Agent, in.Action, in.CallerID, err)
	}
	return d, nil
}

// lookup finds and reads the policy for agent as Choria does: <agent>.policy,
// else, when enabled, the default policy.
//
// allow_unconfigured plays no part here: Choria also has an "allow
// unconfigured agent" branch for when no file is found, but its lookup
// returns an error first, so that branch never runs and a missing file
// always denies.
func (a *ActionPolicy) lookup(agent string) (*policyFile, error) {
	names := []string{agent}
	if a.o.EnableDefault {
		names = append(names, a.defaultName())
	}

	for _, name := range names {
		path := filepath.Join(a.o.Dir, name+".policy")
		pol, found, err := a.policies.load(path)
		if err != nil {
			return nil, fmt.Errorf("reading actionpolicy for %s: %w", agent, err)
		}
		if found {
			return pol, nil
		}
	}

	return nil, fmt.Errorf("%w: no policy found for %s in %s (%s)", ErrNoPolicyFile, agent, a.o.Dir, a.wanted(agent))
}

// wanted says which files would have been read, for the error.
func (a *ActionPolicy) wanted(agent string) string {
	if !a.o.EnableDefault {
		return agent + ".policy; plugin.actionpolicy.enable_default is off"
	}
	return agent + ".policy or " + a.defaultName() + ".policy"
}

func (a *ActionPolicy) defaultName() string {
	if a.o.DefaultName == "" {
		return "default"
	}
	return a.o.DefaultName
}

// racyWindow is how long after its last change a file is read again on
// every request rather than trusted by its size and mtime: an edit made
// within one tick of the filesystem's clock, keeping the size, would
// otherwise go unseen (git's "racy clean" problem).
const racyWindow = 2 * time.Second

// fileCache keeps what parse made of each file, keyed by path, until a
// stat shows the file changed. Absent files are not kept, so it holds at
// most the files of the policies directory.
type fileCache[T any] struct {
	parse func(path string, data []byte) T
	// settle is racyWindow, but in tests.
	settle time.Duration

	mu      sync.Mutex
	entries map[string]cacheEntry[T]
}

type cacheEntry[T any] struct {
	stamp fileStamp
	value T
}

func newFileCache[T any](parse func(path string, data []byte) T) *fileCache[T] {
	return &fileCache[T]{parse: parse, entries: map[string]cacheEntry[T]{}, settle: racyWindow}
}

func (c *fileCache[T]) clear() {
	c.mu.Lock()
	clear(c.entries)
	c.mu.Unlock()
}

// load returns the parsed file at path; found is false, with no error,
// when it does not exist. As in Choria, any other failure to stat it is
// an error rather than absence.
func (c *fileCache[T]) load(path string) (value T, found bool, err error) {
	info, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		c.mu.Lock()
		delete(c.entries, path)
		c.mu.Unlock()
		return value, false, nil
	}
	if err != nil {
		return value, true, err
	}

	c.mu.Lock()
	e, ok := c.entries[path]
	c.mu.Unlock()
	if ok && e.stamp == stampOf(info) {
		return e.value, true, nil
	}

	// Two requests may both read a changed file; parsed values are never
	// modified, so whichever is stored last is as good as the other.
	data, info, err := readBounded(path)
	if err != nil {
		return value, true, err
	}
	value = c.parse(path, data)

	c.mu.Lock()
	// The change time too: an edit that keeps the size and sets the
	// modification time back (cp -p, rsync --inplace) still changes it.
	if st := stampOf(info); time.Since(st.changed()) > c.settle {
		c.entries[path] = cacheEntry[T]{stamp: st, value: value}
	} else {
		delete(c.entries, path)
	}
	c.mu.Unlock()

	return value, true, nil
}

// readBounded reads a regular file of at most MaxActionPolicyBytes. The
// info returned is from before the read, so a change during it shows as
// a change at the next stat.
func readBounded(path string) ([]byte, fs.FileInfo, error) {
	f, info, err := openRegular(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()

	if info.Size() > MaxActionPolicyBytes {
		return nil, nil, fmt.Errorf("%w: %s has %d bytes, more than %d", ErrPolicyFileTooLarge, path, info.Size(), MaxActionPolicyBytes)
	}

	data, err := io.ReadAll(io.LimitReader(f, MaxActionPolicyBytes+1))
	if err != nil {
		return nil, nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if len(data) > MaxActionPolicyBytes {
		return nil, nil, fmt.Errorf("%w: %s grew beyond %d bytes while being read", ErrPolicyFileTooLarge, path, MaxActionPolicyBytes)
	}

	return data, info, nil
}

// Interface guards
var (
	_ Authorizer = (*ActionPolicy)(nil)
	_ Reloader   = (*ActionPolicy)(nil)
)
