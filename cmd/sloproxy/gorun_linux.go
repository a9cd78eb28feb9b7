package main

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// stopWithGoRun asks the kernel to send this process SIGTERM when its
// parent exits, if that parent is the go command (`go run`): `kill` of go
// run's process then stops the proxy and its models as Ctrl-C does,
// instead of leaving them running on their ports. Call it once SIGTERM is
// handled.
func stopWithGoRun() {
	ppid := os.Getppid()
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", ppid))
	if err != nil || filepath.Base(exe) != "go" {
		return
	}
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_PDEATHSIG, uintptr(syscall.SIGTERM), 0); errno != 0 {
		return
	}
	if os.Getppid() != ppid { // the parent exited before the request
		_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
	}
}
