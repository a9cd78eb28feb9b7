// Package oipgrpc serves the Open Inference Protocol v2 over gRPC
// (inference.GRPCInferenceService, inferencepb) on the proxy's query
// path: ModelInfer goes through proxy.Proxy.Infer, as the REST OIP
// endpoint does, so a gRPC query gets the same SLO deadline (the call's
// own deadline and the "timeout" parameter shorten it), admission,
// prediction cache, selection, feature lookup, batching and default
// output, flagged in the response's parameters. Errors map to gRPC status
// codes in one function, Status. The server also answers the standard
// health service (grpc.health.v1) and server reflection.
package oipgrpc

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/http"
	"time"

	"go.uber.org/zap"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sloproxy/sloproxy/containers/dispatch"
	"github.com/sloproxy/sloproxy/containers/rpc"
	"github.com/sloproxy/sloproxy/internal/clip"
	"github.com/sloproxy/sloproxy/proxy"
	pb "github.com/sloproxy/sloproxy/proxy/oipgrpc/inferencepb"
	"github.com/sloproxy/sloproxy/state"
)

// DefaultMaxMessageBytes bounds a request message when Options sets none:
// the REST API's default body limit.
const DefaultMaxMessageBytes = 4 << 20

// Options configure a Server. The zero value of each field has the
// meaning its comment gives.
type Options struct {
	// MaxMessageBytes bounds a received message. 0 means
	// DefaultMaxMessageBytes.
	MaxMessageBytes int
	// MaxInputBatch bounds the rows of one request. 0 means 1024, the
	// REST API's default.
	MaxInputBatch int
	// Logger receives the handlers' panics, each answered INTERNAL. nil
	// means no logs.
	Logger *zap.Logger
}

// Server is the gRPC front door of one proxy.
type Server struct {
	pb.UnimplementedGRPCInferenceServiceServer
	proxy  *proxy.Proxy
	opts   Options
	health *health.Server
	grpc   *grpc.Server
}

// New returns a server over p, its health service SERVING.
func New(p *proxy.Proxy, opts Options) *Server {
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if opts.MaxInputBatch <= 0 {
		opts.MaxInputBatch = 1024
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	s := &Server{proxy: p, opts: opts, health: health.NewServer(),
		grpc: grpc.NewServer(grpc.MaxRecvMsgSize(opts.MaxMessageBytes), grpc.ChainUnaryInterceptor(recoverer(opts.Logger)))}
	pb.RegisterGRPCInferenceServiceServer(s.grpc, s)
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	s.health.SetServingStatus(pb.GRPCInferenceService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	return s
}

// recoverer answers a handler's panic with INTERNAL and logs it with its
// stack, as proxy.Recoverer does for HTTP, instead of ending the process.
func recoverer(log *zap.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if v := recover(); v != nil {
				log.Error("panic in a gRPC handler", zap.String("method", info.FullMethod), zap.Any("panic", v), zap.Stack("stack"))
				err = status.Errorf(codes.Internal, "internal error in %s", info.FullMethod)
			}
		}()
		return handler(ctx, req)
	}
}

// GRPC returns the grpc.Server to Serve on a listener.
func (s *Server) GRPC() *grpc.Server { return s.grpc }

// Shutdown sets the health service NOT_SERVING, then stops accepting
// calls and waits for those in flight, or stops them when ctx ends first.
func (s *Server) Shutdown(ctx context.Context) {
	s.health.Shutdown()
	done := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.grpc.Stop()
		<-done
	}
}

// ServerLive implements GRPCInferenceService.
func (s *Server) ServerLive(context.Context, *pb.ServerLiveRequest) (*pb.ServerLiveResponse, error) {
	return &pb.ServerLiveResponse{Live: true}, nil
}

// ServerReady implements GRPCInferenceService: ready as GET
// /v2/health/ready is.
func (s *Server) ServerReady(context.Context, *pb.ServerReadyRequest) (*pb.ServerReadyResponse, error) {
	return &pb.ServerReadyResponse{Ready: s.proxy.ServerReady() == nil}, nil
}

// ModelReady implements GRPCInferenceService; an unknown model is
// NOT_FOUND.
func (s *Server) ModelReady(_ context.Context, req *pb.ModelReadyRequest) (*pb.ModelReadyResponse, error) {
	err := s.proxy.ModelReady(req.GetName(), req.GetVersion())
	if err != nil && !errors.Is(err, proxy.ErrUnavailable) {
		return nil, Status(err).Err()
	}
	return &pb.ModelReadyResponse{Ready: err == nil}, nil
}

