package answered

import (
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"sync"

	"github.com/cespare/xxhash/v2"

	"github.com/sloproxy/sloproxy/selection"
)

// ring is this proxy's own memory of its latest answered queries, up to
// its size, the oldest forgotten first. It keeps each query's record
// encoded in a byte slice of its own and finds them through maps keyed and
// valued by hashes and slots, so that the garbage collector has one
// object a record to mark and nothing inside it to follow: Go values of
// the same queries hold some fifteen pointers a record, and marking tens
// of thousands of them takes the collector long enough to delay the
// batches in flight (BenchmarkMemoryMark measures the marking).
//
// ring is safe for concurrent use.
type ring struct {
	mu      sync.Mutex
	recs    [][]byte         // by slot; nil: empty
	count   int              // records in recs
	bytes   int              // the sum of their capacities
	next    int              // the slot the next record takes
	byID    map[uint64]int32 // an id's hash to the slot of its query
	byInput map[uint64]int32 // an (app, input) key's hash to the slot of the latest query with it
}

func newRing(size int) *ring {
	return &ring{recs: make([][]byte, size), byID: make(map[uint64]int32, size), byInput: make(map[uint64]int32, size)}
}

// A record: whether it was taken (1 byte), the hash of its input (8), its
// id, app, choice, outputs and shadow's answer; strings length-prefixed
// (uvarint); an optional slice as a 0 byte when nil, else a 1 byte and the
// slice, length-prefixed.
const recTaken = 0

// put remembers query id, of key k, forgetting the oldest when full. It
// reads q under mu, so that a shadow's answer that comes meanwhile is
// either read here or finds the record (shadowed): Memory.Shadowed sets
// it on q before it takes mu.
func (r *ring) put(id string, k inputKey, q *Query) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.claim()
	r.set(s, encodeRec(nil, id, k.hash, q))
	r.byID[xxhash.Sum64String(id)] = s
	r.byInput[keyHash(k)] = s
}

// set puts rec in slot s, counting its bytes; called with mu held.
func (r *ring) set(s int32, rec []byte) {
	if r.recs[s] != nil {
		r.count--
	}
	if rec != nil {
		r.count++
	}
	r.bytes += cap(rec) - cap(r.recs[s])
	r.recs[s] = rec
}

// held returns how many records the ring holds and their bytes.
func (r *ring) held() (n, bytes int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.count, r.bytes
}

// forget empties slot s and the map entries that lead to it; called with
// mu held.
func (r *ring) forget(s int32) {
	old := r.recs[s]
	if old == nil {
		return
	}
	r.set(s, nil)
	id, app, inHash, ok := recHead(old)
	if !ok {
		return
	}
	if h := xxhash.Sum64(id); r.byID[h] == s {
		delete(r.byID, h)
	}
	var d xxhash.Digest
	d.Reset()
	_, _ = d.Write(app)
	if h := keyHashEnd(&d, inHash); r.byInput[h] == s {
		delete(r.byInput, h)
	}
}

// idOf returns the id of the latest remembered query of key k, taken or
// not.
func (r *ring) idOf(k inputKey) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.byInput[keyHash(k)]
	if !ok {
		return "", false
	}
	id, app, inHash, ok := recHead(r.recs[s])
	if !ok || string(app) != k.app || inHash != k.hash {
		return "", false
	}
	return string(id), true
}

// take returns query id of app and marks it taken, so that its feedback
// counts once.
func (r *ring) take(id, app string) (*Query, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, rec, ok := r.find(id)
	if !ok || rec[recTaken] == 1 {
		return nil, false
	}
	q, _, err := decodeRec(rec)
	if err != nil || q.App != app {
		return nil, false
	}
	rec[recTaken] = 1
	return q, true
}

// restore makes query id scorable again after take, in the place it had
// (a restored query is forgotten no later than it would have been); if
// its record was forgotten meanwhile, as the newest, found by id only.
func (r *ring) restore(id string, q *Query) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, rec, ok := r.find(id); ok {
		rec[recTaken] = 0
		return
	}
	s := r.claim()
	r.set(s, encodeRec(nil, id, 0, q))
	r.byID[xxhash.Sum64String(id)] = s
}

// find returns query id's slot and record, taken or not; called with mu
// held.
func (r *ring) find(id string) (int32, []byte, bool) {
	s, ok := r.byID[xxhash.Sum64String(id)]
	if !ok {
		return 0, nil, false
	}
	rec := r.recs[s]
	got, _, _, ok := recHead(rec)
	return s, rec, ok && string(got) == id
}

// claim empties the oldest slot and returns it; called with mu held.
func (r *ring) claim() int32 {
	s := int32(r.next)
	r.next = (r.next + 1) % len(r.recs)
	r.forget(s)
	return s
}

// shadowed records the shadow's answer out to query id, if remembered.
func (r *ring) shadowed(id string, out []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, rec, ok := r.find(id)
	if !ok {
		return
	}
	q, _, err := decodeRec(rec)
	if err != nil {
		return
	}
	q.shadowOut = out
	next := encodeRec(nil, id, binary.LittleEndian.Uint64(rec[1:9]), q)
	next[recTaken] = rec[recTaken]
	r.set(s, next)
}

// keyHash is the hash of an (app, input) key.
func keyHash(k inputKey) uint64 {
	var d xxhash.Digest
	d.Reset()
	_, _ = d.WriteString(k.app)
	return keyHashEnd(&d, k.hash)
}

