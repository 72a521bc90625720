package host

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestLogLimit(t *testing.T) {
	l := newLogLimit(2, time.Second)
	t0 := time.Unix(1000, 0)
	steps := []struct {
		at             time.Duration
		wantOK         bool
		wantSuppressed int
	}{
		{0, true, 0},
		{100 * time.Millisecond, true, 0},
		{200 * time.Millisecond, false, 0},
		{300 * time.Millisecond, false, 0},
		{time.Second, true, 2}, // a new interval reports what was held back
		{time.Second + time.Millisecond, true, 0},
		{time.Second + 2*time.Millisecond, false, 0},
	}
	for i, s := range steps {
		ok, suppressed := l.allow(t0.Add(s.at))
		if ok != s.wantOK || suppressed != s.wantSuppressed {
			t.Errorf("step %d at %s: allow = %v, %d; want %v, %d", i, s.at, ok, suppressed, s.wantOK, s.wantSuppressed)
		}
	}
}

func TestLimitedHandler(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(newLimitedHandler(slog.NewTextHandler(&buf, nil), newLogLimit(5, time.Hour))).With("component", "filter")
	for range 100 {
		log.Warn("cannot compile compound filter")
	}
	if n := strings.Count(buf.String(), "cannot compile compound filter"); n != 5 {
		t.Errorf("%d lines logged, want the 5 of the burst:\n%s", n, buf.String())
	}
	if !strings.Contains(buf.String(), "component=filter") {
		t.Errorf("attributes lost:\n%s", buf.String())
	}
}