// ServerMetadata implements GRPCInferenceService.
func (s *Server) ServerMetadata(context.Context, *pb.ServerMetadataRequest) (*pb.ServerMetadataResponse, error) {
	return &pb.ServerMetadataResponse{Name: "sloproxy", Version: proxy.Version, Extensions: []string{}}, nil
}

// ModelMetadata implements GRPCInferenceService.
func (s *Server) ModelMetadata(_ context.Context, req *pb.ModelMetadataRequest) (*pb.ModelMetadataResponse, error) {
	md, err := s.proxy.ModelMetadata(req.GetName(), req.GetVersion())
	if err != nil {
		return nil, Status(err).Err()
	}
	tensors := func(ts []proxy.TensorMetadata) []*pb.ModelMetadataResponse_TensorMetadata {
		out := make([]*pb.ModelMetadataResponse_TensorMetadata, len(ts))
		for i, t := range ts {
			out[i] = &pb.ModelMetadataResponse_TensorMetadata{Name: t.Name, Datatype: t.Datatype, Shape: t.Shape}
		}
		return out
	}
	return &pb.ModelMetadataResponse{Name: md.Name, Versions: md.Versions, Platform: md.Platform,
		Inputs: tensors(md.Inputs), Outputs: tensors(md.Outputs)}, nil
}

// ModelInfer implements GRPCInferenceService through proxy.Proxy.Infer.
func (s *Server) ModelInfer(ctx context.Context, req *pb.ModelInferRequest) (*pb.ModelInferResponse, error) {
	ir, err := s.decode(ctx, req)
	if err != nil {
		return nil, Status(s.proxy.Reject("grpc", err)).Err()
	}
	// Admission learns each row's finish once its response is built (see
	// dispatch.Delivery); gRPC encodes and writes it after this returns.
	var dl dispatch.Delivery
	defer func() { dl.Done(time.Now()) }()
	res, err := s.proxy.Infer(dispatch.WithDelivery(ctx, &dl), "grpc", ir)
	if err != nil {
		return nil, Status(err).Err()
	}
	return response(req.GetId(), res), nil
}

// decode turns a ModelInferRequest into the proxy's.
func (s *Server) decode(ctx context.Context, req *pb.ModelInferRequest) (*proxy.InferRequest, error) {
	ir := &proxy.InferRequest{Model: req.GetModelName(), Version: req.GetModelVersion(), ID: req.GetId()}
	if p, ok := req.GetParameters()["timeout"]; ok {
		var err error
		if ir.Timeout, err = proxy.TimeoutParam(unsigned(p)); err != nil {
			return nil, err
		}
	}
	if deadline, ok := ctx.Deadline(); ok {
		left := time.Until(deadline)
		if left <= 0 {
			return nil, context.DeadlineExceeded
		}
		if ir.Timeout == 0 || left < ir.Timeout {
			ir.Timeout = left
		}
	}
	if p, ok := req.GetParameters()["priority"]; ok {
		var err error
		if ir.Priority, err = proxy.PriorityParam(unsigned(p)); err != nil {
			return nil, err
		}
	}
	for _, o := range req.GetOutputs() {
		ir.Outputs = append(ir.Outputs, o.GetName())
	}
	raw := req.GetRawInputContents()
	if len(raw) > 0 && len(raw) != len(req.GetInputs()) {
		return nil, fmt.Errorf("%w: %d raw_input_contents for %d inputs", proxy.ErrBadInput, len(raw), len(req.GetInputs()))
	}
	ir.Inputs = make([]proxy.InferInput, len(req.GetInputs()))
	for i, t := range req.GetInputs() {
		var r []byte
		if len(raw) > 0 {
			if t.GetContents() != nil {
				return nil, fmt.Errorf("%w: input %q has contents and raw_input_contents; send one", proxy.ErrBadInput, clip.String(t.GetName()))
			}
			r = raw[i]
		}
		in, err := s.input(t, r, len(raw) > 0)
		if err != nil {
			return nil, err
		}
		ir.Inputs[i] = in
	}
	return ir, nil
}

