//go:build !linux

package proc

import (
	"errors"
	"sync/atomic"
)

// subreaper is never set where BecomeSubreaper is not supported.
var subreaper atomic.Bool

// BecomeSubreaper is supported on Linux only; elsewhere proc stops what a
// process left in its process group, but descendants that left the group
// are out of reach.
func BecomeSubreaper() error { return errors.ErrUnsupported }
