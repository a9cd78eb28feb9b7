package docker

import (
	"errors"
	"fmt"
	"strings"
)

// ErrClosed is returned by Ensure after Close.
var ErrClosed = errors.New("docker runtime closed")

// ErrImageNotFound is wrapped by the error of Ensure when the Engine has no
// image of the spec's name. There is no pulling: build or load the image on
// the Engine first.
var ErrImageNotFound = errors.New("image not found on the Docker Engine")

// ContainerError is why a replica's container did not become ready (it
// exited, or did not answer a HELLO and a warm-up request in time) or
// stopped serving (it died, or missed its heartbeats). Logs holds its last
// lines of output, which usually say why.
type ContainerError struct {
	Container string // the container's name
	Reason    string // what happened, such as "exited with status 1"
	Logs      []string
}

func (e *ContainerError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "container %s %s", e.Container, e.Reason)
	if len(e.Logs) == 0 {
		b.WriteString(" (no output)")
		return b.String()
	}
	b.WriteString("; its last lines of output:")
	for _, l := range e.Logs {
		b.WriteString("\n  ")
		b.WriteString(l)
	}
	return b.String()
}
