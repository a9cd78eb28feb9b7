package oipgrpc

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/sloproxy/sloproxy/proxy"
	pb "github.com/sloproxy/sloproxy/proxy/oipgrpc/inferencepb"
)

// FuzzDecodeInfer feeds any message to the gRPC service's decoder: it
// never panics, refuses what it refuses as bad input, and every row it
// accepts holds whole elements of its datatype, within the row limit.
func FuzzDecodeInfer(f *testing.F) {
	tensor := func(datatype string, shape []int64, c *pb.InferTensorContents) *pb.ModelInferRequest_InferInputTensor {
		return &pb.ModelInferRequest_InferInputTensor{Name: "input", Datatype: datatype, Shape: shape, Contents: c}
	}
	for _, m := range []*pb.ModelInferRequest{
		{ModelName: "m", Inputs: []*pb.ModelInferRequest_InferInputTensor{tensor("FP32", []int64{2, 2}, &pb.InferTensorContents{Fp32Contents: []float32{1, 2, 3, 4}})}},
		{ModelName: "m", Inputs: []*pb.ModelInferRequest_InferInputTensor{tensor("FP64", []int64{1, 2}, nil)}, RawInputContents: [][]byte{make([]byte, 16)}},
		{ModelName: "m", Inputs: []*pb.ModelInferRequest_InferInputTensor{tensor("BYTES", []int64{2}, nil)}, RawInputContents: [][]byte{{1, 0, 0, 0, 'a', 0, 0, 0, 0}}},
		{ModelName: "m", Inputs: []*pb.ModelInferRequest_InferInputTensor{tensor("INT32", []int64{1, 3}, &pb.InferTensorContents{IntContents: []int32{1, 2}})}},
		{ModelName: "m", Inputs: []*pb.ModelInferRequest_InferInputTensor{tensor("FP32", []int64{1 << 40, 1 << 40}, nil)}},
		{ModelName: "m", Parameters: map[string]*pb.InferParameter{"timeout": {ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: -1}}}},
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	s := &Server{opts: Options{MaxMessageBytes: 1 << 16, MaxInputBatch: 64}}
	f.Fuzz(func(t *testing.T, msg []byte) {
		var req pb.ModelInferRequest
		if proto.Unmarshal(msg, &req) != nil {
			return
		}
		ir, err := s.decode(context.Background(), &req)
		if err != nil {
			if !errors.Is(err, proxy.ErrBadInput) {
				t.Fatalf("%v is not bad input", err)
			}
			return
		}
		for _, in := range ir.Inputs {
			if len(in.Rows) > 64 {
				t.Fatalf("input %q: %d rows", in.Name, len(in.Rows))
			}
			for _, row := range in.Rows {
				if size := elementSize(in.Datatype); size > 0 && len(row)%size != 0 {
					t.Fatalf("input %q: a row of %d bytes for %s", in.Name, len(row), in.Datatype)
				}
			}
		}
	})
}
