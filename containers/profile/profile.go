// Package profile measures a model version's replicas before the version
// takes traffic: it drives them through the RPC client (containers/rpc)
// with a warm-up, then batches of 1, 2, 4, ... items up to the version's
// batch limit, and returns a state.Profile: per batch size the median and
// 99th percentile latency and the throughput of one replica, and the line
// latency(n) ≈ a + b·n fitted to the fastest batches. The admin API stores the
// profile with the version and gates moving traffic on it; the dispatcher
// pool seeds the version's latency fit from it (slo.Fit.Seed).
package profile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/sloproxy/sloproxy/containers/rpc"
	"github.com/sloproxy/sloproxy/containers/runtime"
	"github.com/sloproxy/sloproxy/internal/linefit"
	"github.com/sloproxy/sloproxy/state"
)

// Defaults of Options.
const (
	// DefaultRepeats is how many batches of each size each replica sends.
	DefaultRepeats = 10
	// DefaultSizeBudget bounds the time one batch size takes, once
	// minRepeats batches of it were timed.
	DefaultSizeBudget = time.Second
	// DefaultWarmup is how many untimed batches of one item, then of the
	// largest size, each replica sends first.
	DefaultWarmup = 2
	// DefaultBatchTimeout bounds each batch.
	DefaultBatchTimeout = 10 * time.Second
)

// minRepeats is how many batches of a size are timed at least, whatever
// the size budget: fewer tell no median.
const minRepeats = 3

// Options say what to send.
type Options struct {
	// InputType is the version's input type; the replicas' HELLO must
	// agree.
	InputType rpc.InputType
	// Inputs are the items sent, in turn; at least one.
	Inputs [][]byte
	// MaxBatch is the largest batch size profiled, the version's batch
	// limit; a smaller limit in a replica's HELLO wins. Sizes are the
	// powers of two below it, and it.
	MaxBatch int
	// Repeats is how many batches of each size each replica sends; 0
	// means DefaultRepeats.
	Repeats int
	// SizeBudget bounds the time spent on one size once minRepeats
	// batches of it were timed; 0 means DefaultSizeBudget.
	SizeBudget time.Duration
	// Warmup is how many untimed batches of each of 1 and the largest size
	// each replica sends first; 0 means DefaultWarmup.
	Warmup int
	// BatchTimeout bounds each batch; 0 means DefaultBatchTimeout.
	BatchTimeout time.Duration
	// Secret is the version's RPC secret, proved to replicas that ask for
	// it (docs/rpc.md, "Authentication"); nil for replicas that ask none.
	Secret []byte
}

func (o *Options) setDefaults() {
	if o.Repeats <= 0 {
		o.Repeats = DefaultRepeats
	}
	if o.SizeBudget <= 0 {
		o.SizeBudget = DefaultSizeBudget
	}
	if o.Warmup <= 0 {
		o.Warmup = DefaultWarmup
	}
	if o.BatchTimeout <= 0 {
		o.BatchTimeout = DefaultBatchTimeout
	}
}

// Sizes are the batch sizes profiled up to limit: 1, 2, 4, ..., and limit.
func Sizes(limit int) []int {
	var sizes []int
	for n := 1; n < limit; n *= 2 {
		sizes = append(sizes, n)
	}
	return append(sizes, max(1, limit))
}

// Run profiles the replicas at addrs, all at once (as they serve under
// load), and returns what they measured; Profile.Input is left for the
// caller to say. It fails if any replica cannot be reached, answers with
// an ERROR frame, or ctx ends.
func Run(ctx context.Context, addrs []string, opts Options) (state.Profile, error) {
	opts.setDefaults()
	switch {
	case len(addrs) == 0:
		return state.Profile{}, errors.New("no live replica to profile")
	case len(opts.Inputs) == 0:
		return state.Profile{}, errors.New("no input to send")
	case opts.MaxBatch < 1:
		return state.Profile{}, fmt.Errorf("batch limit %d: must be at least 1", opts.MaxBatch)
	}
	results := make([]replicaResult, len(addrs))
	var wg sync.WaitGroup
	for i, addr := range addrs {
		wg.Go(func() { results[i] = profileReplica(ctx, addr, opts) })
	}
	wg.Wait()
	samples := map[int][]time.Duration{}
	p := state.Profile{At: time.Now().UTC(), Replicas: len(addrs)}
	for i, r := range results {
		if r.err != nil {
			return state.Profile{}, fmt.Errorf("replica %s: %w", addrs[i], r.err)
		}
		p.ItemErrors += r.itemErrors
		for n, s := range r.samples {
			samples[n] = append(samples[n], s...)
		}
	}
	for _, n := range slices.Sorted(maps.Keys(samples)) {
		p.Lines = append(p.Lines, line(n, samples[n]))
	}
	p.A, p.B, p.Tail = fitLines(p.Lines)
	return p, nil
}

