//go:build !linux

package proc

// awaitExit returns at once; the caller's Wait blocks instead.
func awaitExit(int) {}
