package procfs

import (
	"os"
	"syscall"
	"testing"
)

// TestAllFindsThisProcess: the test binary is listed with its own parent
// and group.
func TestAllFindsThisProcess(t *testing.T) {
	pgrp, err := syscall.Getpgid(0)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range All() {
		if s.PID == os.Getpid() {
			if s.PPID != os.Getppid() || s.PGRP != pgrp || s.Zombie() {
				t.Errorf("%+v; want parent %d, group %d, not a zombie", s, os.Getppid(), pgrp)
			}
			return
		}
	}
	t.Fatalf("pid %d not among /proc's processes", os.Getpid())
}
