package process

import (
	"errors"
	"net"
	"strconv"
)

// errNoPort is returned when every port from BasePort up is taken.
var errNoPort = errors.New("no free port")

// claimPort reserves the first free port from BasePort up for a replica;
// startReplica records which. A port is free when no replica of this
// Runtime holds it and listening on it works. Another program may still
// take it before the replica listens; the replica then fails, is restarted
// on the same port with backoff, and its exits are logged. r.mu is held.
func (r *Runtime) claimPort() (int, error) {
	for p := r.opts.BasePort; p <= 65535; p++ {
		if r.ports[p] == nil && portFree(p) {
			return p, nil
		}
	}
	return 0, errNoPort
}

// releasePort makes p available again, unless rep handed it over to the
// replica that replaced it.
func (r *Runtime) releasePort(p int, rep *replica) {
	r.mu.Lock()
	if r.ports[p] == rep {
		delete(r.ports, p)
	}
	r.mu.Unlock()
}

// portFree reports whether listening on 127.0.0.1:p works. It also fails
// when something listens on the wildcard address with that port.
func portFree(p int) bool {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	if err != nil {
		return false
	}
	_ = ln.Close()
	return true
}
