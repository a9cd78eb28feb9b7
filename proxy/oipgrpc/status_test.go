package oipgrpc

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"

	"github.com/sloproxy/sloproxy/containers/dispatch"
	"github.com/sloproxy/sloproxy/proxy"
	"github.com/sloproxy/sloproxy/state"
)

func TestStatus(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code codes.Code
	}{
		{fmt.Errorf("%w: shape", proxy.ErrBadInput), codes.InvalidArgument},
		{fmt.Errorf("%w: app", state.ErrInvalid), codes.InvalidArgument},
		{&dispatch.ModelError{Model: "m", Version: "1", Message: "64 features"}, codes.InvalidArgument},
		{fmt.Errorf("%w: no model", proxy.ErrNotFound), codes.NotFound},
		{fmt.Errorf("%w: not running", proxy.ErrUnavailable), codes.Unavailable},
		{dispatch.ErrStopped, codes.Unavailable},
		{fmt.Errorf("%w: deadline: (%w)", proxy.ErrUnavailable, dispatch.ErrDeadline), codes.DeadlineExceeded},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
		{context.Canceled, codes.Canceled},
		{errors.New("something else"), codes.Internal},
	} {
		if got := Status(tc.err).Code(); got != tc.code {
			t.Errorf("%v: %v, want %v", tc.err, got, tc.code)
		}
	}
}

// TestStatusShed checks that admission's refusal carries how long to wait.
func TestStatusShed(t *testing.T) {
	st := Status(fmt.Errorf("row 0: %w", dispatch.ErrShed))
	if st.Code() != codes.ResourceExhausted {
		t.Fatalf("%v", st)
	}
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay().AsDuration() >= time.Second {
			return
		}
	}
	t.Fatalf("no RetryInfo in %v", st.Details())
}
