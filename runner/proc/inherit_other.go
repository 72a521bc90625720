//go:build !linux

package proc

import "errors"

// CloseInheritedOnExec is supported on Linux only.
func CloseInheritedOnExec() error { return errors.ErrUnsupported }