// unsigned reads an integer parameter that must not be negative.
func unsigned(p *pb.InferParameter) (uint64, bool) {
	switch v := p.GetParameterChoice().(type) {
	case *pb.InferParameter_Int64Param:
		return uint64(v.Int64Param), v.Int64Param >= 0
	case *pb.InferParameter_Uint64Param:
		return v.Uint64Param, true
	}
	return 0, false
}

// elementSize is the bytes of one element of a numeric datatype sloproxy
// takes; 0 for BYTES and others.
func elementSize(datatype string) int {
	switch datatype {
	case "FP32", "INT32":
		return 4
	case "FP64":
		return 8
	}
	return 0
}

// input splits one input tensor along dimension 0 into rows, from its
// typed contents or its raw bytes (hasRaw). Numeric rows are the RPC's
// little-endian values, taken from raw bytes without a copy.
func (s *Server) input(t *pb.ModelInferRequest_InferInputTensor, raw []byte, hasRaw bool) (proxy.InferInput, error) {
	in := proxy.InferInput{Name: t.GetName(), Datatype: t.GetDatatype(), Shape: t.GetShape()}
	name := clip.String(in.Name) // it appears only in errors
	if len(in.Shape) == 0 {
		return in, fmt.Errorf("%w: input %q has no shape; dimension 0 is the batch", proxy.ErrBadInput, name)
	}
	n, per, err := proxy.ShapeSize(in.Shape, int64(s.opts.MaxMessageBytes))
	if err != nil {
		return in, fmt.Errorf("%w: input %q: %v", proxy.ErrBadInput, name, err)
	}
	if n > int64(s.opts.MaxInputBatch) {
		return in, fmt.Errorf("%w: input %q has %d rows; the limit is %d", proxy.ErrBadInput, name, n, s.opts.MaxInputBatch)
	}
	size := elementSize(in.Datatype)
	switch {
	case in.Datatype == "BYTES" && per != 1:
		return in, fmt.Errorf("%w: input %q: a BYTES input takes one element per row, shape %v has %d", proxy.ErrBadInput, name, in.Shape, per)
	case in.Datatype == "BYTES" && hasRaw:
		in.Rows, err = splitBytes(raw, n)
	case in.Datatype == "BYTES":
		in.Rows = t.GetContents().GetBytesContents()
		if int64(len(in.Rows)) != n {
			err = fmt.Errorf("shape %v needs %d elements, bytes_contents has %d", in.Shape, n, len(in.Rows))
		}
	case size == 0:
		return in, nil // no model takes it; Infer names the datatype it wants
	case hasRaw:
		if int64(len(raw)) != n*per*int64(size) {
			err = fmt.Errorf("shape %v of %s needs %d raw bytes, has %d", in.Shape, in.Datatype, n*per*int64(size), len(raw))
			break
		}
		in.Rows = make([][]byte, n)
		row := int(per) * size
		for i := range in.Rows {
			in.Rows[i] = raw[i*row : (i+1)*row : (i+1)*row]
		}
	default:
		in.Rows, err = typedRows(t.GetContents(), in.Datatype, n, per)
		if err != nil {
			err = fmt.Errorf("shape %v: %w", in.Shape, err)
		}
	}
	if err != nil {
		return in, fmt.Errorf("%w: input %q: %v", proxy.ErrBadInput, name, err)
	}
	return in, nil
}

// typedRows encodes the typed contents of a numeric datatype into rows.
func typedRows(c *pb.InferTensorContents, datatype string, n, per int64) ([][]byte, error) {
	var count int
	var put func(b []byte, i int) []byte
	switch datatype {
	case "FP32":
		v := c.GetFp32Contents()
		count, put = len(v), func(b []byte, i int) []byte { return binary.LittleEndian.AppendUint32(b, math.Float32bits(v[i])) }
	case "FP64":
		v := c.GetFp64Contents()
		count, put = len(v), func(b []byte, i int) []byte { return binary.LittleEndian.AppendUint64(b, math.Float64bits(v[i])) }
	default: // INT32
		v := c.GetIntContents()
		count, put = len(v), func(b []byte, i int) []byte { return binary.LittleEndian.AppendUint32(b, uint32(v[i])) }
	}
	if int64(count) != n*per {
		return nil, fmt.Errorf("needs %d elements, the %s contents have %d", n*per, datatype, count)
	}
	buf := make([]byte, 0, count*elementSize(datatype))
	rows := make([][]byte, n)
	for r := range rows {
		start := len(buf)
		for i := int64(0); i < per; i++ {
			buf = put(buf, int(int64(r)*per+i))
		}
		rows[r] = buf[start:len(buf):len(buf)]
	}
	return rows, nil
}

