package testutil

import "syscall"

// diesWithTest makes a child of the test binary (a redis-server, a model,
// a proxy, a Prometheus) get SIGKILL when the test binary dies, so that a
// test killed by its timeout leaves no server behind holding a port or a
// lock it inherited.
func diesWithTest() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
