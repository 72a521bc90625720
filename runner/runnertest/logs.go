package runnertest

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"testing"
)

// Logs records what a logger writes, so that tests can assert on the
// output an agent produced and at which level it was logged. The zero
// value is ready to use; it is safe for concurrent use.
type Logs struct {
	mu      sync.Mutex
	records []Record
}

// Record is one recorded log record. Attrs holds every attribute,
// including those added with Logger.With, as its value's string form;
// attributes inside groups are keyed "group.key".
type Record struct {
	Level   slog.Level
	Message string
	Attrs   map[string]string
}

// Logger returns a logger, enabled at every level, that records into l.
func (l *Logs) Logger() *slog.Logger {
	return slog.New(&logsHandler{logs: l})
}

// Records returns a copy of what has been recorded so far, oldest first.
func (l *Logs) Records() []Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.records)
}

type logsHandler struct {
	logs   *Logs
	attrs  []slog.Attr // qualified by their groups already
	prefix string      // the open groups, each followed by "."
}

func (h *logsHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *logsHandler) Handle(_ context.Context, r slog.Record) error {
	rec := Record{Level: r.Level, Message: r.Message, Attrs: make(map[string]string, len(h.attrs)+r.NumAttrs())}
	for _, a := range h.attrs {
		rec.Attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.Attrs[h.prefix+a.Key] = a.Value.String()
		return true
	})
	h.logs.mu.Lock()
	h.logs.records = append(h.logs.records, rec)
	h.logs.mu.Unlock()
	return nil
}

func (h *logsHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.attrs = slices.Clone(h.attrs)
	for _, a := range attrs {
		c.attrs = append(c.attrs, slog.Attr{Key: h.prefix + a.Key, Value: a.Value})
	}
	return &c
}

func (h *logsHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.prefix = h.prefix + name + "."
	return &c
}

// Interface guards
var _ slog.Handler = (*logsHandler)(nil)

// Check asserts that exactly the records in want were logged, keyed by
// message, each with its level and attributes.
func (l *Logs) Check(tb testing.TB, want map[string]Record) {
	tb.Helper()
	records := l.Records()
	if len(records) != len(want) {
		tb.Errorf("got %d records, want %d: %+v", len(records), len(want), records)
	}
	for _, r := range records {
		w, ok := want[r.Message]
		if !ok {
			tb.Errorf("unexpected record %+v", r)
			continue
		}
		if r.Level != w.Level || !maps.Equal(r.Attrs, w.Attrs) {
			tb.Errorf("record %+v, want level %v and attributes %v", r, w.Level, w.Attrs)
		}
	}
}
