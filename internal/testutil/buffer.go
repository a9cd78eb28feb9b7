package testutil

import (
	"strings"
	"sync"
)

// Buffer collects text from concurrent writers: a child's stdout and
// stderr, a logger, a runtime's output.
type Buffer struct {
	mu sync.Mutex // guards b
	b  strings.Builder
}

func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns what was written so far.
func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
