package features

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sloproxy/sloproxy/state"
)

// Outcome is how one query's lookup ended.
type Outcome uint8

// The outcomes of a query's lookup.
const (
	// Found: every field was in the store (or had its default for an
	// entity that exists).
	Found Outcome = iota
	// Defaults: the entity was missing, or the store did not answer, and
	// the UseDefaults policy filled every field.
	Defaults
	// Missing entity under NotFound: the query is answered not found.
	EntityNotFound
	// Missing entity under DefaultOutput: the query gets the app's
	// default output.
	UseDefaultOutput
	// The store did not answer within the timeout under NotFound: the
	// query is answered unavailable, since whether the entity exists is
	// unknown.
	StoreUnavailable
)

// Row is one query's lookup.
type Row struct {
	// Values are the features, encoded in the app's input type as the RPC
	// carries them (little-endian); nil unless Outcome is Found or
	// Defaults.
	Values []byte
	// Outcome says whether the query goes on, and if not, how it is
	// answered.
	Outcome Outcome
	// Why explains an Outcome other than Found.
	Why string
}

// Lookup reads one app's features from its store.
type Lookup struct {
	app     string
	spec    Spec
	keys    []string // the key template's request fields
	names   []string // the hash fields, in order
	client  redis.UniversalClient
	metrics *Metrics
}

// KeyFields returns the request fields a query must carry, in the order
// Fetch takes their values.
func (l *Lookup) KeyFields() []string { return l.keys }

// Fetch looks up the entities of one request's queries in one pipelined
// round trip: entities[i] holds query i's values of KeyFields, in order.
// It returns within the spec's Timeout or ctx's deadline, whichever is
// first; a store that did not answer by then makes every row follow the
// missing-entity policy.
func (l *Lookup) Fetch(ctx context.Context, it state.InputType, entities [][]string) []Row {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, l.spec.timeout())
	defer cancel()
	pipe := l.client.Pipeline()
	cmds := make([]*redis.SliceCmd, len(entities))
	for i, e := range entities {
		cmds[i] = pipe.HMGet(ctx, l.key(e), l.names...)
	}
	_, err := pipe.Exec(ctx)
	l.metrics.latency.WithLabelValues(l.app).Observe(time.Since(start).Seconds())
	rows := make([]Row, len(entities))
	if err != nil && err != redis.Nil {
		l.metrics.errors.WithLabelValues(l.app).Inc()
		for i := range rows {
			rows[i] = l.miss(it, fmt.Sprintf("the feature store did not answer within %v: %v", l.spec.timeout(), err), true)
		}
		return rows
	}
	for i, cmd := range cmds {
		rows[i] = l.row(it, cmd.Val(), entities[i])
	}
	return rows
}

// key builds an entity's key from the template.
func (l *Lookup) key(values []string) string {
	return placeholder.ReplaceAllStringFunc(l.spec.Key, func(m string) string {
		name := m[1 : len(m)-1]
		for i, k := range l.keys {
			if k == name {
				return values[i]
			}
		}
		return m
	})
}

// row turns one entity's HMGET answer into its row.
func (l *Lookup) row(it state.InputType, vals []any, entity []string) Row {
	b := make([]byte, 0, len(vals)*8)
	found, defaults := 0, 0
	for i, f := range l.spec.Fields {
		s, ok := vals[i].(string)
		v, err := parse(s, f.Type)
		switch {
		case ok && err == nil:
			found++
		case f.Default != nil:
			v = *f.Default
			defaults++
		default:
			why := fmt.Sprintf("feature %q of %s is missing", f.Name, l.key(entity))
			if ok {
				why = fmt.Sprintf("feature %q of %s is %q: %v", f.Name, l.key(entity), s, err)
			}
			l.metrics.misses.WithLabelValues(l.app).Inc()
			return l.miss(it, why, false)
		}
		b = appendValue(b, it, v)
	}
	if found == 0 {
		l.metrics.misses.WithLabelValues(l.app).Inc()
		return l.miss(it, fmt.Sprintf("no entity %s in the feature store", l.key(entity)), false)
	}
	if defaults > 0 {
		l.metrics.defaults.WithLabelValues(l.app).Add(float64(defaults))
	}
	return Row{Values: b}
}

// miss is the row of a query whose entity is missing (or unknown, when
// the store did not answer), by the spec's policy.
func (l *Lookup) miss(it state.InputType, why string, storeDown bool) Row {
	switch l.spec.missing() {
	case NotFound:
		if storeDown {
			return Row{Outcome: StoreUnavailable, Why: why}
		}
		return Row{Outcome: EntityNotFound, Why: why}
	case DefaultOutput:
		return Row{Outcome: UseDefaultOutput, Why: why}
	}
	b := make([]byte, 0, len(l.spec.Fields)*8)
	for _, f := range l.spec.Fields {
		b = appendValue(b, it, *f.Default)
	}
	l.metrics.defaults.WithLabelValues(l.app).Add(float64(len(l.spec.Fields)))
	return Row{Values: b, Outcome: Defaults, Why: why}
}

// Assemble returns the model's input: the request's own encoded values
// and the looked-up ones, placed as the spec says.
func (l *Lookup) Assemble(input, values []byte) []byte {
	out := make([]byte, 0, len(input)+len(values))
	if l.spec.Into == Prepend {
		return append(append(out, values...), input...)
	}
	return append(append(out, input...), values...)
}

// parse reads a field's text as its type.
func parse(s, typ string) (float64, error) {
	switch typ {
	case TypeInt:
		v, err := strconv.ParseInt(strings.TrimSpace(s), 10, 32)
		return float64(v), err
	case TypeBool:
		switch strings.TrimSpace(s) {
		case "1", "true":
			return 1, nil
		case "0", "false":
			return 0, nil
		}
		return 0, fmt.Errorf("not a bool (0, 1, true, false)")
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err == nil && (math.IsNaN(v) || math.IsInf(v, 0)) {
		return 0, fmt.Errorf("not a finite number")
	}
	return v, err
}

// appendValue appends v in the input type's little-endian encoding; a
// float32 beyond its range saturates, as a feature pipeline's overflow
// is not the query's fault.
func appendValue(b []byte, it state.InputType, v float64) []byte {
	switch it {
	case state.InputFloat64:
		return binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
	case state.InputInt32:
		return binary.LittleEndian.AppendUint32(b, uint32(int32(v)))
	}
	return binary.LittleEndian.AppendUint32(b, math.Float32bits(float32(v)))
}
