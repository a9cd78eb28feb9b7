package proxy

import (
	"sync"

	"github.com/cespare/xxhash/v2"
	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/sloproxy/sloproxy/selection"
)

// DefaultRecentQueries is how many answered queries a proxy remembers for
// feedback when Options.RecentQueries is 0.
const DefaultRecentQueries = 65536

// asked is what a proxy remembers of an answered query for its feedback:
// which arms its policy chose and what each answered.
type asked struct {
	app    string
	choice selection.Choice
	outs   [][]byte // per choice arm; nil: it did not answer

	mu        sync.Mutex // guards shadowOut
	shadowOut []byte     // the shadow's answer, once it came; nil before or without
}

func (q *asked) shadow() []byte {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.shadowOut
}

// recent remembers the latest answered queries, by id and by (app, input),
// in two bounded LRUs (github.com/hashicorp/golang-lru: no goroutines).
type recent struct {
	mu      sync.Mutex // makes take's look-up and removal one step
	byID    *lru.Cache[string, *asked]
	byInput *lru.Cache[inputKey, string]
}

// inputKey names an app's input by a 64-bit hash: a collision would at
// worst score the feedback of one input against another's query.
type inputKey struct {
	app  string
	hash uint64
}

func newRecent(size int) *recent {
	byID, _ := lru.New[string, *asked](size) // errors only for size ≤ 0
	byInput, _ := lru.New[inputKey, string](size)
	return &recent{byID: byID, byInput: byInput}
}

// put remembers query id of app with input.
func (r *recent) put(id string, input []byte, q *asked) {
	r.byID.Add(id, q)
	r.byInput.Add(inputKey{q.app, xxhash.Sum64(input)}, id)
}

// idOf returns the id of the latest query of app with input.
func (r *recent) idOf(app string, input []byte) (string, bool) {
	return r.byInput.Get(inputKey{app, xxhash.Sum64(input)})
}

// take removes and returns query id of app, so that its feedback counts
// once.
func (r *recent) take(id, app string) (*asked, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	q, ok := r.byID.Peek(id)
	if !ok || q.app != app {
		return nil, false
	}
	r.byID.Remove(id)
	return q, true
}

// restore puts back what take removed, when the feedback failed.
func (r *recent) restore(id string, q *asked) { r.byID.Add(id, q) }
