package runner

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/agent-host/agent-host/protocol"
	"github.com/agent-host/agent-host/protocol/ddl"
)

// Layout says how an agent's files are arranged on disk; it describes the
// place its Executable points to.
type Layout string

const (
	// LayoutFlat is X.json with the executable X beside it.
	LayoutFlat Layout = "flat"
	// LayoutDirectory is X/X.json with the executable X/X.
	LayoutDirectory Layout = "directory"
	// LayoutMultiarch is X.json or X/X.json with one executable per
	// platform in a directory X beside the DDL: X/X-<goos>_<goarch>.
	// Choria falls back to it whenever no flat executable exists, so an
	// agent whose executable is missing reports this layout too.
	LayoutMultiarch Layout = "multiarch"
)

// Agent is an external agent found on disk. The catalog never changes an
// Agent it has published: a reload publishes a new value, so readers may
// keep and use one without locking.
type Agent struct {
	// Name is metadata.name from the DDL, the name clients call.
	Name string
	// DDL is the parsed DDL, prepared for request validation.
	DDL *ddl.DDL
	// DDLPath is the file the DDL was read from.
	DDLPath string
	// Executable is <dir of DDL>/<name> when that is a regular file, and
	// otherwise <dir of DDL>/<name>/<name>-<goos>_<goarch>, Choria's rule.
	// It may not exist; requests then fail with ErrNoExecutable.
	Executable string
	// Layout says which of the supported arrangements Executable follows.
	Layout Layout
	// Active is the answer of the activation check run when this value
	// was published; an inactive agent must not be served.
	Active bool
	// ActivationError is why the activation check failed, if it did.
	ActivationError error
	// WorkerVersions are the versions of agent-host's worker protocol the
	// agent said, in its activation check, it speaks (PROTOCOL.md); none
	// for an agent that only runs once per request.
	WorkerVersions []int
	// PluginVersions are the versions of agent-host's go-plugin service
	// the agent said, in its activation check, it serves.
	PluginVersions []int

	hash     [sha256.Size]byte
	exeFound bool
	exeStamp exeStamp
}

// Activation is an agent's answer to its activation check.
type Activation struct {
	// Active says the agent is to be served on this node.
	Active bool
	// WorkerVersions are the worker protocol versions the agent speaks.
	WorkerVersions []int
	// PluginVersions are the go-plugin service versions it serves.
	PluginVersions []int
}

// exeStamp tells one executable file from another, so that a new build
// of an agent is noticed.
type exeStamp struct {
	mtime time.Time
	size  int64
	inode uint64
}

func stampOf(fi os.FileInfo) exeStamp {
	s := exeStamp{mtime: fi.ModTime(), size: fi.Size()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.inode = st.Ino
	}
	return s
}

// CatalogConfig says where agents live and how they are admitted.
type CatalogConfig struct {
	// Libdirs are plugin.choria.agent_provider.mcorpc.libdir entries;
	// agents are looked for in <libdir>/mcollective/agent. Default: none.
	Libdirs []string
	// PluginDirs are directories that hold agents themselves, in the same
	// layouts (the --plugins flag). They are searched after Libdirs, in
	// order. Default: none.
	PluginDirs []string
	// Activate decides whether an agent should be served on this node. It
	// runs once each time an agent is added or updated, never per request.
	// Default (nil): every agent is active.
	Activate func(ctx context.Context, a *Agent) (Activation, error)
	// ActivateTimeout bounds one Activate call. Default: 10 s.
	ActivateTimeout time.Duration
	// Settle is how long a DDL must stay unchanged before Watch loads it,
	// so half-written files are never loaded. A DDL whose modification
	// time is already that old loads at once, so moving a finished agent
	// into place is picked up immediately. Choria waits 5 s. Default: 2 s.
	Settle time.Duration
	// Rescan is how often Watch re-reads every agent directory in case a
	// file-system event was missed. Default: 30 s.
	Rescan time.Duration
}

const (
	defaultActivateTimeout = 10 * time.Second
	defaultSettle          = 2 * time.Second
	defaultRescan          = 30 * time.Second
	// maxDDLSize bounds how much of a DDL file is read.
	maxDDLSize = 16 << 20
)

