//go:build !linux

package proc

import "errors"

// BecomeSubreaper is supported on Linux only; elsewhere proc stops what a
// process left in its process group, but descendants that left the group
// are out of reach.
func BecomeSubreaper() error { return errors.ErrUnsupported }

func sweepOrphans(*sweep) int { return 0 }

// Sweep does nothing where BecomeSubreaper is not supported.
func Sweep() {}
