package main

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/sloproxy/sloproxy/containers/rpc"
)

// costModel runs one batch at a time: the token channel is its processor.
type costModel struct {
	a, b, jitter time.Duration
	token        chan struct{}
	sleep        func(context.Context, time.Duration) error
}

// newCostModel makes a model whose batches wait out their cost with sleep.
func newCostModel(a, b, jitter time.Duration, sleep func(context.Context, time.Duration) error) *costModel {
	m := &costModel{a: a, b: b, jitter: jitter, token: make(chan struct{}, 1), sleep: sleep}
	m.token <- struct{}{}
	return m
}

// cost is how long a batch of n takes.
func (m *costModel) cost(n int) time.Duration {
	d := m.a + time.Duration(n)*m.b
	if m.jitter > 0 {
		d += rand.N(m.jitter)
	}
	return d
}

// Predict waits for the processor, then for the batch's cost. A request
// whose deadline passes while it waits is not computed.
func (m *costModel) Predict(ctx context.Context, inputs [][]byte) ([]rpc.Output, error) {
	select {
	case <-m.token:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { m.token <- struct{}{} }()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := m.sleep(ctx, m.cost(len(inputs))); err != nil {
		return nil, err
	}
	out := make([]rpc.Output, len(inputs))
	for i := range out {
		out[i].Data = output
	}
	return out, nil
}

// sleepTimer waits d, or until ctx is done, on the runtime's timer: in a
// synctest bubble, on the bubble's clock.
func sleepTimer(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