// deniedAgents are the names of agents Choria provides itself; an external
// agent may not replace them.
var deniedAgents = []string{"rpcutil", "choria_util", "choria_provision", "choria_registry", "discovery", "scout"}

// ErrCatalogWatching means Watch was called while another Watch on the
// same catalog is still running.
var ErrCatalogWatching = errors.New("runner: the catalog is already being watched")

// Change lists what one reload did, each list sorted by name. Added and
// Updated hold the new values; Removed holds the last published ones.
type Change struct {
	Added, Updated, Removed []*Agent
}

// Empty reports whether the change did nothing.
func (c Change) Empty() bool {
	return len(c.Added) == 0 && len(c.Updated) == 0 && len(c.Removed) == 0
}

// Option configures a Catalog.
type Option func(*Catalog)

// WithLogger sets the catalog's logger. Default: discard.
func WithLogger(l *slog.Logger) Option {
	return func(c *Catalog) {
		if l != nil {
			c.log = l
		}
	}
}

// Catalog finds external agents on disk the way Choria does, keeps them
// current as files change (Watch), and answers which agents exist.
type Catalog struct {
	cfg CatalogConfig
	log *slog.Logger
	now func() time.Time

	mu     sync.RWMutex
	agents map[string]*Agent

	// recMu serialises reloads; the fields below belong to it.
	recMu     sync.Mutex
	files     map[string]*ddlFile
	dupWarned map[string]string
	dirErrs   map[string]string
	watching  atomic.Bool
}

// NewCatalog returns an empty catalog; call Load, then Watch.
func NewCatalog(cfg CatalogConfig, opts ...Option) *Catalog {
	if cfg.ActivateTimeout <= 0 {
		cfg.ActivateTimeout = defaultActivateTimeout
	}
	if cfg.Settle <= 0 {
		cfg.Settle = defaultSettle
	}
	if cfg.Rescan <= 0 {
		cfg.Rescan = defaultRescan
	}
	c := &Catalog{
		cfg:       cfg,
		log:       slog.New(slog.DiscardHandler),
		now:       time.Now,
		agents:    map[string]*Agent{},
		files:     map[string]*ddlFile{},
		dupWarned: map[string]string{},
		dirErrs:   map[string]string{},
	}
	for _, o := range opts {
		if o != nil {
			o(c)
		}
	}
	return c
}

// Load scans the agent directories and loads every acceptable DDL that
// parses, without waiting for files to settle. Problems with single
// agents or directories are logged, not returned; the error is non-nil
// only when ctx ended, and then nothing was published.
func (c *Catalog) Load(ctx context.Context) error {
	_, err := c.reload(ctx, true, nil)
	return err
}

// Rescan reconciles the catalog with the disk now, as Watch does when
// files change, but without waiting for changed DDLs to settle: it is
// for an operator who says the files are in place (the host's SIGHUP).
// It returns what changed, already published; Watch does not report
// the same change again. apply, when not nil, is called with a change
// before any other reload can publish the next, as Watch calls onChange,
// so that whoever follows the catalog sees its changes in order. The
// error is non-nil only when ctx ended.
func (c *Catalog) Rescan(ctx context.Context, apply func(Change)) (Change, error) {
	res, err := c.reload(ctx, true, apply)
	return res.change, err
}

// Agents returns every known agent, active or not, sorted by name.
func (c *Catalog) Agents() []*Agent {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]*Agent, 0, len(c.agents))
	for _, a := range c.agents {
		out = append(out, a)
	}
	slices.SortFunc(out, func(x, y *Agent) int { return strings.Compare(x.Name, y.Name) })
	return out
}

// Agent returns the named agent, active or not.
func (c *Catalog) Agent(name string) (*Agent, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	a, ok := c.agents[name]
	return a, ok
}

// ddlFile is what the catalog remembers about one DDL path between reloads.
type ddlFile struct {
	// hash is the content last read and since when it has been seen.
	hash  [sha256.Size]byte
	since time.Time
	// evaluated is set once that content has been parsed and judged.
	evaluated bool
	// use is the latest content of this path that was accepted. It
	// survives a later version that does not parse, so a broken edit
	// keeps the previous agent rather than removing it.
	use     *accepted
	readErr string
}

type accepted struct {
	ddl  *ddl.DDL
	hash [sha256.Size]byte
}

