package slo_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sloproxy/sloproxy/containers/dispatch"
	"github.com/sloproxy/sloproxy/internal/testutil"
	"github.com/sloproxy/sloproxy/slo"
)

func TestLatencyModelRecoversFromASpellSlowerThanTheSLO(t *testing.T) {
	costmodel := testutil.BuildGo(t, "./examples/costmodel")
	m := testutil.StartModel(t, []string{costmodel, "-a", "5ms", "-b", "250us"})
	// The replica's controller comes out of a spell in which every batch
	// took 30ms: past the 20ms SLO, so it refuses every head as doomed,
	// though the model now answers in about 5ms.
	spell := func() dispatch.Controller {
		c := slo.NewLatencyModel(0.99, 0, 0)
		for range slo.FitWindow {
			c.Observe(1, 30*time.Millisecond)
		}
		return c
	}
	d, ctx, stop := serveOne(t, m.Addr, spell, nil)
	defer stop()

	// One query at a time, each with 20ms to its deadline, for up to 10s:
	// the model must come to answer them.
	var ok, doomed int
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end) && ok < 100; {
		qctx, qcancel := context.WithTimeout(ctx, 20*time.Millisecond)
		_, _, err := d.Predict(qctx, make([]byte, 4))
		qcancel()
		switch {
		case err == nil:
			ok++
		case errors.Is(err, dispatch.ErrDeadline):
			doomed++
		default:
			t.Fatal(err)
		}
	}
	t.Logf("%d answered by the model, %d refused or late", ok, doomed)
	if ok < 100 {
		t.Fatalf("in 10s the model answered %d queries with 20ms to spare (%d refused or late): the controller did not leave its spell", ok, doomed)
	}
}
