package proc

import "syscall"

// sysProcAttr starts a process in a session of its own, which is also a
// process group of its own and survives descendants that leave the group,
// and has the kernel kill it if this process dies, even by SIGKILL.
// (The kernel ties that to the thread that started it; Go ends a thread
// only when a goroutine locked to it exits, which nothing here does.)
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
}