// candidate is a DDL found in an agent directory.
type candidate struct {
	path string
	// base is the file name without .json, or the directory name; the
	// deny list applies to it, as in Choria.
	base string
	// inSubdir is set for the D/D.json form.
	inSubdir bool
}

// reloadResult is what Watch needs from a reload.
type reloadResult struct {
	change Change
	// recheck is when a DDL that has not settled yet should be looked at
	// again; zero when none is waiting.
	recheck time.Time
	// watch are the directories whose changes matter.
	watch []string
}

// reload reconciles the published agents with the disk. initial skips the
// settle wait. Activation runs for added and updated agents before
// anything is published, and nothing is published when ctx ends. apply,
// when not nil, is given a change that is not empty before the next
// reload may begin.
func (c *Catalog) reload(ctx context.Context, initial bool, apply func(Change)) (reloadResult, error) {
	c.recMu.Lock()
	defer c.recMu.Unlock()

	now := c.now()
	var res reloadResult
	cands, watch := c.scan()
	res.watch = watch

	seen := make(map[string]bool, len(cands))
	desired := map[string]*Agent{}
	var order []string
	dups := map[string]string{}
	for _, cand := range cands {
		seen[cand.path] = true
		st, wait := c.observe(cand, now, initial)
		if !wait.IsZero() && (res.recheck.IsZero() || wait.Before(res.recheck)) {
			res.recheck = wait
		}
		if st == nil || st.use == nil {
			continue
		}
		name := st.use.ddl.Metadata.Name
		if first, taken := desired[name]; taken {
			dups[cand.path] = first.DDLPath
			continue
		}
		desired[name] = describe(name, cand, st.use)
		order = append(order, name)
	}
	for path := range c.files {
		if !seen[path] {
			delete(c.files, path)
		}
	}
	c.warnDuplicates(dups)
	for _, a := range desired {
		// A multiarch executable's directory, so a new build is noticed.
		if dir := filepath.Dir(a.Executable); !slices.Contains(res.watch, dir) && isDir(dir) {
			res.watch = append(res.watch, dir)
		}
	}

	c.mu.RLock()
	var change Change
	for _, name := range order {
		a := desired[name]
		old, ok := c.agents[name]
		switch {
		case !ok:
			change.Added = append(change.Added, a)
		case old.hash != a.hash || old.DDLPath != a.DDLPath || old.Executable != a.Executable || old.exeFound != a.exeFound:
			change.Updated = append(change.Updated, a)
		case old.exeStamp != a.exeStamp:
			// A new build; like a DDL, it is loaded once it has settled,
			// so that a half-written one is not started.
			if settled := a.exeStamp.mtime.Add(c.cfg.Settle); initial || !now.Before(settled) {
				change.Updated = append(change.Updated, a)
			} else if res.recheck.IsZero() || settled.Before(res.recheck) {
				res.recheck = settled
			}
		}
	}
	for name, old := range c.agents {
		if _, ok := desired[name]; !ok {
			change.Removed = append(change.Removed, old)
		}
	}
	c.mu.RUnlock()

	for _, a := range slices.Concat(change.Added, change.Updated) {
		c.activate(ctx, a)
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}

	c.mu.Lock()
	for _, a := range slices.Concat(change.Added, change.Updated) {
		c.agents[a.Name] = a
	}
	for _, a := range change.Removed {
		delete(c.agents, a.Name)
	}
	c.mu.Unlock()

	byName := func(x, y *Agent) int { return strings.Compare(x.Name, y.Name) }
	slices.SortFunc(change.Added, byName)
	slices.SortFunc(change.Updated, byName)
	slices.SortFunc(change.Removed, byName)
	for _, a := range change.Added {
		c.log.Debug("agent added", "agent", a.Name, "ddl", a.DDLPath, "executable", a.Executable, "active", a.Active)
	}
	for _, a := range change.Updated {
		c.log.Debug("agent updated", "agent", a.Name, "ddl", a.DDLPath, "executable", a.Executable, "active", a.Active)
	}
	for _, a := range change.Removed {
		c.log.Info("removing agent: its DDL is gone or no longer acceptable", "agent", a.Name, "ddl", a.DDLPath)
	}
	res.change = change
	if apply != nil && !change.Empty() {
		apply(change)
	}
	return res, nil
}

