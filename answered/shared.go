package answered

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/sloproxy/sloproxy/internal/writeback"
	"github.com/sloproxy/sloproxy/selection"
)

// DefaultSharedTTL is how long a query stays in Redis for feedback
// through any proxy when Options.TTL is 0.
const DefaultSharedTTL = 10 * time.Minute

// DefaultSharedSize is how many answered queries Redis keeps, across the
// proxies sharing it, when Options.SharedSize is 0.
const DefaultSharedSize = 1_000_000

const (
	sharedQueue   = 8192 // writes waiting for the writer; more are dropped
	sharedBatch   = 256  // writes in one pipeline
	sharedTimeout = 2 * time.Second
)

// Errors of the look-ups in Redis.
var (
	// ErrUnavailable: Redis could not be reached.
	ErrUnavailable = errors.New("the answered queries could not be read")
	// ErrUnreadable: Redis holds a record of the query that is not a
	// query record; the query stays taken.
	ErrUnreadable = errors.New("the query's record in Redis is not a query record")
)

// sharedRecord is an answered query as Redis keeps it: field "q" of its
// hash, beside its app ("a") and the shadow's answer ("s", written when it
// comes).
type sharedRecord struct {
	Arms    []string  `json:"arms"`
	Probs   []float64 `json:"probs,omitempty"`
	Weights []float64 `json:"weights,omitempty"`
	Among   []string  `json:"among,omitempty"`
	Shadow  string    `json:"shadow,omitempty"`
	Outs    [][]byte  `json:"outs"`
}

// sharedWrite is one write on its way to Redis: a query (q set) with its
// input's key, or a shadow's answer (shadow set).
type sharedWrite struct {
	id     string
	q      *Query
	input  inputKey
	shadow []byte
}

// writeScript sets fields of the query hash KEYS[1] (ARGV[2], ARGV[3], …)
// and its expiry (ARGV[1] ms), unless its feedback was taken already
// (field "t"): a write that comes after the feedback cannot make the query
// scorable again.
var writeScript = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], 't') == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
`)

// takeScript marks the query hash KEYS[1] taken (field "t", expiring in
// ARGV[1] ms) and returns its query and shadow fields when it holds a
// query of app ARGV[2]; "taken" when it was taken before; nil when it
// holds no query of that app. With ARGV[2] empty it only marks it (and
// answers "marked"). One script: a query is scored once across proxies.
var takeScript = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], 't') == 1 then return 'taken' end
if ARGV[2] == '' then
  redis.call('HSET', KEYS[1], 't', '1')
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  return 'marked'
end
local v = redis.call('HMGET', KEYS[1], 'q', 's', 'a')
if not v[1] or v[3] ~= ARGV[2] then return false end
redis.call('HSET', KEYS[1], 't', '1')
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return {v[1], v[2]}
`)

// orderScript appends the entries ARGV[2], ARGV[3], … to the list
// KEYS[1], the order in which the proxies wrote their queries, and pops
// and returns its oldest entries beyond ARGV[1]: the queries to forget.
// One script on one key: the proxies sharing the Redis together keep
// exactly that many.
var orderScript = redis.NewScript(`
local n = redis.call('RPUSH', KEYS[1], unpack(ARGV, 2))
local over = n - tonumber(ARGV[1])
if over > 0 then return redis.call('LPOP', KEYS[1], over) end
return {}
`)

