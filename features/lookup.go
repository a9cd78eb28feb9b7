package features

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
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
	// The store did not answer within the timeout under NotFound, or the
	// lookup cannot serve on this proxy: the query is answered
	// unavailable, since whether the entity exists is unknown.
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
	// Why explains an Outcome other than Found and Defaults; "" for those.
	Why string
}

// Lookup reads one app's features from its store.
type Lookup struct {
	app     string
	spec    Spec
	keys    []string  // the key template's request fields
	parts   []keyPart // the key template, parsed
	args    []any     // HMGET's arguments, the key (args[1]) left nil
	client  redis.UniversalClient
	metrics appMetrics
	broken  error // why this lookup cannot serve, nil when it can
	// at is the byte offset in the request's own input where the values
	// go, -1 for its end: set by placedIn for the app the lookup serves.
	at int
	// carried are the parts of the app's layout a request carries, all
	// but the one the values fill; nil without a layout. Set by placedIn.
	carried []state.InputPart
}

// newLookup returns app's lookup of spec in the store client.
func newLookup(app string, spec Spec, client redis.UniversalClient, m *Metrics) *Lookup {
	keys := spec.KeyFields()
	args := make([]any, 2, 2+len(spec.Fields))
	args[0] = "hmget"
	for _, f := range spec.Fields {
		args = append(args, f.Name)
	}
	return &Lookup{app: app, spec: spec, keys: keys, parts: parseKey(spec.Key, keys), args: args, client: client, metrics: m.forApp(app)}
}

// placedIn returns a copy of l that places its values in app's input as
// the spec says (appended, prepended, or at the offset of the part it
// fills), for a spec Validate passed for app.
func (l *Lookup) placedIn(app state.App) *Lookup {
	placed := *l
	if app.Inputs != nil {
		placed.carried = slices.DeleteFunc(slices.Clone(app.Inputs), func(p state.InputPart) bool { return p.Name == l.spec.Input })
	}
	switch {
	case l.spec.Input != "":
		_, offset, _ := app.Part(l.spec.Input)
		placed.at = offset * app.InputType.ElemSize()
	case l.spec.Into == Prepend:
		placed.at = 0
	default:
		placed.at = -1
	}
	return &placed
}

// newBroken returns app's lookup of a spec that cannot serve here, for
// the reason err: its queries get the app's default output under
// DefaultOutput and are answered unavailable otherwise, with err.
func newBroken(app string, spec Spec, err error, m *Metrics) *Lookup {
	return &Lookup{app: app, spec: spec, keys: spec.KeyFields(), metrics: m.forApp(app), broken: err}
}

// Input returns the part of the app's input layout the values fill; ""
// when they are appended or prepended.
func (l *Lookup) Input() string { return l.spec.Input }

// Carried returns the parts of the app's input layout a request carries:
// all but the one the values fill; nil when the app has no layout, or
// the lookup cannot serve (then its queries are answered before their
// input is used).
func (l *Lookup) Carried() []state.InputPart { return l.carried }

// KeyFields returns the request fields a query must carry, in the order
// Fetch takes their values.
func (l *Lookup) KeyFields() []string { return l.keys }

// Fetch looks up the entities of one request's queries: entities[i] holds
// query i's values of KeyFields, in order, in one pipeline of HMGETs: one
// round trip per request, however many queries it holds, on a connection
// of the client's pool. It returns within the spec's Timeout or by
// deadline (the queries' own), whichever is first, the wait for a free
// connection included, as the store's client bounds each call by its
// context (ContextTimeoutEnabled); an entity whose reply did not come by
// then follows the missing-entity policy.
func (l *Lookup) Fetch(ctx context.Context, deadline time.Time, it state.InputType, entities [][]string) []Row {
	if l.broken != nil {
		// The configuration's fault, not the store's: no store error.
		row := Row{Outcome: StoreUnavailable, Why: l.broken.Error()}
		if l.spec.missing() == DefaultOutput {
			row.Outcome = UseDefaultOutput
		}
		rows := make([]Row, len(entities))
		for i := range rows {
			rows[i] = row
		}
		return rows
	}
	start := time.Now()
	defer func() { l.metrics.latency.Observe(time.Since(start).Seconds()) }()
	if until := start.Add(l.spec.timeout()); until.Before(deadline) {
		deadline = until
	}
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	rows := make([]Row, len(entities))
	pipe := l.client.Pipeline()
	cmds := make([]*redis.SliceCmd, len(entities))
	for i, e := range entities {
		// The command's arguments but the key are the same for every
		// entity: copying them boxes nothing, where HMGet would box each
		// field name.
		args := slices.Clone(l.args)
		args[1] = l.key(e)
		cmds[i] = redis.NewSliceCmd(ctx, args...)
		_ = pipe.Process(ctx, cmds[i]) // a pipeline queues the command and returns nil
	}
	// go-redis sets a transport error (a timeout, a closed connection) on
	// every command it did not answer, and leaves a command's own reply
	// error alone: each command's error says how its entity ends.
	_, _ = pipe.Exec(ctx)
	failed := false
	for i, c := range cmds {
		var reply redis.Error
		switch err := c.Err(); {
		case err == nil:
			rows[i] = l.row(it, c.Val(), entities[i])
		case errors.As(err, &reply):
			// The entity's own error (a key that holds no hash) is its miss.
			l.metrics.misses.Inc()
			rows[i] = l.miss(it, false, func() string { return fmt.Sprintf("the feature store refused %s: %v", l.key(entities[i]), err) })
		default: // this command's reply never came
			failed = true
			rows[i] = l.miss(it, true, func() string {
				return fmt.Sprintf("the feature store did not answer within %v: %v", l.spec.timeout(), err)
			})
		}
	}
	if failed {
		l.metrics.errors.Inc()
	}
	return rows
}

