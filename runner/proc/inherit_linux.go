package proc

import (
	"math"

	"golang.org/x/sys/unix"
)

// CloseInheritedOnExec marks every descriptor above stderr close-on-exec.
// Go opens its own files so, but a program may have inherited others from
// whatever started it (a shell, a service manager), and every process it
// starts would inherit them in turn: proc passes a child only the files
// its Spec names. Call it once, early, before other goroutines open files
// meant to be inherited.
func CloseInheritedOnExec() error {
	return unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC)
}
