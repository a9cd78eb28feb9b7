package process

import (
	"errors"
	"syscall"

	"github.com/sloproxy/sloproxy/internal/procfs"
)

func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		// A group of its own, to signal the process with its children.
		Setpgid: true,
		// If the proxy dies without stopping it, the process gets SIGKILL
		// rather than hold its port against the restarted proxy. Linux
		// sends it when the thread that started the child exits: the
		// starter's, which lives as long as the Runtime. It reaches only
		// the direct child; watchScript's watcher kills the rest of the
		// group.
		Pdeathsig: syscall.SIGKILL,
	}
}

// groupAlive reports whether process group pgid has a live member. Zombies
// do not count: an orphan's zombie waits for init to reap it, which may be
// slow, or never happen when the proxy itself is a container's PID 1.
func groupAlive(pgid int) bool {
	if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	procs := procfs.All()
	if procs == nil {
		return true // /proc unreadable: the signal found a member
	}
	for _, p := range procs {
		if p.PGRP == pgid && !p.Zombie() {
			return true
		}
	}
	return false
}
