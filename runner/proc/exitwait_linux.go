package proc

import (
	"os"

	"golang.org/x/sys/unix"
)

// awaitExit returns once process pid, a child not yet reaped, has exited,
// or at once when it cannot tell. It waits on a pidfd in the runtime's
// poller rather than in a wait syscall: a thread parked in a syscall for
// the whole run of an agent costs the runtime CPU all along.
func awaitExit(pid int) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return // an old kernel: the caller's Wait blocks instead
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	// The poller reports readiness (a pidfd is readable once its process
	// has exited) only after a check that found none, so each call
	// checks, without reaping: the caller's Wait reaps.
	_ = rc.Read(func(fd uintptr) bool {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PIDFD, int(fd), &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		return err != nil || info.Signo != 0
	})
}