// agentDirs lists the directories that hold agents, in search order.
func (c *Catalog) agentDirs() []string {
	var dirs []string
	for _, l := range c.cfg.Libdirs {
		dirs = append(dirs, filepath.Join(l, "mcollective", "agent"))
	}
	for _, p := range c.cfg.PluginDirs {
		dirs = append(dirs, filepath.Clean(p))
	}
	var out []string
	for _, d := range dirs {
		if !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out
}

// scan walks each agent directory one level deep, Choria's way: X.json
// files, and directories D holding D.json; "tmp" and deeper levels are
// never looked at. It also returns the directories to watch.
func (c *Catalog) scan() ([]candidate, []string) {
	var cands []candidate
	var watch []string
	for _, dir := range c.agentDirs() {
		entries, err := os.ReadDir(dir)
		c.noteDirError(dir, err)
		if err != nil {
			continue
		}
		watch = append(watch, dir)
		for _, e := range entries {
			name := e.Name()
			if name == "tmp" {
				continue
			}
			if e.IsDir() {
				watch = append(watch, filepath.Join(dir, name))
				p := filepath.Join(dir, name, name+".json")
				if _, err := os.Stat(p); err == nil {
					cands = append(cands, candidate{path: p, base: name, inSubdir: true})
				}
				continue
			}
			if filepath.Ext(name) == ".json" {
				cands = append(cands, candidate{path: filepath.Join(dir, name), base: strings.TrimSuffix(name, ".json")})
			}
		}
	}
	return cands, watch
}

func (c *Catalog) noteDirError(dir string, err error) {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	if c.dirErrs[dir] == msg {
		return
	}
	c.dirErrs[dir] = msg
	switch {
	case err == nil:
		c.log.Debug("reading agents from directory", "dir", dir)
	case errors.Is(err, fs.ErrNotExist):
		c.log.Info("agent directory does not exist; it is checked again periodically", "dir", dir)
	default:
		c.log.Error("could not read agent directory", "dir", dir, "error", err)
	}
}

// observe reads one DDL and, once its content has settled, judges it.
// It returns the path's state and, when the content has not settled yet,
// the time to look again.
func (c *Catalog) observe(cand candidate, now time.Time, initial bool) (*ddlFile, time.Time) {
	st := c.files[cand.path]
	b, mtime, err := readDDL(cand.path)
	if errors.Is(err, fs.ErrNotExist) {
		// Removed since the directory was listed.
		delete(c.files, cand.path)
		return nil, time.Time{}
	}
	if st == nil {
		st = &ddlFile{}
		c.files[cand.path] = st
	}
	if err != nil {
		if msg := err.Error(); msg != st.readErr {
			st.readErr = msg
			c.log.Error("could not read agent DDL", "ddl", cand.path, "error", err)
		}
		return st, time.Time{}
	}
	st.readErr = ""

	h := sha256.Sum256(b)
	if h != st.hash || st.since.IsZero() {
		st.hash, st.since, st.evaluated = h, now, false
	}
	if st.evaluated {
		return st, time.Time{}
	}
	settle := c.cfg.Settle
	if !initial && now.Sub(st.since) < settle && now.Sub(mtime) < settle {
		wait := st.since.Add(settle)
		if m := mtime.Add(settle); m.Before(wait) {
			wait = m
		}
		c.log.Debug("waiting for agent DDL to settle", "ddl", cand.path, "until", wait)
		return st, wait
	}
	st.evaluated = true

	d, err := ddl.Parse(b)
	if err != nil {
		if st.use != nil {
			c.log.Error("could not load agent DDL; keeping the version loaded before", "ddl", cand.path, "error", err)
		} else {
			c.log.Error("could not load agent DDL", "ddl", cand.path, "error", err)
		}
		return st, time.Time{}
	}
	st.use = nil
	if reason, level := c.refuse(cand, d); reason != "" {
		c.log.Log(context.Background(), level, reason, "ddl", cand.path)
		return st, time.Time{}
	}
	if d.Metadata.Name != cand.base {
		c.log.Debug("agent name differs from its DDL file name; using the name in the DDL", "agent", d.Metadata.Name, "ddl", cand.path)
	}
	for _, w := range d.Warnings() {
		c.log.Warn("agent DDL: "+w, "agent", d.Metadata.Name, "ddl", cand.path)
	}
	st.use = &accepted{ddl: d, hash: h}
	return st, time.Time{}
}

// refuse applies Choria's admission rules to a parsed DDL and returns why
// it is refused, with the level to log that at.
func (c *Catalog) refuse(cand candidate, d *ddl.DDL) (string, slog.Level) {
	switch {
	case d.Metadata.Provider != "external":
		return fmt.Sprintf("ignoring DDL with provider %q: only external agents are loaded", d.Metadata.Provider), slog.LevelDebug
	case !protocol.ValidName(d.Metadata.Name):
		// The name becomes a NATS subject token and a file name.
		return fmt.Sprintf("refusing agent %q: names may only hold lowercase letters, digits and underscores", d.Metadata.Name), slog.LevelWarn
	case slices.Contains(deniedAgents, cand.base):
		return fmt.Sprintf("External agents are not allowed to supply an agent called '%s', skipping", cand.base), slog.LevelWarn
	case slices.Contains(deniedAgents, d.Metadata.Name):
		// Choria would fail to register it next to its built-in twin.
		return fmt.Sprintf("External agents are not allowed to supply an agent called '%s', skipping", d.Metadata.Name), slog.LevelWarn
	case d.Metadata.Timeout < 1:
		return fmt.Sprintf("Could not register external agent %s: invalid agent: timeout < 1", d.Metadata.Name), slog.LevelError
	}
	return "", 0
}

// readDDL reads a DDL and, after reading, its modification time, so an
// old time proves nothing was written while it was read.
func readDDL(path string) ([]byte, time.Time, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, time.Time{}, err
	}
	defer f.Close()
	var buf bytes.Buffer
	n, err := io.Copy(&buf, io.LimitReader(f, maxDDLSize+1))
	if err != nil {
		return nil, time.Time{}, err
	}
	if n > maxDDLSize {
		return nil, time.Time{}, fmt.Errorf("DDL is larger than %d bytes", maxDDLSize)
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, time.Time{}, err
	}
	return buf.Bytes(), fi.ModTime(), nil
}

