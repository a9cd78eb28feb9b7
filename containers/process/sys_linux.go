package process

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
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
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return true
	}
	group := strconv.Itoa(pgid)
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // exited meanwhile
		}
		// "pid (comm) state ppid pgrp ...": comm may hold spaces and ")".
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) >= 3 && f[0] != "Z" && f[2] == group {
			return true
		}
	}
	return false
}
