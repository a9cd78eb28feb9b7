// Package inferencepb is the Go code protoc generates from
// grpc_predict_v2.proto, the Open Inference Protocol v2's gRPC definition
// (package inference, service GRPCInferenceService).
package inferencepb

//go:generate ../../../scripts/protoc-gen
