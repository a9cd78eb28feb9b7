package slo

import (
	"context"
	"testing"
	"time"

	"github.com/sloproxy/sloproxy/containers/dispatch"
	"github.com/sloproxy/sloproxy/state"
)

func TestGovernorPacesOnlyWhenPaced(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ms := time.Millisecond
	for _, paced := range []bool{false, true} {
		g := NewGovernor(nil, paced)
		served(&g.pace, t0, 10*ms)
		g.Started(t0, 4) // one batch in flight, started at t0
		hold := g.Hold(t0.Add(ms), 2, 20, 3, 18*ms)
		lanes, typical := g.Spacing(2)
		want, wantLanes := time.Duration(0), 1
		if paced {
			want, wantLanes = 4*ms, 2 // half a service time after t0, over both slots
		}
		if hold != want || lanes != wantLanes || typical != 10*ms {
			t.Errorf("paced %v: hold %v, spacing %d lanes of %v; want %v, %d lanes of 10ms", paced, hold, lanes, typical, want, wantLanes)
		}
	}
}

func TestGovernorTeachesTheFitAndThePacer(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ms := time.Millisecond
	cases := []struct {
		how         dispatch.Outcome
		fitted      bool // the fit learned the batch
		wantService time.Duration
	}{
		{dispatch.Answered, true, 12 * ms},
		{dispatch.Overran, true, 0},
		{dispatch.Failed, false, 0},
	}
	for _, c := range cases {
		g := NewGovernor(NewFit(0, 0.99), false)
		end := g.Started(t0, 4)
		if end != t0 {
			t.Errorf("outcome %d: a fit with nothing learned expects the batch to end at %v, want at once", c.how, end.Sub(t0))
		}
		g.Ended(4, end, 12*ms, c.how)
		typical, _ := g.Fit().Estimate(4)
		if got := typical > 0; got != c.fitted {
			t.Errorf("outcome %d: the fit estimates %v for a batch of 4; learned %v, want %v", c.how, typical, got, c.fitted)
		}
		if s := g.pace.typical(); s != c.wantService || len(g.pace.ends) != 0 {
			t.Errorf("outcome %d: pacer's service %v with %d in flight; want %v and none", c.how, s, len(g.pace.ends), c.wantService)
		}
	}
	// Once the fit has learned, a batch is expected to end after its
	// typical latency.
	g := NewGovernor(NewFit(0, 0.99), false)
	g.Ended(4, g.Started(t0, 4), 12*ms, dispatch.Answered)
	if end := g.Started(t0, 4); end.Sub(t0) != 12*ms {
		t.Errorf("expected end %v after the start, want the fit's 12ms", end.Sub(t0))
	}
}

func TestGovernorWithoutAdmissionAdmitsEveryQuery(t *testing.T) {
	g := DefaultBatching
	g.Admission = false
	gov := g.NewGovernor()
	t0 := time.Unix(1000, 0)
	p, err := gov.Admit(dispatch.Arrival{Arrived: t0, Deadline: t0.Add(time.Nanosecond), Queued: 1000, Replicas: 1, Slots: 1, Sizes: sizes(1)})
	if err != nil || p.Batch != 0 || gov.Fit() != nil {
		t.Fatalf("admission off: %+v, %v, fit %v; want admitted without a prediction, and no fit", p, err, gov.Fit())
	}
}

func TestBatchingOfTakesTheFirstAppByName(t *testing.T) {
	ctx := context.Background()
	store := state.NewStore(nil, state.Options{})
	if err := store.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	for _, app := range []string{"b", "a"} {
		if err := store.PutApp(ctx, state.App{Name: app, InputType: state.InputFloat32, SLO: time.Second}); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range []string{"shared", "alone"} {
		v := state.ModelVersion{Model: m, Version: "1", InputType: state.InputFloat32, Replicas: 1,
			Runtime: state.RuntimeSpec{Kind: state.RuntimeProcess, Command: []string{"x"}}}
		if err := store.PutVersion(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range [][2]string{{"b", "shared"}, {"a", "shared"}} {
		if err := store.Link(ctx, l[0], l[1]); err != nil {
			t.Fatal(err)
		}
	}
	aimd, static := DefaultBatching, DefaultBatching
	aimd.Controller = ControllerAIMD
	static.Controller, static.Size = ControllerStatic, 8
	table := NewTable(map[string]Policy{"a": {Batching: aimd}, "b": {Batching: static}})
	got := table.BatchingOf(store.Snapshot())
	if got["shared"] != aimd || got["alone"] != DefaultBatching {
		t.Errorf("shared %+v, alone %+v; want app a's aimd, and the default for the model no app links", got["shared"], got["alone"])
	}
}

func TestMaxBatch(t *testing.T) {
	if got := MaxBatch(state.ModelVersion{BatchSize: 8}, 32); got != 8 {
		t.Errorf("a version's own size: %d, want 8", got)
	}
	if got := MaxBatch(state.ModelVersion{}, 32); got != 32 {
		t.Errorf("a version without one: %d, want the fallback 32", got)
	}
}