// keyHashEnd ends a key's hash, d holding its app's name: a 0 byte after
// the name, then the input's hash.
func keyHashEnd(d *xxhash.Digest, inHash uint64) uint64 {
	var b [9]byte
	binary.LittleEndian.PutUint64(b[1:], inHash)
	_, _ = d.Write(b[:])
	return d.Sum64()
}

// encodeRec appends query id's record to b; it reads q's shadow answer
// once, under q's lock.
func encodeRec(b []byte, id string, inHash uint64, q *Query) []byte {
	shadow := q.Shadow()
	b = slices.Grow(b, recSize(id, q, shadow))
	b = append(b, 0)
	b = binary.LittleEndian.AppendUint64(b, inHash)
	b = appendRecString(b, id)
	b = appendRecString(b, q.App)
	c := q.Choice
	b = appendRecList(b, c.Arms, appendRecString)
	b = appendRecList(b, c.Probs, appendRecFloat)
	b = appendRecList(b, c.Weights, appendRecFloat)
	b = appendRecList(b, c.Among, appendRecString)
	b = appendRecString(b, c.Shadow)
	b = binary.AppendUvarint(b, uint64(len(q.Outs)))
	for _, o := range q.Outs {
		b = appendRecBytes(b, o)
	}
	return appendRecBytes(b, shadow)
}

// recSize is about how long q's record is, with its shadow's answer, for
// one allocation: a few bytes more than it takes.
func recSize(id string, q *Query, shadow []byte) int {
	c := q.Choice
	n := 64 + len(id) + len(q.App) + len(c.Shadow) + 8*(len(c.Probs)+len(c.Weights)) + len(shadow)
	for _, ss := range [2][]string{c.Arms, c.Among} {
		for _, s := range ss {
			n += len(s) + 4
		}
	}
	for _, o := range q.Outs {
		n += len(o) + 8
	}
	return n
}

func appendRecString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// appendRecBytes writes a nil slice as a 0 flag, any other as 1 and the
// bytes.
func appendRecBytes(b, p []byte) []byte {
	if p == nil {
		return append(b, 0)
	}
	return append(binary.AppendUvarint(append(b, 1), uint64(len(p))), p...)
}

func appendRecFloat(b []byte, f float64) []byte {
	return binary.LittleEndian.AppendUint64(b, math.Float64bits(f))
}

// appendRecList writes a nil list as a 0 flag, any other as 1, its length
// and each element as each writes it.
func appendRecList[T any](b []byte, list []T, each func([]byte, T) []byte) []byte {
	if list == nil {
		return append(b, 0)
	}
	b = binary.AppendUvarint(append(b, 1), uint64(len(list)))
	for _, e := range list {
		b = each(b, e)
	}
	return b
}

var errRec = errors.New("a remembered query's record is corrupt")

// recReader reads a record; its first error sticks.
type recReader struct {
	b   []byte
	err error
}

func (r *recReader) uvarint() int {
	v, n := binary.Uvarint(r.b)
	if n <= 0 || n > 1 && r.b[n-1] == 0 || v > uint64(len(r.b)) { // none, not the shortest, or longer than the record
		r.err, r.b = errRec, nil
		return 0
	}
	r.b = r.b[n:]
	return int(v)
}

func (r *recReader) bytes(n int) []byte {
	if n > len(r.b) {
		r.err, r.b = errRec, nil
		return nil
	}
	p := r.b[:n:n]
	r.b = r.b[n:]
	return p
}

func (r *recReader) flag() bool {
	p := r.bytes(1)
	if len(p) == 1 && p[0] > 1 {
		r.err, r.b = errRec, nil
	}
	return len(p) == 1 && p[0] == 1
}

func (r *recReader) string() string { return string(r.bytes(r.uvarint())) }

func (r *recReader) optBytes() []byte {
	if !r.flag() {
		return nil
	}
	return append([]byte{}, r.bytes(r.uvarint())...)
}

func (r *recReader) float() float64 {
	if p := r.bytes(8); len(p) == 8 {
		return math.Float64frombits(binary.LittleEndian.Uint64(p))
	}
	return 0
}

// readRecList reads what appendRecList wrote, each element with each.
func readRecList[T any](r *recReader, each func() T) []T {
	if !r.flag() {
		return nil
	}
	list := make([]T, r.uvarint())
	for i := range list {
		list[i] = each()
	}
	return list
}

// recHead reads a record's id, app and input hash, the first two as views
// of the record.
func recHead(rec []byte) (id, app []byte, inHash uint64, ok bool) {
	if len(rec) < 9 {
		return nil, nil, 0, false
	}
	r := recReader{b: rec[9:]}
	id = r.bytes(r.uvarint())
	app = r.bytes(r.uvarint())
	return id, app, binary.LittleEndian.Uint64(rec[1:9]), r.err == nil
}

// decodeRec reads a whole record into a fresh Query, with its id.
func decodeRec(rec []byte) (*Query, string, error) {
	if len(rec) < 9 {
		return nil, "", errRec
	}
	r := recReader{b: rec[9:]}
	id := r.string()
	q := &Query{App: r.string()}
	q.Choice = selection.Choice{Arms: readRecList(&r, r.string), Probs: readRecList(&r, r.float), Weights: readRecList(&r, r.float),
		Among: readRecList(&r, r.string), Shadow: r.string()}
	if n := r.uvarint(); r.err == nil {
		q.Outs = make([][]byte, n)
		for i := range q.Outs {
			q.Outs[i] = r.optBytes()
		}
	}
	q.shadowOut = r.optBytes()
	if r.err != nil || len(r.b) != 0 {
		return nil, "", errRec
	}
	return q, id, nil
}