// replicaResult is what one replica measured: latencies by batch size.
type replicaResult struct {
	samples    map[int][]time.Duration
	itemErrors int
	err        error
}

// profileReplica sends one replica the warm-up and the timed batches, one
// at a time.
func profileReplica(ctx context.Context, addr string, opts Options) replicaResult {
	c := rpc.NewClient(addr, rpc.ClientOptions{Secret: opts.Secret})
	c.Start(ctx)
	defer c.Close()
	ready, cancel := context.WithTimeout(ctx, opts.BatchTimeout)
	hello, err := c.WaitReady(ready)
	cancel()
	if err != nil {
		return replicaResult{err: fmt.Errorf("connect: %w", err)}
	}
	if hello.InputType != opts.InputType {
		return replicaResult{err: fmt.Errorf("the replica takes %v, the version %v", hello.InputType, opts.InputType)}
	}
	limit := opts.MaxBatch
	if hello.MaxBatch > 0 {
		limit = min(limit, int(hello.MaxBatch))
	}
	r := replicaResult{samples: map[int][]time.Duration{}}
	next := 0 // the next input to send
	send := func(n int) (time.Duration, error) {
		batch := make([][]byte, n)
		for i := range batch {
			batch[i] = opts.Inputs[next%len(opts.Inputs)]
			next++
		}
		bctx, cancel := context.WithTimeout(ctx, opts.BatchTimeout)
		defer cancel()
		start := time.Now()
		outs, err := c.Predict(bctx, opts.InputType, batch)
		took := time.Since(start)
		if err != nil {
			return 0, fmt.Errorf("batch of %d: %w", n, err)
		}
		for _, o := range outs {
			if o.Err != "" {
				r.itemErrors++
			}
		}
		return took, nil
	}
	for _, n := range []int{1, limit} {
		for range opts.Warmup {
			if _, err := send(n); err != nil {
				return replicaResult{err: fmt.Errorf("warm-up: %w", err)}
			}
		}
	}
	r.itemErrors = 0 // the warm-up's do not count
	for _, n := range Sizes(limit) {
		start := time.Now()
		for i := range opts.Repeats {
			if i >= minRepeats && time.Since(start) > opts.SizeBudget {
				break
			}
			took, err := send(n)
			if err != nil {
				return replicaResult{err: err}
			}
			r.samples[n] = append(r.samples[n], took)
		}
	}
	return r
}

// line summarizes the latencies of batches of n items.
func line(n int, lat []time.Duration) state.ProfileLine {
	slices.Sort(lat)
	var sum time.Duration
	for _, l := range lat {
		sum += l
	}
	l := state.ProfileLine{Batch: n, Samples: len(lat), Min: lat[0], P50: rank(lat, 0.5), P99: rank(lat, 0.99)}
	if mean := sum.Seconds() / float64(len(lat)); mean > 0 {
		l.Throughput = float64(n) / mean
	}
	return l
}

