package testutil

import "github.com/sloproxy/sloproxy/internal/procfs"

// Children returns the PIDs of the live (not zombie) children of pid.
func Children(pid int) []int {
	var out []int
	for _, p := range procfs.All() {
		if p.PPID == pid && !p.Zombie() {
			out = append(out, p.PID)
		}
	}
	return out
}

// GroupMembers returns the PIDs of the live (not zombie) members of
// process group pgid: a model process and whatever it started.
func GroupMembers(pgid int) []int {
	var out []int
	for _, p := range procfs.All() {
		if p.PGRP == pgid && !p.Zombie() {
			out = append(out, p.PID)
		}
	}
	return out
}
