package proc

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"
)

// firstBufferBytes is where a line buffer starts; most processes print
// little, so the full MaxLineBytes is only allocated when a line needs it.
const firstBufferBytes = 4 << 10

// firstBuffers recycles first buffers: two per process on the request path.
var firstBuffers = sync.Pool{New: func() any { b := make([]byte, firstBufferBytes); return &b }}

// readLines reads r to its end, handing each line to emit. It holds at
// most maxLine+1 bytes: a longer line is emitted truncated and the rest
// of it is discarded while reading goes on, so the writer never blocks
// on a full pipe because of a long line.
func readLines(r io.Reader, maxLine int, emit LineFunc) {
	first := firstBuffers.Get().(*[]byte)
	defer firstBuffers.Put(first)
	size := min(firstBufferBytes, maxLine+1)
	buf := (*first)[:size:size]
	start, end := 0, 0 // buf[start:end] is the unfinished line
	skipping := false  // inside a line already emitted truncated
	for {
		n, err := r.Read(buf[end:])
		// Only the bytes just read can hold a newline not seen yet.
		scan := end
		end += n
		for {
			i := bytes.IndexByte(buf[scan:end], '\n')
			if i < 0 {
				break
			}
			nl := scan + i
			if skipping {
				skipping = false
			} else {
				emit(dropCR(buf[start:nl]), false)
			}
			start, scan = nl+1, nl+1
		}
		if skipping || start == end {
			start, end = 0, 0
		}
		if err != nil {
			if start < end {
				emit(dropCR(buf[start:end]), false)
			}
			return
		}
		if end < len(buf) {
			continue
		}
		switch {
		case start > 0:
			end = copy(buf, buf[start:end])
			start = 0
		case len(buf) <= maxLine:
			grown := make([]byte, min(2*len(buf), maxLine+1))
			copy(grown, buf)
			buf = grown
		default:
			// maxLine+1 bytes and no newline: the line is too long.
			emit(buf[:maxLine], true)
			skipping = true
			start, end = 0, 0
		}
	}
}

func dropCR(b []byte) []byte {
	if len(b) > 0 && b[len(b)-1] == '\r' {
		return b[:len(b)-1]
	}
	return b
}

// outputLog logs the output lines of one process within a byte budget
// shared by both streams: a bucket of limit bytes that refills at rate
// bytes a second. Lines that do not fit are counted, and the count is
// logged when logging resumes and when the process is over.
type outputLog struct {
	ctx   context.Context
	log   *slog.Logger
	limit int64 // negative: unlimited
	rate  int64 // bytes per second; negative: never refills

	mu                         sync.Mutex
	budget                     int64
	refilled                   time.Time
	droppedLines, droppedBytes int64
}

func newOutputLog(ctx context.Context, log *slog.Logger, limit, rate int64) *outputLog {
	return &outputLog{ctx: ctx, log: log, limit: limit, rate: rate, budget: limit, refilled: time.Now()}
}

func (o *outputLog) lineFunc(level slog.Level, stream string) LineFunc {
	streamAttr := slog.String("stream", stream)
	return func(line []byte, truncated bool) {
		if !truncated {
			if lv, msg, attrs, ok := structuredLine(line); ok {
				if o.log.Enabled(o.ctx, lv) && o.spend(line) {
					o.log.LogAttrs(o.ctx, lv, msg, append(attrs, streamAttr)...)
				}
				return
			}
		}
		if !o.log.Enabled(o.ctx, level) || !o.spend(line) {
			return
		}
		if truncated {
			o.log.LogAttrs(o.ctx, level, string(line), streamAttr, slog.Bool("truncated", true))
			return
		}
		o.log.LogAttrs(o.ctx, level, string(line), streamAttr)
	}
}

