package selection

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
)

// Output says what an app's outputs are, which decides how answers
// combine and how feedback rewards them.
type Output string

// The kinds of output.
const (
	// Label outputs are classes: an ensemble takes the weighted vote; a
	// reward is 1 for the label given as feedback, else 0.
	Label Output = "label"
	// Number outputs are scalars: an ensemble takes the weighted mean; a
	// reward is the negative squared error.
	Number Output = "number"
	// Probabilities outputs are class probabilities, a JSON array whose
	// i-th number is the model's probability of class i (scikit-learn's
	// predict_proba): an ensemble takes their weighted mean, so a model
	// sure of its answer outweighs an unsure one where a vote counts both
	// alike; a label is a class index, and the reward is the probability
	// the output gave it.
	Probabilities Output = "probabilities"
)

// ErrLabel is the error of a label that does not fit the app's output.
var ErrLabel = errors.New("bad label")

// CheckLabel returns an error wrapping ErrLabel when label (JSON) is not
// a label of o: a string, number or boolean for Label, a number for
// Number, a class index (a non-negative integer) for Probabilities.
func (o Output) CheckLabel(label json.RawMessage) error {
	var v any
	if err := json.Unmarshal(label, &v); err != nil {
		return fmt.Errorf("%w: %q is not JSON", ErrLabel, label)
	}
	if o == Probabilities {
		if _, ok := classIndex(v); !ok {
			return fmt.Errorf("%w: the app's outputs are class probabilities; %s is not a class index (an integer from 0)", ErrLabel, label)
		}
		return nil
	}
	switch v.(type) {
	case float64:
		return nil
	case string, bool:
		if o == Label {
			return nil
		}
	}
	if o == Number {
		return fmt.Errorf("%w: the app's outputs are numbers; %s is not a number", ErrLabel, label)
	}
	return fmt.Errorf("%w: the app's outputs are labels; %s is not a string, number or boolean", ErrLabel, label)
}

// CheckClass returns an error wrapping ErrLabel when o is Probabilities
// and label (which CheckLabel accepted) is a class that none of outs, the
// outputs a query's arms answered (nil: not answered), has while some are
// class probabilities: a class past every array is a mistaken label, not
// a model that gave it nothing. When none are, every arm scores 0 (see
// Reward), which is what an arm that answers no probabilities earns.
func (o Output) CheckClass(label json.RawMessage, outs [][]byte) error {
	if o != Probabilities {
		return nil
	}
	var v any
	_ = json.Unmarshal(label, &v)
	k, _ := classIndex(v)
	classes := 0
	for _, out := range outs {
		if p, ok := probabilities(out); ok {
			classes = max(classes, len(p))
		}
	}
	if classes > 0 && k >= classes {
		return fmt.Errorf("%w: class %d: the query's outputs have %d classes (0 to %d)", ErrLabel, k, classes, classes-1)
	}
	return nil
}

// value decodes a model's output as the query API shows it: its JSON
// value, or the string it is when it is not JSON.
func value(out []byte) any {
	var v any
	if json.Unmarshal(out, &v) == nil {
		return v
	}
	return string(out)
}

// number returns out as a number, if it is one.
func number(out []byte) (float64, bool) {
	f, ok := value(out).(float64)
	return f, ok
}

// classIndex returns v (a decoded JSON value) as a class index, if it is
// a non-negative integer.
func classIndex(v any) (int, bool) {
	f, ok := v.(float64)
	if !ok || f < 0 || f != math.Trunc(f) || f > math.MaxInt32 {
		return 0, false
	}
	return int(f), true
}

// probabilities returns out as class probabilities, if it is a non-empty
// JSON array of numbers.
func probabilities(out []byte) ([]float64, bool) {
	var p []float64
	if json.Unmarshal(out, &p) != nil || len(p) == 0 {
		return nil, false
	}
	return p, true
}

// argmax is the index of p's largest element, the first of equals.
func argmax(p []float64) int {
	best := 0
	for i, x := range p {
		if x > p[best] {
			best = i
		}
	}
	return best
}

