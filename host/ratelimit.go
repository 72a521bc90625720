package host

import (
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