// splitBytes splits raw BYTES contents, each element a 4-byte
// little-endian length and its bytes, into n elements.
func splitBytes(raw []byte, n int64) ([][]byte, error) {
	rows := make([][]byte, 0, n)
	for len(raw) > 0 {
		if len(raw) < 4 {
			return nil, errors.New("raw BYTES contents end inside an element's length")
		}
		l := binary.LittleEndian.Uint32(raw)
		if uint64(l) > uint64(len(raw)-4) {
			return nil, fmt.Errorf("raw BYTES element %d claims %d bytes, %d are left", len(rows), l, len(raw)-4)
		}
		rows = append(rows, raw[4:4+l:4+l])
		raw = raw[4+l:]
	}
	if int64(len(rows)) != n {
		return nil, fmt.Errorf("shape needs %d BYTES elements, raw contents have %d", n, len(rows))
	}
	return rows, nil
}

// response builds the ModelInferResponse of a result: its one output
// tensor in typed contents, and the default output flags as parameters.
func response(id string, res *proxy.InferResult) *pb.ModelInferResponse {
	datatype, shape, numbers := proxy.OutputTensor(res.Outputs)
	out := &pb.ModelInferResponse_InferOutputTensor{Name: "output", Datatype: datatype, Shape: shape, Contents: &pb.InferTensorContents{}}
	if datatype == "FP64" {
		out.Contents.Fp64Contents = numbers
	} else {
		out.Contents.BytesContents = res.Outputs
	}
	resp := &pb.ModelInferResponse{ModelName: res.Model, ModelVersion: res.Version, Id: id, Outputs: []*pb.ModelInferResponse_InferOutputTensor{out}}
	rows := res.DefaultRows()
	if rows != "" {
		resp.Parameters = map[string]*pb.InferParameter{
			proxy.ParamDefault:            {ParameterChoice: &pb.InferParameter_BoolParam{BoolParam: true}},
			proxy.ParamDefaultRows:        {ParameterChoice: &pb.InferParameter_StringParam{StringParam: rows}},
			proxy.ParamDefaultExplanation: {ParameterChoice: &pb.InferParameter_StringParam{StringParam: res.Explanation}},
		}
	}
	return resp
}

// Status maps an error of the query path to its gRPC status, as the REST
// API's statusOf maps it to HTTP: bad input and a model's refusal of an
// input are INVALID_ARGUMENT, an unknown app, model or version NOT_FOUND,
// admission's refusal RESOURCE_EXHAUSTED with a RetryInfo, a deadline
// DEADLINE_EXCEEDED, a model or proxy that cannot serve now UNAVAILABLE, a
// caller gone CANCELLED, anything else INTERNAL. The message is the
// error's, clipped to proxy.MaxErrorBytes as the REST API clips it: names
// from the request are clipped where a message is formatted, this bounds
// the whole.
func Status(err error) *status.Status {
	var tooLarge *http.MaxBytesError
	msg := clip.To(err.Error(), proxy.MaxErrorBytes)
	code := codes.Internal
	switch {
	case errors.Is(err, dispatch.ErrShed):
		wait, _ := proxy.RetryAfter(err)
		st := status.New(codes.ResourceExhausted, msg)
		if withInfo, derr := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(max(wait, time.Second))}); derr == nil {
			return withInfo
		}
		return st
	case errors.Is(err, dispatch.ErrDeadline), errors.Is(err, context.DeadlineExceeded): // a doomed query's error is ErrDeadline too
		code = codes.DeadlineExceeded
	case errors.Is(err, proxy.ErrBadInput), errors.Is(err, state.ErrInvalid), errors.As(err, new(*dispatch.ModelError)):
		code = codes.InvalidArgument
	case errors.Is(err, proxy.ErrNotFound), errors.Is(err, state.ErrNotFound):
		code = codes.NotFound
	case errors.As(err, &tooLarge), rpc.IsCode(err, rpc.FrameTooLarge):
		code = codes.ResourceExhausted
	case errors.Is(err, proxy.ErrUnavailable), errors.Is(err, dispatch.ErrStopped):
		code = codes.Unavailable
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	}
	return status.New(code, msg)
}
