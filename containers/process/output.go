package process

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"go.uber.org/zap"
)

// maxLine bounds one line of a replica's output; a longer line is cut into
// pieces of this size.
const maxLine = 4096

// copyOutput reads a process's output until EOF or an error (its pipe
// closed), keeping the last lines in tail and forwarding each line.
func (rep *replica) copyOutput(r io.Reader, tail *tail) {
	br := bufio.NewReaderSize(r, maxLine)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			text := strings.TrimRight(string(line), "\r\n")
			tail.add(text)
			rep.forward(text)
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// forward passes a line of output to Options.Output, or to the log at
// debug level.
func (rep *replica) forward(line string) {
	rt := rep.rt
	if w := rt.opts.Output; w != nil {
		rt.outMu.Lock()
		defer rt.outMu.Unlock()
		_, _ = fmt.Fprintf(w, "%s/%s#%d: %s\n", rep.key.Model, rep.key.Version, rep.index, line)
		return
	}
	if ce := rep.log.Check(zap.DebugLevel, "model output"); ce != nil {
		ce.Write(zap.String("line", line))
	}
}

// tail keeps the last lines written to it.
type tail struct {
	mu    sync.Mutex // guards lines and next
	lines []string   // a ring once full
	next  int        // where the next line goes once full
	max   int
}

func newTail(n int) *tail { return &tail{max: n} }

func (t *tail) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) < t.max {
		t.lines = append(t.lines, line)
		return
	}
	t.lines[t.next] = line
	t.next = (t.next + 1) % t.max
}

// Lines returns the lines kept, oldest first.
func (t *tail) Lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]string, 0, len(t.lines))
	out = append(out, t.lines[t.next:]...)
	return append(out, t.lines[:t.next]...)
}
