package selection

import (
	"context"
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// boltBucket holds the maps of a Bolt state, one JSON object per key.
var boltBucket = []byte("selection")

// Bolt is a State in a bbolt file on local disk: the embedded default, for
// one proxy whose learning outlives its restarts. Each Add is one bbolt
// write transaction, synced to disk; bbolt serializes them, so concurrent
// feedback is never lost. Reads are bbolt read transactions, which do not
// wait for writes.
type Bolt struct {
	db   *bolt.DB
	path string // db's, which db forgets when closed
}

var _ State = (*Bolt)(nil)

// NewBolt returns a Bolt state over db, which the caller opened and closes
// (it may share db with the state store, which uses another bucket). It
// creates the bucket "selection" if db lacks it.
func NewBolt(db *bolt.DB) (*Bolt, error) {
	err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(boltBucket)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("selection: %s: %w", db.Path(), err)
	}
	return &Bolt{db: db, path: db.Path()}, nil
}

// Get implements State.
func (b *Bolt) Get(ctx context.Context, key string) (map[string]float64, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var m map[string]float64
	err := b.db.View(func(tx *bolt.Tx) error {
		var err error
		m, err = b.decode(tx, key)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("selection: reading %s from %s: %w", key, b.path, err)
	}
	return m, nil
}

// Add implements State.
func (b *Bolt) Add(ctx context.Context, key string, deltas map[string]float64, gap float64) (map[string]float64, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var m map[string]float64
	err := b.db.Update(func(tx *bolt.Tx) error {
		var err error
		if m, err = b.decode(tx, key); err != nil {
			return err
		}
		for k, d := range deltas {
			m[k] += d
		}
		normalize(m, gap)
		raw, err := json.Marshal(m)
		if err != nil {
			return err
		}
		return tx.Bucket(boltBucket).Put([]byte(key), raw)
	})
	if err != nil {
		return nil, fmt.Errorf("selection: updating %s in %s: %w", key, b.path, err)
	}
	return m, nil
}

// decode returns a new map holding the one stored at key in tx; empty if
// none is.
func (b *Bolt) decode(tx *bolt.Tx, key string) (map[string]float64, error) {
	m := map[string]float64{}
	raw := tx.Bucket(boltBucket).Get([]byte(key))
	if raw == nil {
		return m, nil
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("not a map of numbers: %w", err)
	}
	return m, nil
}
