package rpc

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

var secret = []byte("the-right-secret")

// startAuthServer serves echo with secret on a fresh loopback port until
// the test ends; its refusals are logged to the returned observer.
func startAuthServer(t *testing.T) (string, *observer.ObservedLogs) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.WarnLevel)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	srv := NewServer(&echo{}, ServerOptions{Hello: bytesHello, Secret: secret, Logger: zap.New(core)})
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String(), logs
}

// handshake dials addr once with secret and returns the HELLO, or why the
// connection was refused.
func handshake(t *testing.T, addr string, secret []byte) (Hello, error) {
	t.Helper()
	c := NewClient(addr, ClientOptions{Secret: secret})
	cc, h, err := c.dial(context.Background())
	if err == nil {
		cc.nc.Close()
	}
	return h, err
}

// served checks that a client with secret gets its predictions answered.
func served(t *testing.T, addr string, secret []byte) {
	t.Helper()
	c := NewClient(addr, ClientOptions{Secret: secret})
	c.Start(context.Background())
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	out, err := c.Predict(ctx, Bytes, [][]byte{[]byte("hi")})
	if err != nil || string(out[0].Data) != "hi" {
		t.Fatalf("Predict = %v, %v; want the echo of hi", out, err)
	}
}

func TestAuthentication(t *testing.T) {
	addr, logs := startAuthServer(t)
	plain := startServer(t, &echo{}, bytesHello)
	cases := []struct {
		name   string
		addr   string
		secret []byte
		want   func(error) bool
	}{
		{"right secret", addr, secret, func(err error) bool { return err == nil }},
		{"wrong secret", addr, []byte("a-wrong-secret"), func(err error) bool { return IsCode(err, Unauthenticated) }},
		{"no secret", addr, nil, func(err error) bool { return IsCode(err, Unauthenticated) }},
		{"a secret for a container that asks none", plain, secret, func(err error) bool { return errors.Is(err, ErrUnexpectedAuth) }},
		{"loopback without secrets", plain, nil, func(err error) bool { return err == nil }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, err := handshake(t, tc.addr, tc.secret)
			if !tc.want(err) {
				t.Fatalf("handshake: %v", err)
			}
			if err == nil && tc.addr == addr && len(h.AuthNonce) != AuthNonceLen {
				t.Fatalf("HELLO nonce %x, want %d bytes", h.AuthNonce, AuthNonceLen)
			}
		})
	}
	// The container logged its refusals (the wrong MAC and the missing
	// AUTH), and it serves the right secret as before.
	if n := logs.FilterMessage("refused a peer that did not authenticate").Len(); n != 2 {
		t.Errorf("%d refusals logged, want 2: %v", n, logs.All())
	}
	served(t, addr, secret)
	served(t, plain, nil)
}

// TestAuthNonceFresh checks that each connection gets its own nonce, so a
// recorded AUTH cannot be replayed.
func TestAuthNonceFresh(t *testing.T) {
	addr, _ := startAuthServer(t)
	a, errA := handshake(t, addr, secret)
	b, errB := handshake(t, addr, secret)
	if errA != nil || errB != nil {
		t.Fatal(errA, errB)
	}
	if string(a.AuthNonce) == string(b.AuthNonce) {
		t.Fatalf("two connections got the same nonce %x", a.AuthNonce)
	}
}

// TestPredictBeforeAuthRefused sends a PREDICT as a client of an older
// contract would: the container answers UNAUTHENTICATED and closes.
func TestPredictBeforeAuthRefused(t *testing.T) {
	addr, _ := startAuthServer(t)
	nc, fr := rawConn(t, addr)
	p := Predict{ID: 1, InputType: Bytes, Inputs: [][]byte{[]byte("x")}}
	if _, err := nc.Write(AppendFrame(nil, &p)); err != nil {
		t.Fatal(err)
	}
	if m, ok := readMsg(t, fr).(*Error); !ok || m.Code != Unauthenticated {
		t.Fatalf("answer %#v, want an UNAUTHENTICATED ERROR", m)
	}
	if _, _, err := fr.Next(); err == nil {
		t.Fatal("the connection stayed open after the refusal")
	}
}

// TestAuthWithPython runs the Python library's container with a secret
// and authenticates to it with the Go client, right and wrong; then the
// Python client authenticates to the Go server, right and wrong. Both
// languages' MACs are the contract's.
func TestAuthWithPython(t *testing.T) {
	const python = "/usr/bin/python3" // Debian's, which scripts/test installs
	lib, err := filepath.Abs(filepath.Join("..", "python"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pyAddr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(python, "-c", `import sloproxy_rpc; sloproxy_rpc.serve(lambda xs: xs, "bytes", "echo")`)
	cmd.Env = append(os.Environ(), "PYTHONPATH="+lib, "SLOPROXY_RPC_ADDR="+pyAddr, SecretEnv+"="+string(secret))
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stop := func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
	defer stop()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err = handshake(t, pyAddr, secret); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the Python container did not authenticate us: %v\n%s", err, &out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := handshake(t, pyAddr, []byte("a-wrong-secret")); !IsCode(err, Unauthenticated) {
		t.Fatalf("the Python container took a wrong secret: %v", err)
	}
	served(t, pyAddr, secret)

	goAddr, _ := startAuthServer(t)
	script := `
import sys, sloproxy_rpc as rpc
addr, right = sys.argv[1], sys.argv[2].encode()
assert rpc.Client(addr, secret=right).predict([b"hi"]) == [b"hi"]
try:
    rpc.Client(addr, secret=b"a-wrong-secret")
except rpc.RPCError as e:
    assert e.code == rpc.UNAUTHENTICATED, e
else:
    sys.exit("a wrong secret was accepted")
`
	py := exec.Command(python, "-c", script, goAddr, string(secret))
	py.Env = append(os.Environ(), "PYTHONPATH="+lib)
	if b, err := py.CombinedOutput(); err != nil {
		t.Fatalf("the Python client against the Go server: %v\n%s", err, b)
	}
	stop() // then out is the container's, complete
	if !strings.Contains(out.String(), "refused") {
		t.Errorf("the Python container did not log its refusal:\n%s", &out)
	}
}
