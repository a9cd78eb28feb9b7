// Command costmodel is a synthetic model container whose batch of n inputs
// takes a + b·n (plus optional uniform jitter) and which runs one batch at a
// time, like a model that owns its processor. It is the reference workload
// for the batching benchmarks: with known a and b the best achievable
// throughput under a latency objective can be derived exactly.
package main

import (
	"context"
	"flag"
	"log"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/sloproxy/sloproxy/containers/rpc"
)

func main() {
	addr := flag.String("addr", "", "listen address (default $SLOPROXY_RPC_ADDR or 0.0.0.0:7000)")
	name := flag.String("name", "", "model name (default $SLOPROXY_MODEL_NAME or costmodel)")
	version := flag.String("version", "", "model version (default $SLOPROXY_MODEL_VERSION or 1)")
	inputType := flag.String("input-type", "float32", "input type: bytes, int32, float32, float64 or string")
	maxBatch := flag.Uint("max-batch", 0, "largest batch accepted (0: no limit)")
	a := flag.Duration("a", envDuration("COSTMODEL_A", 5*time.Millisecond), "fixed cost of a batch (env COSTMODEL_A)")
	b := flag.Duration("b", envDuration("COSTMODEL_B", 250*time.Microsecond), "cost per item (env COSTMODEL_B)")
	jitter := flag.Duration("jitter", envDuration("COSTMODEL_JITTER", 0), "uniform extra delay in [0, jitter) per batch (env COSTMODEL_JITTER)")
	flag.Parse()
	it, err := rpc.ParseInputType(*inputType)
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", rpc.ListenAddr(*addr))
	if err != nil {
		log.Fatal(err)
	}
	hello := rpc.Hello{InputType: it, MaxBatch: uint32(*maxBatch), Model: rpc.ModelName(*name, "costmodel"), ModelVersion: rpc.ModelVersion(*version)}
	m := newCostModel(*a, *b, *jitter, sleepPrecise)
	// Refused peers (a wrong or missing AUTH) are logged to stderr.
	logger, err := zap.NewProduction()
	if err != nil {
		log.Fatal(err)
	}
	defer logger.Sync() //nolint:errcheck // nothing to do about a failed flush at exit
	if err := rpc.NewServer(m, rpc.ServerOptions{Hello: hello, Secret: rpc.SecretFromEnv(), Logger: logger}).Serve(ctx, ln); err != nil {
		log.Fatal(err)
	}
}

func envDuration(key string, def time.Duration) time.Duration {
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		log.Fatalf("%s=%q: %v", key, v, err)
	}
	return d
}

// output is what every item answers: a JSON number, so the proxy returns it
// as JSON.
var output = []byte(strconv.Itoa(1))
