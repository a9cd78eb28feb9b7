package state

import (
	"context"
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// The document's place in a Bolt file.
var (
	boltBucket = []byte("state")
	boltKey    = []byte("document")
)

// Bolt is a Backend in a bbolt file on local disk: the embedded default,
// for one proxy whose state outlives its restarts. The document is kept
// in memory, as Memory keeps it, and each Update writes it to the file in
// one bbolt transaction, synced to disk, before it is installed: a change
// the Store reports as made survives a crash of the process or the host.
//
// bbolt locks the file for one process, so only this process writes it:
// the copy in memory is always the file's latest, Load never reads the
// disk, and Watch announces the changes of every Store over this Bolt, as
// Memory's does. Several proxies share state through Redis instead.
type Bolt struct {
	db   *bolt.DB
	path string // db's, which db forgets when closed
	mem  *Memory
}

var _ Backend = (*Bolt)(nil)

// NewBolt returns a Bolt backend over db, which the caller opened and
// closes after the Stores over it (it may share db with others, such as
// the selection policies' state, which use other buckets). It creates the
// bucket "state" if db lacks it and loads the document stored there; it
// fails if the file holds no valid document or cannot be written.
func NewBolt(db *bolt.DB) (*Bolt, error) {
	d := &Data{Schema: schemaVersion}
	err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(boltBucket)
		if err != nil {
			return err
		}
		raw := b.Get(boltKey)
		if raw == nil {
			return nil
		}
		d = new(Data)
		if err := json.Unmarshal(raw, d); err != nil {
			return fmt.Errorf("holds no valid state document: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("state: %s: %w", db.Path(), err)
	}
	b := &Bolt{db: db, path: db.Path()}
	b.mem = newMemory(d, b.save)
	return b, nil
}

// Path returns the file's path.
func (b *Bolt) Path() string { return b.path }

// Load returns the current document.
func (b *Bolt) Load(ctx context.Context) (*Data, error) { return b.mem.Load(ctx) }

// Update applies fn to a copy of the current document and commits it to
// the file. Writers are serialized, so fn runs once.
func (b *Bolt) Update(ctx context.Context, fn func(*Data) error) (*Data, error) {
	return b.mem.Update(ctx, fn)
}

// Watch calls notify once it is registered, then after every Update,
// until ctx is done.
func (b *Bolt) Watch(ctx context.Context, notify func(revision uint64)) error {
	return b.mem.Watch(ctx, notify)
}

// save writes d to the file, synced: Memory's hook, called under its lock.
func (b *Bolt) save(d *Data) error {
	raw, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("state: encode: %w", err)
	}
	err = b.db.Update(func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists(boltBucket)
		if err != nil {
			return err
		}
		return bk.Put(boltKey, raw)
	})
	if err != nil {
		return fmt.Errorf("%w: bolt: write %s: %w", ErrUnavailable, b.path, err)
	}
	return nil
}
