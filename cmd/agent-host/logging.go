package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"
)

// openLog builds the logger the configuration asks for and returns its
// output, which can be reopened after log rotation. With logfile set to a
// file, lines are JSON as Choria writes them (logrus' JSON formatter:
// level, msg, time and the fields at the top level), so that what ships
// Choria's logs ships agent-host's; on the terminal (stderr, stdout, no
// logfile) they stay text.
func openLog(level, file string) (*slog.Logger, *logOutput, error) {
	var lv slog.Level
	switch level {
	case "debug":
		lv = slog.LevelDebug
	case "", "info":
		lv = slog.LevelInfo
	case "warn":
		lv = slog.LevelWarn
	case "error", "fatal":
		lv = slog.LevelError
	default:
		return nil, nil, fmt.Errorf("loglevel %q is not one of debug, info, warn, error, fatal", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	// The words are Choria's, compared as it does without regard to case.
	switch strings.ToLower(file) {
	case "", "stderr":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), &logOutput{}, nil
	case "stdout":
		return slog.New(slog.NewTextHandler(os.Stdout, opts)), &logOutput{}, nil
	case "discard":
		return slog.New(slog.DiscardHandler), &logOutput{}, nil
	}
	out := &logOutput{path: file}
	if err := out.Reopen(); err != nil {
		return nil, nil, err
	}
	return slog.New(newChoriaJSONHandler(out, lv)), out, nil
}

// logOutput is the log file, which Reopen replaces after log rotation.
// Its zero value, for the terminal, does nothing.
type logOutput struct {
	path string
	mu   sync.Mutex
	f    *os.File
}

// Write writes one log line to the current file.
func (o *logOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.f == nil {
		return len(p), nil
	}
	return o.f.Write(p)
}

// Reopen opens the log file again, appending and creating it if it was
// moved away, and closes the one written so far: what logrotate needs.
// Group-readable, as the logs name callers and agents.
func (o *logOutput) Reopen() error {
	if o.path == "" {
		return nil
	}
	f, err := os.OpenFile(o.path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o640)
	if err != nil {
		return fmt.Errorf("opening logfile: %w", err)
	}
	o.mu.Lock()
	old := o.f
	o.f = f
	o.mu.Unlock()
	if old != nil {
		return old.Close()
	}
	return nil
}

// Close closes the log file.
func (o *logOutput) Close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.f == nil {
		return nil
	}
	err := o.f.Close()
	o.f = nil
	return err
}

// choriaJSONHandler writes the lines logrus' JSONFormatter writes in
// Choria: "level" in logrus' words (debug, info, warning, error), "msg",
// "time" in RFC 3339 to the second, and every attribute a top-level key;
// an attribute named like one of the three is renamed fields.<name>, as
// logrus does.
type choriaJSONHandler struct {
	slog.Handler
	// grouped is set below a group, where names cannot clash.
	grouped bool
}

func newChoriaJSONHandler(w io.Writer, level slog.Leveler) slog.Handler {
	return choriaJSONHandler{Handler: slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level, ReplaceAttr: choriaAttr})}
}

func choriaAttr(groups []string, a slog.Attr) slog.Attr {
	if len(groups) > 0 {
		return a
	}
	switch a.Key {
	case slog.TimeKey:
		if t, ok := a.Value.Any().(time.Time); ok {
			return slog.String(slog.TimeKey, t.Format(time.RFC3339))
		}
	case slog.LevelKey:
		if l, ok := a.Value.Any().(slog.Level); ok {
			return slog.String(slog.LevelKey, logrusLevel(l))
		}
	}
	return a
}

// logrusLevel names a level as logrus does.
func logrusLevel(l slog.Level) string {
	switch {
	case l < slog.LevelInfo:
		return "debug"
	case l < slog.LevelWarn:
		return "info"
	case l < slog.LevelError:
		return "warning"
	default:
		return "error"
	}
}

// Handle renames the record's attributes that clash with the three
// fields every line has.
func (h choriaJSONHandler) Handle(ctx context.Context, r slog.Record) error {
	clash := false
	if h.grouped {
		return h.Handler.Handle(ctx, r)
	}
	r.Attrs(func(a slog.Attr) bool {
		clash = clash || clashes(a)
		return !clash
	})
	if !clash {
		return h.Handler.Handle(ctx, r)
	}
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(renamed(a))
		return true
	})
	return h.Handler.Handle(ctx, out)
}

func (h choriaJSONHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if h.grouped {
		return choriaJSONHandler{h.Handler.WithAttrs(attrs), true}
	}
	out := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		out[i] = renamed(a)
	}
	return choriaJSONHandler{h.Handler.WithAttrs(out), false}
}

// WithGroup nests what follows, where names cannot clash.
func (h choriaJSONHandler) WithGroup(name string) slog.Handler {
	return choriaJSONHandler{h.Handler.WithGroup(name), true}
}

func reserved(key string) bool {
	return key == slog.TimeKey || key == slog.LevelKey || key == slog.MessageKey
}

// inline reports a group without a key, whose attributes slog writes at
// the level it is at.
func inline(a slog.Attr) bool { return a.Key == "" && a.Value.Kind() == slog.KindGroup }

func clashes(a slog.Attr) bool {
	if inline(a) {
		for _, in := range a.Value.Group() {
			if clashes(in) {
				return true
			}
		}
		return false
	}
	return reserved(a.Key)
}

func renamed(a slog.Attr) slog.Attr {
	switch {
	case inline(a):
		group := a.Value.Group()
		out := make([]slog.Attr, len(group))
		for i, in := range group {
			out[i] = renamed(in)
		}
		return slog.Attr{Value: slog.GroupValue(out...)}
	case reserved(a.Key):
		a.Key = "fields." + a.Key
	}
	return a
}

// Interface guards
var (
	_ slog.Handler = choriaJSONHandler{}
	_ io.Writer    = (*logOutput)(nil)
)
