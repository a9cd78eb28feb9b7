package rpc

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// addGoldenSeeds seeds f with every golden vector file.
func addGoldenSeeds(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "golden", "*.bin"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no golden vectors: %v", err)
	}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// FuzzDecode reads frames from arbitrary bytes. It must never panic or
// allocate beyond the frame limit, and whatever decodes must re-encode to a
// frame that decodes to the same message.
func FuzzDecode(f *testing.F) {
	addGoldenSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		fr := NewFrameReader(bytes.NewReader(data), 1<<16)
		for {
			typ, payload, err := fr.Next()
			if err != nil {
				return
			}
			m, err := Decode(typ, payload)
			if err != nil {
				continue
			}
			again, err := readOne(AppendFrame(nil, m), 0)
			if err != nil {
				t.Fatalf("re-encoded %T does not decode: %v", m, err)
			}
			if !reflect.DeepEqual(normalize(again), normalize(m)) {
				t.Fatalf("round trip changed the message:\n%#v\n%#v", m, again)
			}
		}
	})
}

// FuzzServer sends arbitrary bytes to a real server over a socket. The
// server must answer or close, never panic or hang, and keep accepting
// connections.
func FuzzServer(f *testing.F) {
	addGoldenSeeds(f)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	hello := Hello{InputType: Bytes, MaxBatch: 16, MaxFrame: 1 << 16}
	go func() { done <- NewServer(&echo{}, ServerOptions{Hello: hello}).Serve(ctx, ln) }()
	f.Cleanup(func() { cancel(); <-done })
	addr := ln.Addr().String()
	f.Fuzz(func(t *testing.T, data []byte) {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := nc.Write(data); err != nil {
			return // the server closed early: allowed
		}
		// Then a PING: the server either answers it or has closed.
		_, _ = nc.Write(AppendFrame(nil, &Ping{Nonce: 7}))
		nc.(*net.TCPConn).CloseWrite()
		fr := NewFrameReader(nc, 0)
		for {
			typ, payload, err := fr.Next()
			if err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatal("server hung")
				}
				return
			}
			if _, err := Decode(typ, payload); err != nil {
				t.Fatalf("server sent a frame that does not decode: %v", err)
			}
		}
	})
}
