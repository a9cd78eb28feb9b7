package process

import (
	"os/exec"
	goruntime "runtime"
)

// starter starts the replicas' processes from one goroutine locked to its
// OS thread for the Runtime's whole life. Linux sends a process's parent-death
// signal (Pdeathsig, see sysProcAttr) when the thread that forked it exits,
// not the whole parent; a process forked from an ordinary goroutine would
// be killed whenever the Go scheduler retired that thread, which it does
// when some other goroutine locked to it ends. The starter's thread ends
// only after Close, once every replica has stopped.
type starter struct {
	reqs chan startReq
	done chan struct{} // closed when the goroutine has returned
}

type startReq struct {
	cmd   *exec.Cmd
	reply chan<- error
}

func newStarter() *starter {
	s := &starter{reqs: make(chan startReq), done: make(chan struct{})}
	go s.loop()
	return s
}

func (s *starter) loop() {
	defer close(s.done)
	// Never unlocked: the thread exits with the goroutine, after the last
	// process it started has been reaped.
	goruntime.LockOSThread()
	for req := range s.reqs {
		req.reply <- req.cmd.Start()
	}
}

// start runs cmd.Start on the starter's thread. It must not be called
// after close.
func (s *starter) start(cmd *exec.Cmd) error {
	reply := make(chan error, 1)
	s.reqs <- startReq{cmd: cmd, reply: reply}
	return <-reply
}

// close ends the starter's goroutine and waits for it.
func (s *starter) close() {
	close(s.reqs)
	<-s.done
}