// forgetInputScript deletes the input's key KEYS[1] if it still names
// query ARGV[1], not a later query of the same input.
var forgetInputScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
`)

// shared is the Redis side of a Memory: a writer goroutine that mirrors
// what Put records, and the look-ups feedback makes through any proxy.
type shared struct {
	rdb    redis.UniversalClient
	prefix string
	ttl    time.Duration
	size   int                           // how many queries Redis keeps, across proxies
	writes *writeback.Queue[sharedWrite] // run by Memory.Run
	log    *zap.Logger

	dropped prometheus.Counter
	errors  *prometheus.CounterVec
}

func newShared(o Options, reg prometheus.Registerer, log *zap.Logger) *shared {
	if o.TTL <= 0 {
		o.TTL = DefaultSharedTTL
	}
	if o.SharedSize <= 0 {
		o.SharedSize = DefaultSharedSize
	}
	s := &shared{rdb: o.Redis, prefix: o.Prefix + "recent:", ttl: o.TTL, size: o.SharedSize, log: log,
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sloproxy_feedback_shared_dropped_total",
			Help: "Answered queries not mirrored in Redis because its writer was behind: their feedback reaches only the proxy that answered.",
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sloproxy_feedback_shared_errors_total",
			Help: "Redis calls of the shared recent queries that failed or returned a record that is not a query record, by operation (write, take, lookup, restore).",
		}, []string{"op"}),
	}
	s.writes = writeback.New(sharedQueue, sharedBatch, sharedTimeout, s.write)
	reg.MustRegister(s.dropped, s.errors)
	return s
}

func (s *shared) queryKey(id string) string { return s.prefix + "q:" + id }

func (s *shared) orderKey() string { return s.prefix + "order" }

func (s *shared) inputKey(k inputKey) string {
	return s.prefix + "in:" + k.app + ":" + strconv.FormatUint(k.hash, 16)
}

// enqueue hands w to the writer without waiting: a query never waits on
// Redis for its feedback's sake. When the writer is behind or has
// stopped, w is dropped and counted.
func (s *shared) enqueue(w sharedWrite) {
	if !s.writes.Offer(w) {
		s.dropped.Inc()
	}
}

// write sends batch to Redis in one pipeline: for each query one script
// call (its record, app and, if it came already, the shadow's answer) and
// its input's key; for each later shadow answer one script call; then the
// queries' order entries, which returns the oldest queries beyond
// s.size, forgotten in a second pipeline. Each script touches one key,
// so that the keys may lie on different masters of a Cluster.
func (s *shared) write(ctx context.Context, batch []sharedWrite) {
	ctx, cancel := context.WithTimeout(ctx, sharedTimeout)
	defer cancel()
	ttl := strconv.FormatInt(s.ttl.Milliseconds(), 10)
	var forget *redis.Cmd
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		order := []any{s.size}
		for _, w := range batch {
			key := []string{s.queryKey(w.id)}
			if w.q == nil {
				writeScript.Eval(ctx, p, key, ttl, "s", w.shadow)
				continue
			}
			args := []any{ttl, "q", encodeShared(w.q), "a", w.q.App}
			if out := w.q.Shadow(); out != nil {
				args = append(args, "s", out)
			}
			writeScript.Eval(ctx, p, key, args...)
			in := s.inputKey(w.input)
			p.Set(ctx, in, w.id, s.ttl)
			order = append(order, w.id+orderSep+in)
		}
		if len(order) > 1 {
			forget = orderScript.Eval(ctx, p, []string{s.orderKey()}, order...)
		}
		return nil
	})
	if err == nil && forget != nil {
		err = s.forget(ctx, forget)
	}
	if err != nil {
		s.errors.WithLabelValues("write").Inc()
		s.log.Warn("feedback: mirroring answered queries in Redis failed; their feedback reaches only this proxy",
			zap.Int("queries", len(batch)), zap.Error(err))
	}
}

// orderSep separates a query's id from its input's key in an order
// entry; neither holds it.
const orderSep = "\n"

// forget removes the queries that the order script popped: each one's
// record, and its input's key unless a later query took it over.
func (s *shared) forget(ctx context.Context, popped *redis.Cmd) error {
	entries, err := popped.StringSlice()
	if err != nil || len(entries) == 0 {
		return err
	}
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, e := range entries {
			id, in, _ := strings.Cut(e, orderSep)
			p.Unlink(ctx, s.queryKey(id))
			forgetInputScript.Eval(ctx, p, []string{in}, id)
		}
		return nil
	})
	return err
}

func encodeShared(q *Query) []byte {
	c := q.Choice
	b, _ := json.Marshal(sharedRecord{Arms: c.Arms, Probs: c.Probs, Weights: c.Weights, Among: c.Among, Shadow: c.Shadow, Outs: q.Outs})
	return b
}

func decodeShared(raw, app string) (*Query, error) {
	var r sharedRecord
	if err := json.Unmarshal([]byte(raw), &r); err != nil {
		return nil, err
	}
	if len(r.Arms) == 0 || len(r.Outs) != len(r.Arms) || len(r.Probs) != len(r.Arms) || (r.Weights != nil && len(r.Weights) != len(r.Arms)) {
		return nil, errors.New("its arms, outputs and probabilities differ in number")
	}
	return &Query{App: app, Outs: r.Outs,
		Choice: selection.Choice{Arms: r.Arms, Probs: r.Probs, Weights: r.Weights, Among: r.Among, Shadow: r.Shadow}}, nil
}

// sharedState is what Redis holds of a query for feedback.
type sharedState int

const (
	sharedAbsent sharedState = iota // no query of the app: unknown, expired, or not yet written
	sharedTaken                     // its feedback was taken already
	sharedFound                     // returned, and now taken
)

// take returns query id of app and marks it taken in Redis.
func (s *shared) take(ctx context.Context, id, app string) (*Query, sharedState, error) {
	res, err := takeScript.Run(ctx, s.rdb, []string{s.queryKey(id)}, s.ttl.Milliseconds(), app).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return nil, sharedAbsent, nil
	case err != nil:
		s.errors.WithLabelValues("take").Inc()
		return nil, sharedAbsent, fmt.Errorf("%w: taking query %q from Redis: %v", ErrUnavailable, id, err)
	}
	fields, ok := res.([]any)
	if !ok {
		return nil, sharedTaken, nil
	}
	raw, _ := fields[0].(string)
	q, err := decodeShared(raw, app)
	if err != nil {
		s.errors.WithLabelValues("take").Inc()
		return nil, sharedAbsent, fmt.Errorf("query %q cannot be scored: %w (%v), and stays taken", id, ErrUnreadable, err)
	}
	if len(fields) > 1 {
		if out, ok := fields[1].(string); ok {
			q.shadowOut = []byte(out)
		}
	}
	return q, sharedFound, nil
}

// mark marks query id taken in Redis, so that a write of it still on its
// way cannot make it scorable again; it reports whether it was taken
// before.
func (s *shared) mark(ctx context.Context, id string) (taken bool, err error) {
	res, err := takeScript.Run(ctx, s.rdb, []string{s.queryKey(id)}, s.ttl.Milliseconds(), "").Text()
	if err != nil {
		s.errors.WithLabelValues("take").Inc()
		return false, fmt.Errorf("%w: marking query %q taken in Redis: %v", ErrUnavailable, id, err)
	}
	return res == "taken", nil
}

// restore makes query id scorable again after a failed feedback.
func (s *shared) restore(ctx context.Context, id string) error {
	if err := s.rdb.HDel(ctx, s.queryKey(id), "t").Err(); err != nil {
		s.errors.WithLabelValues("restore").Inc()
		return fmt.Errorf("restoring query %q in Redis: %w", id, err)
	}
	return nil
}

// idOf returns the id of the latest query with input k, as any proxy
// recorded it.
func (s *shared) idOf(ctx context.Context, k inputKey) (string, bool, error) {
	id, err := s.rdb.Get(ctx, s.inputKey(k)).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return "", false, nil
	case err != nil:
		s.errors.WithLabelValues("lookup").Inc()
		return "", false, fmt.Errorf("%w: looking the input up in Redis: %v", ErrUnavailable, err)
	}
	return id, true, nil
}