// Reward scores out against label (which CheckLabel accepted): 1 or 0
// for labels, the negative squared error for numbers (-Inf when out is
// not a number), the probability out gave the label's class for
// Probabilities (0 when out is not class probabilities or too short).
func (o Output) Reward(out []byte, label json.RawMessage) float64 {
	if o == Probabilities {
		var v any
		_ = json.Unmarshal(label, &v)
		k, _ := classIndex(v)
		p, ok := probabilities(out)
		if !ok || k >= len(p) {
			return 0
		}
		return p[k]
	}
	if o == Number {
		y, _ := number(label)
		x, ok := number(out)
		if !ok {
			return math.Inf(-1)
		}
		return -(x - y) * (x - y)
	}
	if o.Agree(out, label) {
		return 1
	}
	return 0
}

// Gain maps a reward of o to [0, 1], what the policies learn from.
func (o Output) Gain(reward float64) float64 {
	switch o {
	case Number:
		return math.Exp(reward)
	case Probabilities:
		return min(max(reward, 0), 1)
	}
	return reward
}

// Combine merges the outputs of an ensemble's answered arms with their
// weights (nil means equal): the weighted vote for labels, ties going to
// the first output; the weighted mean for numbers, of the outputs that
// are numbers; for class probabilities the element-wise weighted mean of
// the outputs that are arrays of numbers as long as the first such. A
// mean falls back on the vote when no output is of its kind, or when it
// is not finite (outputs whose sum passes the float range).
func (o Output) Combine(outs [][]byte, weights []float64) []byte {
	w := func(i int) float64 {
		if weights == nil {
			return 1
		}
		return weights[i]
	}
	if o == Probabilities {
		var sum []float64
		var total float64
		for i, out := range outs {
			p, ok := probabilities(out)
			if !ok || (sum != nil && len(p) != len(sum)) {
				continue
			}
			if sum == nil {
				sum = make([]float64, len(p))
			}
			for k, x := range p {
				sum[k] += w(i) * x
			}
			total += w(i)
		}
		if total > 0 {
			for k := range sum {
				sum[k] /= total
			}
			if finite(sum...) {
				b := append(make([]byte, 0, 2+8*len(sum)), '[')
				for k, x := range sum {
					if k > 0 {
						b = append(b, ',')
					}
					b = strconv.AppendFloat(b, x, 'g', -1, 64)
				}
				return append(b, ']')
			}
		}
	}
	if o == Number {
		var sum, total float64
		for i, out := range outs {
			if x, ok := number(out); ok {
				sum += w(i) * x
				total += w(i)
			}
		}
		if m := sum / total; total > 0 && finite(m) {
			return strconv.AppendFloat(nil, m, 'g', -1, 64)
		}
	}
	votes := map[string]float64{}
	keys := make([]string, len(outs))
	best := -1
	for i, out := range outs {
		k, _ := json.Marshal(value(out))
		keys[i] = string(k)
		votes[keys[i]] += w(i)
	}
	for i := range outs {
		if best < 0 || votes[keys[i]] > votes[keys[best]] {
			best = i
		}
	}
	if best < 0 {
		return nil
	}
	return outs[best]
}

// finite reports whether every x is a finite number.
func finite(xs ...float64) bool {
	for _, x := range xs {
		if math.IsInf(x, 0) || math.IsNaN(x) {
			return false
		}
	}
	return true
}

// Agree reports whether two outputs are the same answer: for class
// probabilities that are both, the same most probable class; else the
// same JSON value (3 and 3.0 agree), or the same bytes when not JSON.
func (o Output) Agree(a, b []byte) bool {
	if o == Probabilities {
		p, okP := probabilities(a)
		q, okQ := probabilities(b)
		if okP && okQ {
			return argmax(p) == argmax(q)
		}
	}
	x, _ := json.Marshal(value(a))
	y, _ := json.Marshal(value(b))
	return bytes.Equal(x, y)
}
