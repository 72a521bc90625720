package protocol

import (
	"errors"
	"fmt"
)

// Nesting limits for the JSON documents agent-host decodes from the
// network and from agents, checked before a document is parsed. Go's
// decoder would refuse past 10 000 levels; these are far lower, and far
// above anything a Choria client or agent writes.
const (
	// MaxEnvelopeDepth bounds Choria's envelopes (transport, secure
	// request, request with its filter), whose shape is fixed.
	MaxEnvelopeDepth = 16
	// MaxDataDepth bounds documents that carry free-form data: request
	// bodies and agent replies.
	MaxDataDepth = 128
)

// ErrTooDeep is wrapped by CheckDepth's errors.
var ErrTooDeep = errors.New("protocol: JSON nested too deeply")

// CheckDepth reports whether the JSON text b nests arrays and objects
// more than max levels deep. It does not otherwise validate b, and it
// reads b once without recursing or allocating.
func CheckDepth(b []byte, max int) error {
	depth := 0
	inString, escaped := false, false
	for _, c := range b {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '[' || c == '{':
			if depth++; depth > max {
				return fmt.Errorf("%w: more than %d levels", ErrTooDeep, max)
			}
		case c == ']' || c == '}':
			depth--
		}
	}
	return nil
}
