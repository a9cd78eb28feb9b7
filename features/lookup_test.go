package features

import (
	"bufio"
	"encoding/json"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sloproxy/sloproxy/state"
)

// TestFetchKeepsReplyErrors: a store that refuses the first entity of a
// pipeline and then drops the connection gives that entity its miss and
// the rest the missing-entity policy as a store down.
func TestFetchKeepsReplyErrors(t *testing.T) {
	addr := fakeStore(t, serveFirstHMGET)
	table := NewTable(Options{})
	defer table.Close()
	app := state.App{Name: "a", InputType: state.InputFloat64,
		Features: json.RawMessage(`{"key": "u:{id}", "fields": [{"name": "x"}], "missing": "not_found", "timeout_ms": 1000, "redis": "` + addr + `"}`)}
	rows := table.For(app).Fetch(t.Context(), time.Now().Add(time.Minute), app.InputType, [][]string{{"1"}, {"2"}})
	if rows[0].Outcome != EntityNotFound || !strings.Contains(rows[0].Why, "the feature store refused u:1: WRONGTYPE") {
		t.Errorf("the refused entity: %+v; want not found", rows[0])
	}
	if rows[1].Outcome != StoreUnavailable || !strings.Contains(rows[1].Why, "the feature store did not answer") {
		t.Errorf("the entity whose reply never came: %+v; want unavailable", rows[1])
	}
}

// fakeStore listens on a free port and hands each connection, in turn,
// to serve on one goroutine; when the test ends it stops, closing every
// connection. It returns the address.
func fakeStore(t *testing.T, serve func(net.Conn)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var serving sync.WaitGroup
	t.Cleanup(serving.Wait)
	t.Cleanup(func() { _ = ln.Close() })
	serving.Go(func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				_ = c.Close()
			}
		}()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, conn)
			serve(conn)
		}
	})
	return ln.Addr().String()
}

// serveFirstHMGET answers conn's commands as a store that knows no HELLO
// and drops the connection at its second HMGET, having refused the first.
func serveFirstHMGET(conn net.Conn) {
	defer conn.Close()
	rd := bufio.NewReader(conn)
	hmgets := 0
	for {
		line, err := rd.ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "*") {
			return
		}
		n, _ := strconv.Atoi(strings.TrimSpace(line[1:]))
		args := make([]string, n)
		for i := range args {
			if _, err := rd.ReadString('\n'); err != nil { // $len
				return
			}
			arg, err := rd.ReadString('\n')
			if err != nil {
				return
			}
			args[i] = strings.TrimSpace(arg)
		}
		reply := "+OK\r\n"
		switch strings.ToLower(args[0]) {
		case "hello":
			reply = "-ERR unknown command 'HELLO'\r\n"
		case "hmget":
			if hmgets++; hmgets > 1 {
				return
			}
			reply = "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
		}
		if _, err := conn.Write([]byte(reply)); err != nil {
			return
		}
	}
}

// TestMissUnderDefaultsAllocates: a missing entity under use_defaults
// costs its values, not an explanation no caller reads.
func TestMissUnderDefaultsAllocates(t *testing.T) {
	s := Spec{Key: "user:{id}:{region}", Fields: []Field{{Name: "a", Default: zero()}, {Name: "b", Default: zero()}}}
	l := newLookup("app", s, nil, newMetrics(nil))
	entity, missing := []string{"7", "eu"}, []any{nil, nil}
	var r Row
	allocs := testing.AllocsPerRun(100, func() { r = l.row(state.InputFloat32, missing, entity) })
	if r.Outcome != Defaults || r.Why != "" || len(r.Values) != 8 {
		t.Fatalf("row %+v; want the defaults", r)
	}
	if allocs > 2 {
		t.Errorf("%v allocations for a missing entity; want at most 2 (the values)", allocs)
	}
}

