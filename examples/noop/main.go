// Command noop is a model container that answers every input with itself.
// It costs nothing to compute, so it measures the overhead of the proxy and
// the RPC contract.
package main

import (
	"context"
	"flag"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/sloproxy/sloproxy/containers/rpc"
)

func main() {
	addr := flag.String("addr", "", "listen address (default $SLOPROXY_RPC_ADDR or 0.0.0.0:7000)")
	name := flag.String("name", "", "model name (default $SLOPROXY_MODEL_NAME or noop)")
	version := flag.String("version", "", "model version (default $SLOPROXY_MODEL_VERSION or 1)")
	inputType := flag.String("input-type", "bytes", "input type: bytes, int32, float32, float64 or string")
	helloDelay := flag.Duration("hello-delay", 0, "hold connections this long after the start before sending HELLO, as a model loading its weights does (tests of slow starts)")
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
	if *helloDelay > 0 {
		ln = &slowListener{Listener: ln, ctx: ctx, ready: time.Now().Add(*helloDelay)}
	}
	hello := rpc.Hello{InputType: it, Model: rpc.ModelName(*name, "noop"), ModelVersion: rpc.ModelVersion(*version)}
	// Refused peers (a wrong or missing AUTH) are logged to stderr.
	logger, err := zap.NewProduction()
	if err != nil {
		log.Fatal(err)
	}
	defer logger.Sync() //nolint:errcheck // nothing to do about a failed flush at exit
	if err := rpc.NewServer(rpc.ModelFunc(echo), rpc.ServerOptions{Hello: hello, Secret: rpc.SecretFromEnv(), Logger: logger}).Serve(ctx, ln); err != nil {
		log.Fatal(err)
	}
}

// echo returns each input as its output.
func echo(_ context.Context, inputs [][]byte) ([]rpc.Output, error) {
	out := make([]rpc.Output, len(inputs))
	for i, in := range inputs {
		out[i].Data = in
	}
	return out, nil
}

// slowListener holds each connection it accepts until ready, so that the
// server's HELLO, sent on accept, comes no earlier: a model that listens at
// once but loads for a while.
type slowListener struct {
	net.Listener
	ctx   context.Context
	ready time.Time
}

// Accept returns the next connection once ready has passed; if ctx ends
// first, it closes the connection and fails.
func (l *slowListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	t := time.NewTimer(time.Until(l.ready))
	defer t.Stop()
	select {
	case <-t.C:
		return c, nil
	case <-l.ctx.Done():
		_ = c.Close()
		return nil, net.ErrClosed
	}
}
