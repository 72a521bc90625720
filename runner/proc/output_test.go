package proc

import (
	"bytes"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"
)

type line struct {
	text      string
	truncated bool
}

// chunkReader returns data in reads of the given sizes, cycling, to
// exercise every way a line can be split across reads.
type chunkReader struct {
	data  []byte
	sizes []int
	i     int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := len(r.data)
	if len(r.sizes) > 0 {
		n = max(1, r.sizes[r.i%len(r.sizes)])
		r.i++
	}
	n = min(n, len(p), len(r.data))
	copy(p, r.data[:n])
	r.data = r.data[n:]
	return n, nil
}

func collect(r io.Reader, maxLine int) []line {
	var got []line
	readLines(r, maxLine, func(b []byte, truncated bool) {
		got = append(got, line{string(b), truncated})
	})
	return got
}

// wantLines is the reference: split on "\n", a trailing "\r" dropped, a
// line of more than maxLine bytes (its "\r" counted) cut to maxLine.
func wantLines(input string, maxLine int) []line {
	var want []line
	parts := strings.Split(input, "\n")
	for i, p := range parts {
		if i == len(parts)-1 && p == "" {
			break
		}
		if len(p) > maxLine {
			want = append(want, line{p[:maxLine], true})
			continue
		}
		want = append(want, line{strings.TrimSuffix(p, "\r"), false})
	}
	return want
}

func TestReadLines(t *testing.T) {
	long := strings.Repeat("x", 10_000)
	tests := []struct {
		name    string
		input   string
		maxLine int
		want    []line
	}{
		{name: "empty", input: "", maxLine: 8},
		{name: "lines", input: "a\nbb\n", maxLine: 8, want: []line{{"a", false}, {"bb", false}}},
		{name: "empty lines kept", input: "\n\na\n", maxLine: 8, want: []line{{"", false}, {"", false}, {"a", false}}},
		{name: "crlf", input: "a\r\nb\r\n", maxLine: 8, want: []line{{"a", false}, {"b", false}}},
		{name: "last line without newline", input: "a\nlast", maxLine: 8, want: []line{{"a", false}, {"last", false}}},
		{name: "exactly the limit", input: "12345678\nok\n", maxLine: 8, want: []line{{"12345678", false}, {"ok", false}}},
		{name: "one over the limit", input: "123456789\nok\n", maxLine: 8, want: []line{{"12345678", true}, {"ok", false}}},
		{name: "long line then more", input: long + "\nafter\n", maxLine: 100, want: []line{{long[:100], true}, {"after", false}}},
		{name: "long last line", input: "a\n" + long, maxLine: 100, want: []line{{"a", false}, {long[:100], true}}},
		{name: "line longer than the first buffer", input: long + "\n", maxLine: 64 << 10, want: []line{{long, false}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if w := wantLines(tt.input, tt.maxLine); !slices.Equal(w, tt.want) {
				t.Fatalf("reference model disagrees with the table: %+v", w)
			}
			for _, sizes := range [][]int{nil, {1}, {3, 1, 7}, {4096}} {
				got := collect(&chunkReader{data: []byte(tt.input), sizes: sizes}, tt.maxLine)
				if !slices.Equal(got, tt.want) {
					t.Errorf("reads of %v: got %+v, want %+v", sizes, got, tt.want)
				}
			}
		})
	}
}

// A long line is never held whole: the buffer stays within the limit
// however much is written.
func TestReadLinesBoundedBuffer(t *testing.T) {
	const maxLine = 1 << 10
	input := bytes.Repeat([]byte("y"), 8<<20)
	var biggest int
	readLines(&chunkReader{data: input, sizes: []int{65536}}, maxLine, func(b []byte, _ bool) {
		biggest = max(biggest, cap(b))
	})
	if biggest > maxLine+1 {
		t.Errorf("a line was handed over in a buffer of %d bytes, want at most %d", biggest, maxLine+1)
	}
}

func FuzzReadLines(f *testing.F) {
	f.Add([]byte("a\nbb\r\n\nccc"), uint8(2), []byte{1, 2, 3})
	f.Add([]byte("123456789\nok\n"), uint8(8), []byte{})
	f.Add([]byte("\r\r\n\r"), uint8(1), []byte{5})
	f.Fuzz(func(t *testing.T, input []byte, maxLine uint8, sizes []byte) {
		m := int(maxLine%64) + 1
		chunks := make([]int, len(sizes))
		for i, s := range sizes {
			chunks[i] = int(s)
		}
		got := collect(&chunkReader{data: input, sizes: chunks}, m)
		want := wantLines(string(input), m)
		if !slices.Equal(got, want) {
			t.Fatalf("maxLine %d, reads %v: got %+v, want %+v", m, chunks, got, want)
		}
	})
}

// TestLogBudgetKeepsFractions: lines coming faster than the refill earns
// a whole byte still get the refill rate, not nothing.
func TestLogBudgetKeepsFractions(t *testing.T) {
	o := newOutputLog(t.Context(), slog.New(slog.DiscardHandler), 100, 10_000)
	line := make([]byte, 100)
	logged := 0
	start := time.Now()
	for time.Since(start) < 500*time.Millisecond {
		// Lines far closer together than one byte's worth of refill.
		if o.spend(line) {
			logged++
		}
	}
	// 10 000 bytes a second for half a second is 50 lines of 100 bytes,
	// plus the first from the full bucket; losing fractions gave almost none.
	if logged < 25 {
		t.Errorf("%d lines logged in 0.5 s at 10 000 bytes/s, want about 50", logged)
	}
}
