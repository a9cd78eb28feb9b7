// Command onnx is a sloproxy model container that serves an ONNX model on
// CPU with pure-Go inference (github.com/advancedclimatesystems/gonnx): no
// cgo, no onnxruntime. It speaks the RPC contract of docs/rpc.md; items are
// float32 vectors and each answer is a JSON array of numbers.
//
//	onnx --model /models/mlp.onnx [--addr 0.0.0.0:7000] [--name mlp] [--version 1] [--max-batch 256]
//
// Flags win over the environment ($SLOPROXY_RPC_ADDR, $SLOPROXY_MODEL_NAME,
// $SLOPROXY_MODEL_VERSION, $SLOPROXY_MODEL_PATH).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/sloproxy/sloproxy/containers/rpc"
	"go.uber.org/zap"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "onnx:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("onnx", flag.ContinueOnError)
	modelPath := fs.String("model", "", "path of the .onnx file (default $SLOPROXY_MODEL_PATH, else /model.onnx)")
	addr := fs.String("addr", "", "address to listen on (default $SLOPROXY_RPC_ADDR, else 0.0.0.0:7000)")
	name := fs.String("name", "", "model name sent in HELLO (default $SLOPROXY_MODEL_NAME, else the file's base name)")
	version := fs.String("version", "", "model version sent in HELLO (default $SLOPROXY_MODEL_VERSION, else 1)")
	maxBatch := fs.Uint("max-batch", 256, "most items per PREDICT (0: the contract's limit of 65,536)")
	maxInFlight := fs.Int("max-in-flight", 0, "requests one connection computes at once (0: the server's default, 4)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if *maxBatch > rpc.MaxBatch {
		return fmt.Errorf("--max-batch %d exceeds the contract's limit of %d items", *maxBatch, rpc.MaxBatch)
	}

	path := rpc.ModelPath(*modelPath, "/model.onnx")
	m, err := loadONNXModel(path)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}

	log, err := zap.NewProduction()
	if err != nil {
		return err
	}
	defer log.Sync() //nolint:errcheck // nothing to do about a failed flush at exit

	hello := rpc.Hello{
		InputType:    rpc.Float32,
		MaxBatch:     uint32(*maxBatch),
		Model:        rpc.ModelName(*name, strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))),
		ModelVersion: rpc.ModelVersion(*version),
	}
	srv := rpc.NewServer(m, rpc.ServerOptions{Hello: hello, MaxInFlight: *maxInFlight, Secret: rpc.SecretFromEnv(), Logger: log})

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", rpc.ListenAddr(*addr))
	if err != nil {
		return err
	}
	log.Info("serving",
		zap.String("addr", ln.Addr().String()),
		zap.String("model", hello.Model),
		zap.String("version", hello.ModelVersion),
		zap.String("file", path),
		zap.Int("input_width", m.width),
		zap.Uint32("max_batch", hello.MaxBatch))
	return srv.Serve(ctx, ln)
}
