package answered

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/cespare/xxhash/v2"

	"github.com/sloproxy/sloproxy/selection"
)

func single(app, arm, out string) *Query {
	return &Query{App: app, Outs: [][]byte{[]byte(out)}, Choice: selection.Choice{Arms: []string{arm}, Probs: []float64{1}}}
}

func key(app, input string) inputKey { return inputKey{app, xxhash.Sum64String(input)} }

// same reports whether two records say the same, their locks aside.
func same(a, b *Query) bool {
	return a.App == b.App && reflect.DeepEqual(a.Choice, b.Choice) && reflect.DeepEqual(a.Outs, b.Outs) &&
		reflect.DeepEqual(a.shadowOut, b.shadowOut)
}

func TestRingRemembersTheLatest(t *testing.T) {
	r := newRing(3)
	for i := range 5 {
		r.put(fmt.Sprint("q", i), key("app", fmt.Sprint("in", i)), single("app", "m", fmt.Sprint("out", i)))
	}
	for i := range 5 {
		id := fmt.Sprint("q", i)
		_, byInput := r.idOf(key("app", fmt.Sprint("in", i)))
		q, taken := r.take(id, "app")
		if kept := i >= 2; byInput != kept || taken != kept {
			t.Errorf("%s: found by input %v, taken %v; want %v (a ring of 3 after 5)", id, byInput, taken, kept)
		}
		if taken && !same(q, single("app", "m", fmt.Sprint("out", i))) {
			t.Errorf("%s: took %+v", id, q)
		}
	}
	if n := len(r.byID) + len(r.byInput); n != 6 {
		t.Errorf("%d map entries, want 6: the forgotten ones' entries go with them", n)
	}
}

func TestRingTakesOnceAndRestores(t *testing.T) {
	r := newRing(4)
	q := single("app", "m", "7")
	r.put("q1", key("app", "in"), q)
	tests := []struct {
		name   string
		do     func() (*Query, bool)
		wantOK bool
	}{
		{"another app's", func() (*Query, bool) { return r.take("q1", "other") }, false},
		{"unknown", func() (*Query, bool) { return r.take("q2", "app") }, false},
		{"first", func() (*Query, bool) { return r.take("q1", "app") }, true},
		{"again", func() (*Query, bool) { return r.take("q1", "app") }, false},
		{"restored", func() (*Query, bool) { r.restore("q1", q); return r.take("q1", "app") }, true},
	}
	for _, tt := range tests {
		got, ok := tt.do()
		if ok != tt.wantOK || ok && !same(got, q) {
			t.Errorf("%s: %+v, %v; want ok %v", tt.name, got, ok, tt.wantOK)
		}
	}
	// Taken, it is still the latest query of its input: feedback by input
	// finds its id, and the id says it was scored.
	if id, ok := r.idOf(key("app", "in")); !ok || id != "q1" {
		t.Errorf("by input after take: %q, %v", id, ok)
	}
	// Restored after its slot was reused, it comes back by id.
	for i := range 4 {
		r.put(fmt.Sprint("p", i), key("app", fmt.Sprint("p", i)), single("app", "m", "x"))
	}
	r.restore("q1", q)
	if got, ok := r.take("q1", "app"); !ok || !same(got, q) {
		t.Errorf("restored after its slot was reused: %+v, %v", got, ok)
	}
}

func TestRingFindsTheLatestQueryOfAnInput(t *testing.T) {
	r := newRing(2)
	r.put("q1", key("app", "in"), single("app", "m", "1"))
	r.put("q2", key("app", "in"), single("app", "m", "2"))
	r.put("q3", key("app", "other"), single("app", "m", "3")) // forgets q1, whose input q2 now has
	if id, ok := r.idOf(key("app", "in")); !ok || id != "q2" {
		t.Errorf("by input: %q, %v; want q2, the latest with it", id, ok)
	}
	if id, ok := r.idOf(key("other-app", "in")); ok {
		t.Errorf("another app's input found %q", id)
	}
}

