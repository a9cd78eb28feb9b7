package answered

import (
	"sync"

	"github.com/sloproxy/sloproxy/selection"
)

// Query is what a proxy remembers of an answered query for its feedback:
// which arms its app's policy chose and what each answered, and the
// shadow's answer once it comes.
type Query struct {
	App    string
	Choice selection.Choice
	Outs   [][]byte // per choice arm; nil: it did not answer

	mu        sync.Mutex // guards shadowOut
	shadowOut []byte     // the shadow's answer, once it came; nil before or without
}

// Shadow is the shadow's answer, nil before it came or without a shadow.
func (q *Query) Shadow() []byte {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.shadowOut
}
