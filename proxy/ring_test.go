package proxy

import (
	"fmt"
	"reflect"
	"runtime"
	"testing"

	"github.com/cespare/xxhash/v2"

	"github.com/sloproxy/sloproxy/selection"
)

func single(app, arm, out string) *asked {
	return &asked{app: app, outs: [][]byte{[]byte(out)}, choice: selection.Choice{Arms: []string{arm}, Probs: []float64{1}}}
}

func key(app, input string) inputKey { return inputKey{app, xxhash.Sum64String(input)} }

// same reports whether two records say the same, their locks aside.
func same(a, b *asked) bool {
	return a.app == b.app && reflect.DeepEqual(a.choice, b.choice) && reflect.DeepEqual(a.outs, b.outs) &&
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
		do     func() (*asked, bool)
		wantOK bool
	}{
		{"another app's", func() (*asked, bool) { return r.take("q1", "other") }, false},
		{"unknown", func() (*asked, bool) { return r.take("q2", "app") }, false},
		{"first", func() (*asked, bool) { return r.take("q1", "app") }, true},
		{"again", func() (*asked, bool) { return r.take("q1", "app") }, false},
		{"restored", func() (*asked, bool) { r.restore("q1", q); return r.take("q1", "app") }, true},
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

// TestRecentShadowRacesPut has the shadow's answer come while its query is
// being remembered, as selection's shadow goroutine may: run with -race,
// and every record ends up with it.
func TestRecentShadowRacesPut(t *testing.T) {
	r := newRecent(64, nil, nil)
	for i := range 64 {
		id := fmt.Sprint("q", i)
		q := single("app", "m", "7")
		done := make(chan struct{})
		go func() {
			defer close(done)
			r.shadowed(id, q, []byte("s"))
		}()
		r.put(id, []byte(id), q)
		<-done
		got, ok := r.mem.take(id, "app")
		if !ok || string(got.shadow()) != "s" {
			t.Fatalf("%s: took %+v, %v; want the shadow's answer s", id, got, ok)
		}
	}
}

func TestRingShadowed(t *testing.T) {
	r := newRing(2)
	r.put("q1", key("app", "in"), single("app", "m", "7"))
	r.shadowed("q1", []byte("8"))
	r.shadowed("nope", []byte("9")) // not remembered: nothing happens
	q, ok := r.take("q1", "app")
	if !ok || string(q.shadow()) != "8" {
		t.Fatalf("took %+v, %v; want the shadow's answer 8", q, ok)
	}
	// A shadow's answer that comes after the take is kept for a restore,
	// and leaves the query taken until then.
	r.shadowed("q1", []byte("9"))
	if _, ok := r.take("q1", "app"); ok {
		t.Fatal("a shadow's answer after the take made the query scorable again")
	}
	r.restore("q1", q)
	if q, ok := r.take("q1", "app"); !ok || string(q.shadow()) != "9" {
		t.Fatalf("took %+v, %v; want the later shadow's answer 9", q, ok)
	}
}

func TestRecordRoundTrip(t *testing.T) {
	for _, q := range []*asked{
		single("app", "m", "7"),
		{app: "ens", outs: [][]byte{[]byte(`{"a":1}`), nil, {}},
			choice: selection.Choice{Arms: []string{"a", "b", "c"}, Probs: []float64{0.5, 0.25, 0.25}, Weights: []float64{1, 2, 3},
				Among: []string{"a", "b", "c", "d"}, Shadow: "s"}, shadowOut: []byte("x")},
		{app: "", outs: [][]byte{nil}, choice: selection.Choice{Arms: []string{""}}}, // its one arm did not answer
	} {
		got, id, err := decodeRec(encodeRec(nil, "id-1", 42, q))
		if err != nil || id != "id-1" || !same(got, q) {
			t.Errorf("%+v came back as %+v, %q, %v", q, got, id, err)
		}
	}
}

func FuzzDecodeRec(f *testing.F) {
	f.Add(encodeRec(nil, "id", 1, single("app", "m", "7")))
	f.Add(encodeRec(nil, "", 0, &asked{choice: selection.Choice{Arms: []string{"a"}, Weights: []float64{1}}, shadowOut: []byte{}}))
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

// BenchmarkRecentPut is what remembering an answered query of a
// single-model app costs, with the memory full.
func BenchmarkRecentPut(b *testing.B) {
	r := newRecent(DefaultRecentQueries, nil, nil)
	inputs := make([][]byte, 1024)
	for i := range inputs {
		inputs[i] = fmt.Appendf(nil, "[%d, 0, 0, 0]", i)
	}
	ids := make([]string, 1<<16)
	for i := range ids {
		ids[i] = fmt.Sprint("0123456789abcdef-", i)
	}
	for i := range DefaultRecentQueries {
		r.put(ids[i%len(ids)], inputs[i%len(inputs)], single("bench", "m", "7"))
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		r.put(ids[i%len(ids)], inputs[i%len(inputs)], single("bench", "m", "7"))
	}
}

// BenchmarkRecentMark is what the collector's marking of a full memory
// costs: a forced collection with the memory live.
func BenchmarkRecentMark(b *testing.B) {
	r := newRecent(DefaultRecentQueries, nil, nil)
	for i := range DefaultRecentQueries {
		r.put(fmt.Sprint("0123456789abcdef-", i), fmt.Appendf(nil, "[%d, 0, 0, 0]", i), single("bench", "m", "7"))
	}
	for b.Loop() {
		runtime.GC()
	}
	runtime.KeepAlive(r)
}
