package worker

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sync"
)

// Reader reads documents, one per line, each at most a limit.
type Reader struct {
	r   *bufio.Reader
	max int
}

// NewReader reads from r with documents of at most max bytes.
func NewReader(r io.Reader, max int) *Reader {
	return &Reader{r: bufio.NewReaderSize(r, 64<<10), max: max}
}

// SetMax changes the limit, once the handshake agreed one.
func (r *Reader) SetMax(max int) { r.max = max }

// Next returns the next line without its newline; the slice is valid
// until the next call. A line longer than the limit is an error wrapping
// ErrTooLarge; the stream cannot be trusted after it. At the end of the
// stream Next returns io.EOF (a last line without a newline is returned
// first).
func (r *Reader) Next() ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.r.ReadSlice('\n')
		if len(line)+len(chunk) > r.max+1 {
			return nil, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, r.max)
		}
		switch err {
		case nil:
			if line == nil {
				return chunk[:len(chunk)-1], nil
			}
			return append(line, chunk[:len(chunk)-1]...), nil
		case bufio.ErrBufferFull:
			line = append(line, chunk...)
		default:
			if len(line)+len(chunk) > 0 && err == io.EOF {
				return append(line, chunk...), nil
			}
			return nil, err
		}
	}
}

// Writer writes documents, each in one write, from any goroutine.
type Writer struct {
	mu  sync.Mutex
	w   io.Writer
	max int // 0 until SetMax
	buf bytes.Buffer
}

// NewWriter writes to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// SetMax sets the largest document Write writes, once the handshake
// agreed one.
func (w *Writer) SetMax(max int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.max = max
}

// Write encodes doc as one line and writes it. A document larger than
// the limit is not written: the error wraps ErrTooLarge, and the stream
// is as it was.
func (w *Writer) Write(doc any) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Reset()
	enc := json.NewEncoder(&w.buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(doc); err != nil {
		return fmt.Errorf("%w: %w", ErrEncoding, err)
	}
	if size := w.buf.Len() - 1; w.max > 0 && size > w.max {
		return fmt.Errorf("%w: %d bytes, more than %d", ErrTooLarge, size, w.max)
	}
	_, err := w.w.Write(w.buf.Bytes())
	return err
}
