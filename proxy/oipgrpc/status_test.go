package oipgrpc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sloproxy/sloproxy/containers/dispatch"
	"github.com/sloproxy/sloproxy/proxy"
	pb "github.com/sloproxy/sloproxy/proxy/oipgrpc/inferencepb"
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

// TestStatusClipped checks that a status message stays bounded whatever
// the request held: an input name of a megabyte, as decode reports it,
// and an error of that size however it was made.
func TestStatusClipped(t *testing.T) {
	huge := strings.Repeat("n", 1<<20)
	s := &Server{opts: Options{MaxMessageBytes: DefaultMaxMessageBytes, MaxInputBatch: 8}}
	req := &pb.ModelInferRequest{ModelName: "m", Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: huge, Datatype: "FP32"}}}
	_, err := s.decode(context.Background(), req)
	st := Status(err)
	if st.Code() != codes.InvalidArgument || len(st.Message()) > 200 || !strings.Contains(st.Message(), "has no shape") {
		t.Fatalf("decode: %v, a %d-byte message; want INVALID_ARGUMENT naming the input clipped", st.Code(), len(st.Message()))
	}
	for _, err := range []error{
		fmt.Errorf("%w: input %q", proxy.ErrBadInput, huge),
		fmt.Errorf("row 0: %s: %w", huge, dispatch.ErrShed),
	} {
		if msg := Status(err).Message(); len(msg) > proxy.MaxErrorBytes+len("…") {
			t.Errorf("%v: a %d-byte message; want at most %d", Status(err).Code(), len(msg), proxy.MaxErrorBytes)
		}
	}
}

// TestRejectCounted checks that a request that does not decode is
// answered INVALID_ARGUMENT and counted as an error, as the REST OIP
// endpoint counts one.
func TestRejectCounted(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := New(proxy.New(proxy.Options{Store: state.NewStore(nil, state.Options{}), Registry: reg}), Options{})
	defer s.GRPC().Stop()
	req := &pb.ModelInferRequest{ModelName: "m", Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: "x", Datatype: "FP32"}}}
	if _, err := s.ModelInfer(context.Background(), req); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("%v, want INVALID_ARGUMENT", err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, mf := range mfs {
		if mf.GetName() != "sloproxy_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			got = append(got, fmt.Sprintf("%v %v", labels, m.GetCounter().GetValue()))
		}
	}
	if want := "map[api:grpc app: model: outcome:error] 1"; len(got) != 1 || got[0] != want {
		t.Fatalf("sloproxy_requests_total: %v, want [%s]", got, want)
	}
}