// rank is the q-quantile of sorted by the nearest-rank method: the
// smallest sample with at least a q share of the samples at or below it.
func rank(sorted []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// fitLines fits latency(n) = a + b·n by least squares to the lines'
// fastest batches, one point per size, so that no size weighs more for
// having more samples. The fastest, not the median or the mean: what
// delays a batch besides the model's own work (a processor shared with
// other work, a timer that wakes late, a collector's pause) only adds to
// its latency, strikes batches of every size alike and varies from run to
// run, so it belongs in the tail, not in a and b. The tail is the largest
// excess of a line's p99 over the fitted line. A single size gives b = 0.
func fitLines(lines []state.ProfileLine) (a, b, tail time.Duration) {
	var s linefit.Sums
	for _, l := range lines {
		s.Add(float64(l.Batch), l.Min.Seconds())
	}
	fit := s.Line()
	fb := fit.B
	fa := max(0, fit.MeanY-fb*fit.MeanX)
	var ft float64
	for _, l := range lines {
		ft = max(ft, l.P99.Seconds()-(fa+fb*float64(l.Batch)))
	}
	sec := func(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
	return sec(fa), sec(fb), sec(ft)
}

// Profiler profiles the model versions of the state: it chooses their
// inputs, encodes them with Encode, and runs Run with the version's batch
// limit. It implements proxy/admin's Profiler.
type Profiler struct {
	// Encode turns one JSON input, as a query sends it, into the RPC item
	// of input type it (the query API's encoding). Required.
	Encode func(raw json.RawMessage, it state.InputType) ([]byte, error)
	// DefaultBatch is the batch limit of versions that set none (the
	// configuration's limits.default_batch_size). Required.
	DefaultBatch int
	// RPCKey derives each swarm version's RPC secret (rpc.DeriveSecret),
	// as the proxy's dispatchers do; nil means swarm replicas, which ask
	// for it, cannot be profiled.
	RPCKey []byte
	// Options are Run's, but for the input type, inputs, batch limit,
	// secret and (when the request names them) repeats, which each
	// profile sets.
	Options Options
}

// Profile profiles version v over its live replicas: with inputs (JSON
// inputs as queries send them) when there are any, else v's
// ExampleInput, else one empty input. repeats > 0 replaces
// Options.Repeats. Errors wrap state.ErrInvalid for an input v cannot
// take or a replica refuses (see refused), state.ErrConflict when no
// replica is live, and state.ErrUnavailable when a replica fails
// otherwise.
func (p Profiler) Profile(ctx context.Context, v state.ModelVersion, replicas []string, inputs []json.RawMessage, repeats int) (state.Profile, error) {
	if len(replicas) == 0 {
		return state.Profile{}, fmt.Errorf("%w: no live replica to profile; `sloproxy models get %s` shows when they are", state.ErrConflict, v.Model)
	}
	it, err := rpc.ParseInputType(string(v.InputType))
	if err != nil {
		return state.Profile{}, fmt.Errorf("%w: %v", state.ErrInvalid, err)
	}
	source, what := "request", "inputs"
	switch {
	case len(inputs) > 0:
	case len(v.ExampleInput) > 0:
		source, what, inputs = "example", "example_input", []json.RawMessage{v.ExampleInput}
	default:
		source = "empty"
	}
	opts := p.Options
	opts.InputType, opts.MaxBatch = it, v.BatchSize
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = p.DefaultBatch
	}
	if repeats > 0 {
		opts.Repeats = repeats
	}
	opts.Secret = runtime.Secret(p.RPCKey, v.Runtime.Kind, v.Model, v.Version)
	opts.Inputs = [][]byte{{}}
	if source != "empty" {
		opts.Inputs = make([][]byte, len(inputs))
		for i, raw := range inputs {
			if opts.Inputs[i], err = p.Encode(raw, v.InputType); err != nil {
				return state.Profile{}, fmt.Errorf("%w: %s[%d]: %v", state.ErrInvalid, what, i, err)
			}
		}
	}
	prof, err := Run(ctx, replicas, opts)
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return state.Profile{}, ctx.Err()
	case refused(err):
		return state.Profile{}, fmt.Errorf("%w: the model refused the input: %v", state.ErrInvalid, err)
	default:
		return state.Profile{}, replicaError{err}
	}
	prof.Input = source
	return prof, nil
}

// refused reports whether err is a replica's refusal of the input (an
// ERROR frame BAD_REQUEST, WRONG_INPUT_TYPE or MODEL_ERROR): profiling
// again with the same input fails the same way.
func refused(err error) bool {
	var e *rpc.Error
	if !errors.As(err, &e) {
		return false
	}
	return e.Code == rpc.BadRequest || e.Code == rpc.WrongInputType || e.Code == rpc.ModelError
}

// replicaError is a replica that could not be profiled for a reason other
// than its input. errors.Is finds state.ErrUnavailable in it (the admin
// API answers 503: the replica may be back soon), but its message names
// the replica's failure, not the state backend.
type replicaError struct{ err error }

func (e replicaError) Error() string        { return "profiling failed: " + e.err.Error() }
func (e replicaError) Unwrap() error        { return e.err }
func (e replicaError) Is(target error) bool { return target == state.ErrUnavailable }
