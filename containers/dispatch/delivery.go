package dispatch

import (
	"context"
	"sync"
	"time"
)

// Delivery holds back what Predict would tell the Admitter when its query
// finishes until the caller has delivered the answer (Done): admission's
// calibration then learns the query's finish as its caller's client got
// it, and counts a query whose answer left after its deadline as late,
// although the model answered in time. The time from a model's answer to
// the client (the waiting goroutine woken, the response encoded and
// written, with a whole batch's answers contending for the processor at
// once) is part of every answer's latency; admission that predicts only
// up to the model's answer lets in queries whose answers reach the client
// late under overload.
//
// A Delivery is for one request; its zero value is ready to use. A
// request whose caller never calls Done teaches the calibration nothing.
type Delivery struct {
	mu       sync.Mutex // guards finished and done
	finished []finished
	first    [1]finished // finished's storage for a request of one query
	done     bool        // Done was called: later queries (shadow copies) tell their admitter at once
}

// finished is one query that finished, to be told to its admitter.
type finished struct {
	admitter Admitter
	p        Prediction
	expired  bool
}

type deliveryKey struct{}

// WithDelivery returns a context under which the queries Predict answers
// are told to their Admitter when dl.Done is called, not when Predict
// returns.
func WithDelivery(ctx context.Context, dl *Delivery) context.Context {
	return context.WithValue(ctx, deliveryKey{}, dl)
}

// hold keeps the query's finish for Done; it reports false when ctx has
// no Delivery.
func hold(ctx context.Context, a Admitter, p Prediction, expired bool) bool {
	dl, _ := ctx.Value(deliveryKey{}).(*Delivery)
	if dl == nil {
		return false
	}
	dl.mu.Lock()
	defer dl.mu.Unlock()
	if dl.done {
		return false
	}
	if dl.finished == nil {
		dl.finished = dl.first[:0]
	}
	dl.finished = append(dl.finished, finished{admitter: a, p: p, expired: expired})
	return true
}

// Done tells the admitters of the queries held that they finished at now,
// when the answer was delivered. A query that finishes after Done (a
// shadow copy the request did not wait for) is told to its admitter when
// it finishes.
func (dl *Delivery) Done(now time.Time) {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	for _, f := range dl.finished {
		f.admitter.Finished(f.p, now, f.expired)
	}
	dl.finished, dl.done = dl.finished[:0], true
}
