package docker

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/sloproxy/sloproxy/containers/rpc"
	"github.com/sloproxy/sloproxy/state"
)

// serveModel serves m over the RPC contract on a loopback port until the
// test ends and returns a connected client.
func serveModel(t *testing.T, it rpc.InputType, m rpc.Model) *rpc.Client {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = rpc.NewServer(m, rpc.ServerOptions{Hello: rpc.Hello{InputType: it, Model: "m", ModelVersion: "1"}}).Serve(ctx, ln)
	}()
	c := rpc.NewClient(ln.Addr().String(), rpc.ClientOptions{})
	c.Start(ctx)
	t.Cleanup(func() { c.Close(); cancel(); <-done })
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if _, err := c.WaitReady(wctx); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestWarmUpRequest: whatever the model thinks of one input of zeros, an
// answer warms the replica up; a container of another input type does not.
func TestWarmUpRequest(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got [][]byte
	ok := rpc.ModelFunc(func(_ context.Context, in [][]byte) ([]rpc.Output, error) {
		got = in
		return []rpc.Output{{Data: []byte("1")}}, nil
	})
	fails := rpc.ModelFunc(func(context.Context, [][]byte) ([]rpc.Output, error) {
		return nil, errors.New("X has 1 features, but LogisticRegression is expecting 64 features")
	})
	for _, tc := range []struct {
		name  string
		it    rpc.InputType
		model rpc.Model
		spec  state.InputType
		fails bool
	}{
		{"answers", rpc.Float64, ok, state.InputFloat64, false},
		{"model error", rpc.Float64, fails, state.InputFloat64, false},
		{"another input type", rpc.String, ok, state.InputFloat64, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := serveModel(t, tc.it, tc.model)
			err := warmUpRequest(ctx, c, spec{InputType: tc.spec})
			if (err != nil) != tc.fails {
				t.Fatalf("warmUpRequest = %v, want failure %v", err, tc.fails)
			}
		})
	}
	if len(got) != 1 || len(got[0]) != 8 {
		t.Errorf("the warm-up input was %v, want one float64 of zeros", got)
	}
}
