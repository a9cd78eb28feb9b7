package state_test

import (
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/sloproxy/sloproxy/internal/testutil"
	"github.com/sloproxy/sloproxy/state"
)

// TestBoltRestart closes a Store and its file, as a proxy that stops does,
// and opens them again: the new Store starts with everything the first one
// committed, at the same revision, and goes on from there.
func TestBoltRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	ctx := t.Context()

	db := testutil.OpenBolt(t, path)
	first := state.NewStore(newBoltBackend(t, db), state.Options{})
	must(t, first.Start(ctx))
	must(t, first.PutApp(ctx, app("a", state.InputFloat32)))
	must(t, first.PutVersion(ctx, version("m", "1", state.InputFloat32)))
	must(t, first.PutVersion(ctx, version("m", "2", state.InputFloat32)))
	must(t, first.SetCurrent(ctx, "m", "2"))
	must(t, first.Link(ctx, "a", "m"))
	must(t, first.SetReplicas(ctx, "m", "2", []string{"127.0.0.1:7001", "127.0.0.1:7002"}))
	want := first.Snapshot()
	must(t, first.Close())
	must(t, db.Close())

	second := startStore(t, newBoltBackend(t, testutil.OpenBolt(t, path)), state.Options{})
	got := second.Snapshot()
	if got.Revision() != want.Revision() {
		t.Errorf("after reopening, revision %d; want %d", got.Revision(), want.Revision())
	}
	if !reflect.DeepEqual(got.Apps(), want.Apps()) || !reflect.DeepEqual(got.Models(), want.Models()) {
		t.Errorf("after reopening: apps %+v, models %+v; want %+v, %+v", got.Apps(), got.Models(), want.Apps(), want.Models())
	}
	if v, _ := got.Current("m"); v.Version != "2" {
		t.Errorf("after reopening, current version %q; want 2", v.Version)
	}
	if m := got.ModelsOf("a"); !reflect.DeepEqual(m, []string{"m"}) {
		t.Errorf("after reopening, ModelsOf(a) = %v; want [m]", m)
	}
	if r := got.Replicas("m", "2"); !reflect.DeepEqual(r, []string{"127.0.0.1:7001", "127.0.0.1:7002"}) {
		t.Errorf("after reopening, Replicas = %v", r)
	}
	must(t, second.PutApp(ctx, app("b", state.InputBytes)))
	if got := second.Snapshot().Revision(); got != want.Revision()+1 {
		t.Errorf("the first change after reopening made revision %d; want %d", got, want.Revision()+1)
	}
}

// TestBoltWriteFails: a change that cannot be written to the file is
// refused with ErrUnavailable, naming the file, and leaves the state as it
// was.
func TestBoltWriteFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db := testutil.OpenBolt(t, path)
	s := startStore(t, newBoltBackend(t, db), state.Options{})
	ctx := t.Context()
	must(t, s.PutApp(ctx, app("a", state.InputString)))
	before := s.Snapshot()
	must(t, db.Close()) // every later write fails

	err := s.PutApp(ctx, app("b", state.InputString))
	if !errors.Is(err, state.ErrUnavailable) || !strings.Contains(err.Error(), path) {
		t.Fatalf("PutApp on a closed file: %v; want ErrUnavailable naming %s", err, path)
	}
	if s.Snapshot() != before {
		t.Errorf("a failed write changed the snapshot to revision %d", s.Snapshot().Revision())
	}
	// The failed document is not kept in memory either: the next change
	// starts from the last one written.
	b, _ := state.NewBolt(testutil.OpenBolt(t, path))
	if d, err := b.Load(ctx); err != nil || d.Revision != before.Revision() || d.Apps["b"].Name != "" {
		t.Errorf("file after the failed write: revision %d, apps %v, %v; want revision %d without b", d.Revision, d.Apps, err, before.Revision())
	}
}

// TestBoltBadFile: a file whose document cannot be read, or was written by
// a newer sloproxy, fails the start with a message naming the problem,
// and is not overwritten.
func TestBoltBadFile(t *testing.T) {
	cases := []struct {
		name     string
		document string
		newBolt  string // part of NewBolt's error; empty: NewBolt succeeds
		start    string // part of Start's error
	}{
		{"not JSON", "{not json", "holds no valid state document", ""},
		{"newer schema", `{"schema": 99, "revision": 7}`, "", "schema 99"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.db")
			db := testutil.OpenBolt(t, path)
			must(t, db.Update(func(tx *bolt.Tx) error {
				bk, err := tx.CreateBucketIfNotExists([]byte("state"))
				if err != nil {
					return err
				}
				return bk.Put([]byte("document"), []byte(c.document))
			}))
			b, err := state.NewBolt(db)
			if c.newBolt != "" {
				if err == nil || !strings.Contains(err.Error(), c.newBolt) || !strings.Contains(err.Error(), path) {
					t.Fatalf("NewBolt: %v; want an error naming %s and saying %q", err, path, c.newBolt)
				}
				return
			}
			must(t, err)
			s := state.NewStore(b, state.Options{})
			if err := s.Start(t.Context()); err == nil || !strings.Contains(err.Error(), c.start) {
				t.Fatalf("Start: %v; want an error saying %q", err, c.start)
			}
			must(t, db.View(func(tx *bolt.Tx) error {
				if got := string(tx.Bucket([]byte("state")).Get([]byte("document"))); got != c.document {
					t.Errorf("the file now holds %q; want it untouched", got)
				}
				return nil
			}))
		})
	}
}
