package host

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/agent-host/agent-host/host/filter"
)

// maxInventoryFile bounds a facts or classes file; a node's facts are
// kilobytes, and anything near this is a misconfiguration.
const maxInventoryFile = 16 << 20

// inventory serves the node's facts and classes, re-reading the files when
// they change so that filters and rpcutil see what the operator wrote,
// without a stat on every request.
type inventory struct {
	factFiles   []string
	classesFile string
	log         *slog.Logger
	recheck     time.Duration

	mu      sync.Mutex
	checked time.Time
	stamp   string
	facts   json.RawMessage
	classes []string
}

func newInventory(factFiles []string, classesFile string, log *slog.Logger) *inventory {
	inv := &inventory{factFiles: factFiles, classesFile: classesFile, log: log, recheck: time.Second}
	inv.refresh(time.Now())
	return inv
}

// snapshot returns the current facts (a JSON object) and sorted classes.
// Callers must not modify them.
func (i *inventory) snapshot() (json.RawMessage, []string) {
	now := time.Now()
	i.mu.Lock()
	defer i.mu.Unlock()
	if now.Sub(i.checked) >= i.recheck {
		i.refreshLocked(now)
	}
	return i.facts, i.classes
}

func (i *inventory) refresh(now time.Time) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.refreshLocked(now)
}

func (i *inventory) refreshLocked(now time.Time) {
	i.checked = now
	stamp := fileStamp(append(slices.Clone(i.factFiles), i.classesFile))
	if stamp == i.stamp && i.facts != nil {
		return
	}
	i.stamp = stamp
	i.facts = loadFacts(i.factFiles, i.log)
	i.classes = loadClasses(i.classesFile, i.log)
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
// as Choria does; YAML files are converted to JSON first. Unreadable files
// are logged and skipped so one bad file does not blank every fact.
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

// readFactsFile returns a facts file as JSON.
func readFactsFile(path string) ([]byte, error) {
	b, err := readBounded(path)
	if err != nil {
		return nil, err
	}
	if strings.EqualFold(filepath.Ext(path), ".json") {
		return b, nil
	}
	facts := map[string]any{}
	if err := yaml.Unmarshal(b, &facts); err != nil {
		return nil, fmt.Errorf("parsing YAML facts: %w", err)
	}
	return json.Marshal(facts)
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

func readBounded(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Size() > maxInventoryFile {
		return nil, fmt.Errorf("%s is %d bytes, larger than the %d byte limit", path, st.Size(), maxInventoryFile)
	}
	return os.ReadFile(path)
}
