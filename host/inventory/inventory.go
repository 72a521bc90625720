// Package inventory reads a node's facts and classes the way a Choria
// server does, re-reading the files when they change, so that filters,
// rpcutil and agents see what the operator or the configuration-management
// tool last wrote.
package inventory

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/goccy/go-yaml"

	"github.com/agent-host/agent-host/protocol/filter"
)

// MaxFileBytes bounds a facts or classes file; a node's facts are
// kilobytes, and anything near this is a misconfiguration.
const MaxFileBytes = 16 << 20

// recheck is how often the files' sizes and times are looked at; a
// snapshot in between costs nothing.
const recheck = time.Second

// Inventory serves the node's facts and classes. It is safe for
// concurrent use.
type Inventory struct {
	factFiles   []string
	classesFile string
	log         *slog.Logger

	mu         sync.Mutex
	checked    time.Time
	refreshing bool // one caller is looking at the files
	// gen counts Reloads, so that a refresh that read the files before
	// one does not replace what it read.
	gen uint64
	// reloadMu keeps one Reload at a time, so the last to read stores last.
	reloadMu sync.Mutex
	stamp    string
	facts    json.RawMessage
	classes  []string
}

// New reads the facts files (later files win, as in Choria) and the
// classes file (a Puppet classes.txt); empty names are skipped. Problems
// are logged, never fatal: a node without facts still serves.
func New(factFiles []string, classesFile string, log *slog.Logger) *Inventory {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	inv := &Inventory{factFiles: factFiles, classesFile: classesFile, log: log, checked: time.Now()}
	inv.stamp = inv.fileStamp()
	inv.facts, inv.classes = loadFacts(factFiles, log), loadClasses(classesFile, log)
	return inv
}

// Snapshot returns the current facts (a JSON object normalized as Choria
// matches it, {} at least) and the sorted classes. Callers must not
// modify them. About once a second one caller looks at the files and,
// when they changed, reads them again; the others meanwhile get the
// previous facts rather than wait.
func (i *Inventory) Snapshot() (json.RawMessage, []string) {
	now := time.Now()
	i.mu.Lock()
	due := !i.refreshing && now.Sub(i.checked) >= recheck
	if due {
		i.refreshing, i.checked = true, now
	}
	facts, classes, stamp, gen := i.facts, i.classes, i.stamp, i.gen
	i.mu.Unlock()
	if !due {
		return facts, classes
	}
	if fresh := i.fileStamp(); fresh != stamp {
		facts, classes, stamp = loadFacts(i.factFiles, i.log), loadClasses(i.classesFile, i.log), fresh
	}
	i.mu.Lock()
	if i.gen == gen {
		i.facts, i.classes, i.stamp = facts, classes, stamp
	} else {
		facts, classes = i.facts, i.classes
	}
	i.refreshing = false
	i.mu.Unlock()
	return facts, classes
}

// Reload reads the files now, whatever their sizes and times say, and
// reports whether the facts or the classes differ from before. Snapshot
// returns what it read from then on.
func (i *Inventory) Reload() (factsChanged, classesChanged bool) {
	i.reloadMu.Lock()
	defer i.reloadMu.Unlock()
	stamp := i.fileStamp()
	facts, classes := loadFacts(i.factFiles, i.log), loadClasses(i.classesFile, i.log)
	i.mu.Lock()
	defer i.mu.Unlock()
	factsChanged, classesChanged = !bytes.Equal(i.facts, facts), !slices.Equal(i.classes, classes)
	i.facts, i.classes, i.stamp, i.checked = facts, classes, stamp, time.Now()
	i.gen++
	return factsChanged, classesChanged
}

// Facts returns the facts of Snapshot.
func (i *Inventory) Facts() []byte {
	f, _ := i.Snapshot()
	return f
}

func (i *Inventory) fileStamp() string {
	return fileStamp(append(slices.Clone(i.factFiles), i.classesFile))
}

// fileStamp summarises the size and mtime of files so a change is noticed.
func fileStamp(files []string) string {
	var b strings.Builder
	for _, f := range files {
		if f == "" {
			continue
		}
		if st, err := os.Stat(f); err == nil {
			fmt.Fprintf(&b, "%s:%d:%d;", f, st.Size(), st.ModTime().UnixNano())
		}
	}
	return b.String()
}

// loadFacts shallow-merges the facts files in order, later files winning,
// as Choria does. Unreadable files are logged and skipped so one bad file
// does not blank every fact.
func loadFacts(files []string, log *slog.Logger) json.RawMessage {
	var docs [][]byte
	for _, f := range files {
		if f == "" {
			continue
		}
		doc, err := readFactsFile(f)
		if err != nil {
			log.Warn("skipping facts file", "file", f, "error", err)
			continue
		}
		docs = append(docs, doc)
	}
	facts, err := filter.NormalizeFacts(docs...)
	if err != nil {
		log.Warn("skipping facts that are not a JSON object", "error", err)
	}
	return facts
}

// readFactsFile returns a facts file as JSON. Like Choria, a file whose
// name ends in "yaml" is YAML converted with the same library Choria uses
// (so numeric and boolean map keys become strings, dates stay text), and
// any other file is JSON; agent-host also reads ".yml" as YAML.
func readFactsFile(path string) ([]byte, error) {
	b, err := readBounded(path)
	if err != nil {
		return nil, err
	}
	if !strings.HasSuffix(path, "yaml") && !strings.HasSuffix(path, ".yml") {
		return b, nil
	}
	j, err := yaml.YAMLToJSON(b)
	if err != nil {
		return nil, fmt.Errorf("parsing YAML facts: %w", err)
	}
	return j, nil
}

// loadClasses reads a Puppet classes.txt: one class per line, sorted.
func loadClasses(path string, log *slog.Logger) []string {
	if path == "" {
		return []string{}
	}
	b, err := readBounded(path)
	if err != nil {
		if !os.IsNotExist(err) {
			log.Warn("cannot read classes file", "file", path, "error", err)
		}
		return []string{}
	}
	return filter.ParseClasses(b)
}

// readBounded reads at most MaxFileBytes of path, failing beyond that.
func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxFileBytes {
		return nil, fmt.Errorf("%s is larger than the %d byte limit", path, MaxFileBytes)
	}
	return b, nil
}
