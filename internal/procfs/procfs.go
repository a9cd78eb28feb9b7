// Package procfs reads what the process runtime and its tests need of
// Linux's /proc: each live process's parent, group and state.
package procfs

import (
	"os"
	"strconv"
	"strings"
)

// Stat is what /proc/PID/stat says of one process.
type Stat struct {
	PID, PPID, PGRP int
	State           string // "R", "S", "Z" (a zombie), ...
}

// Zombie reports whether the process has exited and waits to be reaped.
func (s Stat) Zombie() bool { return s.State == "Z" }

// All lists the processes in /proc, zombies included; nil where /proc
// cannot be read. A process that exits while it is read is left out.
func All() []Stat {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []Stat
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // exited meanwhile
		}
		// "pid (comm) state ppid pgrp ...": comm may hold spaces and ")".
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 3 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		pgrp, _ := strconv.Atoi(f[2])
		out = append(out, Stat{PID: pid, PPID: ppid, PGRP: pgrp, State: f[0]})
	}
	return out
}
