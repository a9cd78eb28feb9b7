//go:build unix && !linux

package process

import (
	"errors"
	"syscall"
)

func sysProcAttr() *syscall.SysProcAttr {
	// A group of its own, to signal the process with its children.
	return &syscall.SysProcAttr{Setpgid: true}
}

// groupAlive reports whether process group pgid has a member, zombies
// included.
func groupAlive(pgid int) bool {
	return !errors.Is(syscall.Kill(-pgid, 0), syscall.ESRCH)
}
