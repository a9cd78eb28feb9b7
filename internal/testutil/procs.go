package testutil

import (
	"os"
	"strconv"
	"strings"
)

// procStat is what a test needs of /proc/PID/stat.
type procStat struct {
	pid, ppid, pgrp int
	state           string
}

// procs lists the live processes from /proc (Linux), zombies included.
func procs() []procStat {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []procStat
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
		out = append(out, procStat{pid: pid, ppid: ppid, pgrp: pgrp, state: f[0]})
	}
	return out
}

// Children returns the PIDs of the live (not zombie) children of pid.
func Children(pid int) []int {
	var out []int
	for _, p := range procs() {
		if p.ppid == pid && p.state != "Z" {
			out = append(out, p.pid)
		}
	}
	return out
}

// GroupMembers returns the PIDs of the live (not zombie) members of
// process group pgid: a model process and whatever it started.
func GroupMembers(pgid int) []int {
	var out []int
	for _, p := range procs() {
		if p.pgrp == pgid && p.state != "Z" {
			out = append(out, p.pid)
		}
	}
	return out
}