// TestBrokenLookupIsNoStoreError: a spec that cannot serve here answers
// its queries unavailable without counting a store error.
func TestBrokenLookupIsNoStoreError(t *testing.T) {
	table := NewTable(Options{})
	defer table.Close()
	app := state.App{Name: "a", InputType: state.InputString, Features: json.RawMessage(`{"key": "u:{id}", "fields": [{"name": "x", "default": 0}], "redis": "127.0.0.1:1"}`)}
	rows := table.For(app).Fetch(t.Context(), time.Now().Add(time.Minute), app.InputType, [][]string{{"1"}})
	if rows[0].Outcome != StoreUnavailable {
		t.Fatalf("rows %+v; want unavailable", rows)
	}
	if n := promtest.ToFloat64(table.metrics.errors.WithLabelValues("a")); n != 0 {
		t.Errorf("%v store errors for a spec that cannot serve; want 0", n)
	}
}

// TestFetchEndsByTheDeadline: the queries' deadline, when it is before the
// spec's timeout, bounds the lookup.
func TestFetchEndsByTheDeadline(t *testing.T) {
	addr := fakeStore(t, func(net.Conn) {}) // never answers
	table := NewTable(Options{})
	defer table.Close()
	app := state.App{Name: "a", InputType: state.InputFloat32,
		Features: json.RawMessage(`{"key": "u:{id}", "fields": [{"name": "x"}], "missing": "not_found", "timeout_ms": 10000, "redis": "` + addr + `"}`)}
	start := time.Now()
	rows := table.For(app).Fetch(t.Context(), start.Add(50*time.Millisecond), app.InputType, [][]string{{"1"}})
	if took := time.Since(start); took > 5*time.Second || rows[0].Outcome != StoreUnavailable {
		t.Fatalf("%+v after %v; want unavailable by the deadline", rows, took)
	}
}

// TestTableCheckApp: the state refuses a change of an app its features
// spec cannot fill: the stored spec, or, with none, the file's.
func TestTableCheckApp(t *testing.T) {
	table := NewTable(Options{})
	defer table.Close()
	if err := table.Set(map[string]Spec{"a": {Key: "u:{id}", Fields: []Field{{Name: "x", Default: zero()}}, Input: "user", Redis: "127.0.0.1:1"}}); err != nil {
		t.Fatal(err)
	}
	store := state.NewStore(nil, state.Options{CheckApp: table.CheckApp})
	app := state.App{Name: "a", InputType: state.InputFloat32, SLO: time.Second, Inputs: []state.InputPart{{Name: "user", Size: 1}}}
	if err := store.PutApp(t.Context(), app); err != nil {
		t.Fatalf("an app the file's spec fills: %v", err)
	}
	wide := app
	wide.Inputs = []state.InputPart{{Name: "user", Size: 2}}
	if err := store.PutApp(t.Context(), wide); !errors.Is(err, state.ErrConflict) || !strings.Contains(err.Error(), "the configuration file's features spec does not fit its input") {
		t.Fatalf("an app the file's spec cannot fill: %v; want a conflict", err)
	}
	stored := json.RawMessage(`{"key": "u:{id}", "fields": [{"name": "x", "default": 0}, {"name": "y", "default": 0}], "input": "user", "redis": "127.0.0.1:1"}`)
	if err := store.UpdateApp(t.Context(), "a", func(a *state.App, _ []string) error { a.Inputs, a.Features = wide.Inputs, stored; return nil }); err != nil {
		t.Fatalf("a stored spec in the file's place: %v", err)
	}
	err := store.UpdateApp(t.Context(), "a", func(a *state.App, _ []string) error { a.Features = nil; return nil })
	if !errors.Is(err, state.ErrConflict) {
		t.Fatalf("removing the stored spec, which puts back a file's spec that cannot fill the app: %v; want a conflict", err)
	}
	if err := store.PutApp(t.Context(), app); !errors.Is(err, state.ErrConflict) || !strings.Contains(err.Error(), "the features spec set through the admin API does not fit its input") {
		t.Fatalf("an app the stored spec cannot fill: %v; want a conflict", err)
	}
}
