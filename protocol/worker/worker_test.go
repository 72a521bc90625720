package worker_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"

	wp "github.com/agent-host/agent-host/protocol/worker"
)

const vectorDir = "../../testdata/vectors/worker"

type vector struct {
	Note    string                     `json:"note"`
	Version int                        `json:"version"`
	Line    string                     `json:"line"`
	Type    *string                    `json:"type"`
	Fields  map[string]json.RawMessage `json:"fields"`
}

// TestVectors decodes the shared vectors: each document to its type with
// the values given, each bad line to ErrDocument.
func TestVectors(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(vectorDir, "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no vectors in %s: %v", vectorDir, err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".json"), func(t *testing.T) {
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var v vector
			if err := json.Unmarshal(b, &v); err != nil {
				t.Fatal(err)
			}
			doc, err := wp.Decode([]byte(v.Line), v.Version)
			if v.Type == nil {
				if !errors.Is(err, wp.ErrDocument) {
					t.Fatalf("%s: Decode = %T, %v; want ErrDocument", v.Note, doc, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("%s: %v", v.Note, err)
			}
			// Every document type's Go struct has the type in its
			// Type field; the decoded document re-encodes to the fields.
			got := reflect.ValueOf(doc).Elem().FieldByName("Type").String()
			if got != *v.Type {
				t.Errorf("decoded a %s, want a %s", got, *v.Type)
			}
			enc, _ := json.Marshal(doc)
			var fields map[string]json.RawMessage
			_ = json.Unmarshal(enc, &fields)
			for key, want := range v.Fields {
				if !jsonEqual(t, fields[key], want) {
					t.Errorf("%s = %s, want %s", key, fields[key], want)
				}
			}
		})
	}
}

func jsonEqual(t *testing.T, a, b json.RawMessage) bool {
	t.Helper()
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

// TestReaderLimits: a line is returned whole however it arrives, up to
// the limit; one byte more is ErrTooLarge, without the reader holding
// more than the limit.
func TestReaderLimits(t *testing.T) {
	const max = 100 << 10 // beyond the reader's buffer, so lines arrive in pieces
	exact := strings.Repeat("a", max)
	stream := exact + "\n" + `{"type":"ping"}` + "\n" + "last without newline"
	r := wp.NewReader(iotest.OneByteReader(strings.NewReader(stream)), max)
	for _, want := range []string{exact, `{"type":"ping"}`, "last without newline"} {
		line, err := r.Next()
		if err != nil || string(line) != want {
			t.Fatalf("Next = %d bytes, %v; want %d bytes", len(line), err, len(want))
		}
	}
	if _, err := r.Next(); err != io.EOF {
		t.Fatalf("at the end: %v, want io.EOF", err)
	}

	r = wp.NewReader(strings.NewReader(exact+"a\n"), max)
	if _, err := r.Next(); !errors.Is(err, wp.ErrTooLarge) {
		t.Fatalf("a line of max+1 bytes: %v, want ErrTooLarge", err)
	}
	// A line that never ends is refused once it passes the limit, not
	// read to the end.
	r = wp.NewReader(io.MultiReader(strings.NewReader(exact), endless{}), max)
	if _, err := r.Next(); !errors.Is(err, wp.ErrTooLarge) {
		t.Fatalf("an endless line: %v, want ErrTooLarge", err)
	}
}

type endless struct{}

func (endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	return len(p), nil
}

// TestWriterOneLine: a document is one line, whatever its strings hold,
// and HTML characters are not escaped (other implementations compare
// strings as written).
func TestWriterOneLine(t *testing.T) {
	var buf bytes.Buffer
	w := wp.NewWriter(&buf)
	if err := w.Write(wp.Cancel{Type: wp.TypeCancel, V: wp.V1, ID: "a\nb<&>", Reason: wp.ReasonDeadline}); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if strings.Count(out, "\n") != 1 || !strings.HasSuffix(out, "\n") {
		t.Fatalf("not one line: %q", out)
	}
	if !strings.Contains(out, `<&>`) {
		t.Errorf("HTML characters escaped: %q", out)
	}
	doc, err := wp.Decode([]byte(strings.TrimSuffix(out, "\n")), wp.V1)
	if c, ok := doc.(*wp.Cancel); err != nil || !ok || c.ID != "a\nb<&>" {
		t.Errorf("round trip: %+v, %v", doc, err)
	}
}