// describe builds the Agent an accepted DDL stands for, resolving its
// executable now (Choria's agentPath).
func describe(name string, cand candidate, acc *accepted) *Agent {
	a := &Agent{Name: name, DDL: acc.ddl, DDLPath: cand.path, hash: acc.hash}
	flat := filepath.Join(filepath.Dir(cand.path), name)
	if fi, err := os.Stat(flat); err == nil && fi.Mode().IsRegular() {
		a.Executable, a.exeFound, a.Layout, a.exeStamp = flat, true, LayoutFlat, stampOf(fi)
		if cand.inSubdir {
			a.Layout = LayoutDirectory
		}
		return a
	}
	a.Executable = filepath.Join(flat, fmt.Sprintf("%s-%s_%s", name, runtime.GOOS, runtime.GOARCH))
	a.Layout = LayoutMultiarch
	fi, err := os.Stat(a.Executable)
	a.exeFound = err == nil
	if a.exeFound {
		a.exeStamp = stampOf(fi)
	}
	return a
}

func isDir(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}

func (c *Catalog) warnDuplicates(dups map[string]string) {
	for path, first := range dups {
		if c.dupWarned[path] != first {
			c.log.Warn("ignoring agent DDL: an agent with the same name was found first elsewhere", "ddl", path, "loaded", first)
		}
	}
	c.dupWarned = dups
}

// activate runs the activation check for an agent about to be published.
func (c *Catalog) activate(ctx context.Context, a *Agent) {
	if c.cfg.Activate == nil {
		a.Active = true
		return
	}
	actx, cancel := context.WithTimeout(ctx, c.cfg.ActivateTimeout)
	defer cancel()
	var act Activation
	act, a.ActivationError = c.cfg.Activate(actx, a)
	a.Active, a.WorkerVersions, a.PluginVersions = act.Active, act.WorkerVersions, act.PluginVersions
	switch {
	case a.ActivationError != nil:
		a.Active = false
		c.log.Warn("agent not activating due to an error during its activation check", "agent", a.Name, "executable", a.Executable, "error", a.ActivationError)
	case !a.Active:
		c.log.Info("agent not activating due to its activation check", "agent", a.Name, "executable", a.Executable)
	}
}