func TestRingShadowed(t *testing.T) {
	r := newRing(2)
	r.put("q1", key("app", "in"), single("app", "m", "7"))
	r.shadowed("q1", []byte("8"))
	r.shadowed("nope", []byte("9")) // not remembered: nothing happens
	q, ok := r.take("q1", "app")
	if !ok || string(q.Shadow()) != "8" {
		t.Fatalf("took %+v, %v; want the shadow's answer 8", q, ok)
	}
	// A shadow's answer that comes after the take is kept for a restore,
	// and leaves the query taken until then.
	r.shadowed("q1", []byte("9"))
	if _, ok := r.take("q1", "app"); ok {
		t.Fatal("a shadow's answer after the take made the query scorable again")
	}
	r.restore("q1", q)
	if q, ok := r.take("q1", "app"); !ok || string(q.Shadow()) != "9" {
		t.Fatalf("took %+v, %v; want the later shadow's answer 9", q, ok)
	}
}

func TestRecordRoundTrip(t *testing.T) {
	for _, q := range []*Query{
		single("app", "m", "7"),
		{App: "ens", Outs: [][]byte{[]byte(`{"a":1}`), nil, {}},
			Choice: selection.Choice{Arms: []string{"a", "b", "c"}, Probs: []float64{0.5, 0.25, 0.25}, Weights: []float64{1, 2, 3},
				Among: []string{"a", "b", "c", "d"}, Shadow: "s"}, shadowOut: []byte("x")},
		{App: "", Outs: [][]byte{nil}, Choice: selection.Choice{Arms: []string{""}}}, // its one arm did not answer
	} {
		got, id, err := decodeRec(encodeRec(nil, "id-1", 42, q))
		if err != nil || id != "id-1" || !same(got, q) {
			t.Errorf("%+v came back as %+v, %q, %v", q, got, id, err)
		}
	}
}

func FuzzDecodeRec(f *testing.F) {
	f.Add(encodeRec(nil, "id", 1, single("app", "m", "7")))
	f.Add(encodeRec(nil, "", 0, &Query{Choice: selection.Choice{Arms: []string{"a"}, Weights: []float64{1}}, shadowOut: []byte{}}))
	f.Add([]byte{})
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, rec []byte) {
		q, id, err := decodeRec(rec)
		if err != nil {
			return
		}
		// What decodes encodes back to the same bytes, the taken flag and
		// the input's hash aside.
		if again := encodeRec(nil, id, 0, q); len(rec) < 9 || string(again[9:]) != string(rec[9:]) {
			t.Fatalf("%x decoded to %+v, which encodes to %x", rec, q, again)
		}
	})
}

// TestRingHeldIsBounded checks that what the ring reports holding follows
// its records: at most its size, and their bytes, back to 0 when empty.
func TestRingHeldIsBounded(t *testing.T) {
	r := newRing(3)
	if n, b := r.held(); n != 0 || b != 0 {
		t.Fatalf("empty: %d records, %d bytes", n, b)
	}
	for i := range 5 {
		r.put(fmt.Sprint("q", i), key("app", fmt.Sprint("in", i)), single("app", "m", "out"))
	}
	n, b := r.held()
	if n != 3 || b < 3*len("q0appmout") {
		t.Fatalf("after 5 puts: %d records, %d bytes; want 3 records", n, b)
	}
	r.shadowed("q4", []byte("a longer shadow answer"))
	if _, grown := r.held(); grown <= b {
		t.Errorf("a shadow's answer left the bytes at %d (were %d)", grown, b)
	}
	for s := range int32(3) {
		r.mu.Lock()
		r.forget(s)
		r.mu.Unlock()
	}
	if n, b := r.held(); n != 0 || b != 0 {
		t.Errorf("all forgotten: %d records, %d bytes", n, b)
	}
}