// spend takes line from the budget; false means it is not logged. The
// first line logged after some were not is preceded by their count.
func (o *outputLog) spend(line []byte) bool {
	if o.limit < 0 {
		return true
	}
	n := int64(len(line))
	o.mu.Lock()
	if o.rate > 0 {
		// Credit whole bytes only, and move the refill time on by what
		// they are worth, so that frequent lines do not lose the fractions.
		now := time.Now()
		if credit := int64(now.Sub(o.refilled).Seconds() * float64(o.rate)); credit > 0 {
			o.budget += credit
			o.refilled = o.refilled.Add(time.Duration(float64(credit) / float64(o.rate) * float64(time.Second)))
			if o.budget >= o.limit {
				o.budget, o.refilled = o.limit, now
			}
		}
	}
	if o.budget < n {
		o.droppedLines++
		o.droppedBytes += n
		o.mu.Unlock()
		return false
	}
	o.budget -= n
	lines, bytes := o.droppedLines, o.droppedBytes
	o.droppedLines, o.droppedBytes = 0, 0
	o.mu.Unlock()
	o.report(lines, bytes)
	return true
}

// summarize logs how much output the budget kept out of the logs since
// the last report.
func (o *outputLog) summarize() {
	o.mu.Lock()
	lines, bytes := o.droppedLines, o.droppedBytes
	o.droppedLines, o.droppedBytes = 0, 0
	o.mu.Unlock()
	o.report(lines, bytes)
}

func (o *outputLog) report(lines, bytes int64) {
	if lines == 0 {
		return
	}
	o.log.LogAttrs(o.ctx, slog.LevelWarn, "output beyond the log limit was not logged",
		slog.Int64("dropped_lines", lines),
		slog.Int64("dropped_bytes", bytes),
		slog.Int64("limit_bytes", o.limit),
		slog.Int64("refill_bytes_per_second", max(o.rate, 0)))
}

// maxLineFields bounds the fields kept from one structured line.
const maxLineFields = 32

// structuredLine reads a JSON object line such as
// {"level":"warn","msg":"disk low","free":12}, or hclog's
// {"@level":"warn","@message":"disk low",...} that go-plugin plugins write,
// into a level, a message and fields, so agents that log structured lines
// keep them structured. Plain
// lines (ok false) keep the stream's level, as Choria logs them.
func structuredLine(line []byte) (level slog.Level, msg string, attrs []slog.Attr, ok bool) {
	if len(line) < 2 || line[0] != '{' {
		return 0, "", nil, false
	}
	var fields map[string]any
	if json.Unmarshal(line, &fields) != nil {
		return 0, "", nil, false
	}
	for _, k := range []string{"msg", "message", "@message"} {
		if m, isString := fields[k].(string); isString {
			msg = m
			delete(fields, k)
			break
		}
	}
	var lv string
	for _, k := range []string{"level", "@level"} {
		if l, isString := fields[k].(string); isString {
			lv = l
			break
		}
	}
	if msg == "" || lv == "" {
		return 0, "", nil, false
	}
	switch strings.ToLower(lv) {
	case "debug", "trace":
		level = slog.LevelDebug
	case "info":
		level = slog.LevelInfo
	case "warn", "warning":
		level = slog.LevelWarn
	case "error", "fatal", "critical", "panic":
		level = slog.LevelError
	default:
		return 0, "", nil, false
	}
	for _, k := range []string{"level", "@level", "time", "@timestamp"} {
		delete(fields, k)
	}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys[:min(len(keys), maxLineFields)] {
		attrs = append(attrs, slog.Any(k, fields[k]))
	}
	return level, msg, attrs, true
}

// The size of the stderr tail kept for StderrTail.
const (
	TailLines     = 10
	TailLineBytes = 512
)

// tail keeps the last lines of a stream.
type tail struct {
	mu   sync.Mutex
	ring [TailLines]string
	next int
	full bool
}

// record wraps fn to keep each line it is given.
func (t *tail) record(fn LineFunc) LineFunc {
	return func(line []byte, truncated bool) {
		t.mu.Lock()
		t.ring[t.next] = string(line[:min(len(line), TailLineBytes)])
		t.next = (t.next + 1) % TailLines
		t.full = t.full || t.next == 0
		t.mu.Unlock()
		fn(line, truncated)
	}
}

func (t *tail) lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.full {
		return append([]string(nil), t.ring[:t.next]...)
	}
	return append(append([]string(nil), t.ring[t.next:]...), t.ring[:t.next]...)
}
