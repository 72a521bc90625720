//go:build !linux

package proc

import "syscall"

// sysProcAttr starts a process in a session of its own, which is also a
// process group of its own and survives descendants that leave the group.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setsid: true}
}
