package dispatch

import (
	"context"
	"testing"
	"time"
)

// finishes records what an Admitter is told.
type finishes struct{ at []time.Time }

func (f *finishes) Admit(Arrival) (Prediction, error) { return Prediction{}, nil }
func (f *finishes) Finished(_ Prediction, now time.Time, _ bool) {
	f.at = append(f.at, now)
}

// TestDeliveryTellsTheAdmitterWhenTheAnswerIsDelivered: under a Delivery
// a query's finish reaches its admitter when Done is called, stamped
// with Done's time; after Done, at once, stamped with the dispatcher's.
func TestDeliveryTellsTheAdmitterWhenTheAnswerIsDelivered(t *testing.T) {
	t0 := time.Now()
	d := New(Options{Now: func() time.Time { return t0 }})
	var dl Delivery
	var adm finishes
	ctx := WithDelivery(context.Background(), &dl)
	query := func() *query { return &query{ctx: ctx, admitter: &adm, prediction: Prediction{Batch: 1}} }
	d.finished(query(), false)
	d.finished(query(), true)
	if len(adm.at) != 0 {
		t.Fatalf("told the admitter %d times before the answer was delivered", len(adm.at))
	}
	delivered := t0.Add(3 * time.Millisecond)
	dl.Done(delivered)
	if len(adm.at) != 2 || !adm.at[0].Equal(delivered) || !adm.at[1].Equal(delivered) {
		t.Fatalf("after Done the admitter was told %v, want twice at %v", adm.at, delivered)
	}
	d.finished(query(), false)
	if len(adm.at) != 3 || !adm.at[2].Equal(t0) {
		t.Fatalf("a query finished after Done was told %v, want at once at %v", adm.at, t0)
	}
}