// keyPart is one piece of a key template: literal text, or (field >= 0)
// the index in KeyFields of the request field that fills it.
type keyPart struct {
	text  string
	field int
}

// parseKey splits template into its parts once per spec, so that a
// query's key is one concatenation rather than a regexp replacement. keys
// are the fields the template names (Spec.KeyFields), found by the same
// regexp: every placeholder is one of them.
func parseKey(template string, keys []string) []keyPart {
	var parts []keyPart
	last := 0
	for _, m := range placeholder.FindAllStringSubmatchIndex(template, -1) {
		if m[0] > last {
			parts = append(parts, keyPart{text: template[last:m[0]], field: -1})
		}
		parts = append(parts, keyPart{field: slices.Index(keys, template[m[2]:m[3]])})
		last = m[1]
	}
	if last < len(template) {
		parts = append(parts, keyPart{text: template[last:], field: -1})
	}
	return parts
}

// key builds an entity's key from the template.
func (l *Lookup) key(values []string) string {
	n := 0
	for _, p := range l.parts {
		if p.field >= 0 {
			n += len(values[p.field])
		} else {
			n += len(p.text)
		}
	}
	var b strings.Builder
	b.Grow(n)
	for _, p := range l.parts {
		if p.field >= 0 {
			b.WriteString(values[p.field])
		} else {
			b.WriteString(p.text)
		}
	}
	return b.String()
}

// row turns one entity's HMGET answer into its row.
func (l *Lookup) row(it state.InputType, vals []any, entity []string) Row {
	b := make([]byte, 0, len(vals)*8)
	found, defaults := 0, 0
	for i, f := range l.spec.Fields {
		var v float64
		var err error
		s, ok := vals[i].(string) // nil for a field the hash lacks
		if ok {
			v, err = parse(s, f.Type)
		}
		switch {
		case ok && err == nil:
			found++
		case f.Default != nil:
			v = *f.Default
			defaults++
		default:
			l.metrics.misses.Inc()
			return l.miss(it, false, func() string {
				if ok {
					return fmt.Sprintf("feature %q of %s is %q: %v", f.Name, l.key(entity), s, err)
				}
				return fmt.Sprintf("feature %q of %s is missing", f.Name, l.key(entity))
			})
		}
		b = appendValue(b, it, v)
	}
	if found == 0 {
		l.metrics.misses.Inc()
		return l.miss(it, false, func() string { return fmt.Sprintf("no entity %s in the feature store", l.key(entity)) })
	}
	if defaults > 0 {
		l.metrics.defaults.Add(float64(defaults))
	}
	return Row{Values: b}
}

// miss is the row of a query whose entity is missing (or unknown, when
// the store did not answer), by the spec's policy. why is called only for
// a row that carries it: not under UseDefaults, whose rows have no Why.
func (l *Lookup) miss(it state.InputType, storeDown bool, why func() string) Row {
	switch l.spec.missing() {
	case NotFound:
		if storeDown {
			return Row{Outcome: StoreUnavailable, Why: why()}
		}
		return Row{Outcome: EntityNotFound, Why: why()}
	case DefaultOutput:
		return Row{Outcome: UseDefaultOutput, Why: why()}
	}
	b := make([]byte, 0, len(l.spec.Fields)*8)
	for _, f := range l.spec.Fields {
		b = appendValue(b, it, *f.Default)
	}
	l.metrics.defaults.Add(float64(len(l.spec.Fields)))
	return Row{Values: b, Outcome: Defaults}
}

// Assemble returns the model input: the request's own encoded values
// (input) and the looked-up ones, placed as the spec says. input holds
// the app's layout but the part the values fill, as the proxy checks
// before the lookup.
func (l *Lookup) Assemble(input, values []byte) []byte {
	at := l.at
	if at < 0 {
		at = len(input)
	}
	out := make([]byte, 0, len(input)+len(values))
	return append(append(append(out, input[:at]...), values...), input[at:]...)
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
