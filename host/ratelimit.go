package host

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// logLimit lets through at most burst log lines per interval and counts the
// rest, so that anyone able to publish to the broker cannot flood the log
// with messages the host refuses. The count is reported with the next line
// let through.
type logLimit struct {
	interval time.Duration
	burst    int

	mu         sync.Mutex
	start      time.Time
	used       int
	suppressed int
}

func newLogLimit(burst int, interval time.Duration) *logLimit {
	return &logLimit{burst: burst, interval: interval}
}

// allow reports whether to log now and how many lines were suppressed
// since the last one logged.
func (l *logLimit) allow(now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.start) >= l.interval {
		l.start, l.used = now, 0
	}
	if l.used >= l.burst {
		l.suppressed++
		return false, 0
	}
	l.used++
	suppressed, l.suppressed = l.suppressed, 0
	return true, suppressed
}

// limitedHandler passes records to its handler within a logLimit, adding
// how many were held back to the next one passed.
type limitedHandler struct {
	slog.Handler
	limit *logLimit
}

func newLimitedHandler(h slog.Handler, limit *logLimit) slog.Handler {
	return &limitedHandler{Handler: h, limit: limit}
}

func (h *limitedHandler) Handle(ctx context.Context, r slog.Record) error {
	ok, suppressed := h.limit.allow(time.Now())
	if !ok {
		return nil
	}
	if suppressed > 0 {
		r.AddAttrs(slog.Int("suppressed_since_last", suppressed))
	}
	return h.Handler.Handle(ctx, r)
}

func (h *limitedHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &limitedHandler{Handler: h.Handler.WithAttrs(attrs), limit: h.limit}
}

func (h *limitedHandler) WithGroup(name string) slog.Handler {
	return &limitedHandler{Handler: h.Handler.WithGroup(name), limit: h.limit}
}
