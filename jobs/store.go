package jobs

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"

	"github.com/redis/go-redis/v9"
	bolt "go.etcd.io/bbolt"

	"github.com/sloproxy/sloproxy/state"
)

// sortJobs orders records oldest first, then by id.
func sortJobs(js []Job) {
	slices.SortFunc(js, func(a, b Job) int {
		return cmp.Or(a.Created.Compare(b.Created), cmp.Compare(a.ID, b.ID))
	})
}

func notFound(id string) error { return fmt.Errorf("%w: no job %q", state.ErrNotFound, id) }

// Memory is a Store in the process: tests, and jobs that need not
// outlive it.
type Memory struct {
	mu   sync.Mutex // guards jobs
	jobs map[string]Job
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty Memory.
func NewMemory() *Memory { return &Memory{jobs: map[string]Job{}} }

// Put implements Store.
func (m *Memory) Put(_ context.Context, j Job) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.jobs[j.ID] = j
	return nil
}

// Get implements Store.
func (m *Memory) Get(_ context.Context, id string) (Job, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	j, ok := m.jobs[id]
	if !ok {
		return Job{}, notFound(id)
	}
	return j, nil
}

// List implements Store.
func (m *Memory) List(context.Context) ([]Job, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	js := make([]Job, 0, len(m.jobs))
	for _, j := range m.jobs {
		js = append(js, j)
	}
	sortJobs(js)
	return js, nil
}

// boltBucket holds a Bolt store's records, one JSON object per job id.
var boltBucket = []byte("jobs")

// Bolt is a Store in a bbolt file on local disk: the data directory's
// state file, for one proxy whose jobs outlive its restarts. Each Put is
// one bbolt write transaction, synced to disk before it returns, so a
// checkpoint that Put recorded survives a crash.
type Bolt struct {
	db   *bolt.DB
	path string // db's, which db forgets when closed
}

var _ Store = (*Bolt)(nil)

// NewBolt returns a Bolt store over db, which the caller opened and closes
// (it may share db with the state, which uses other buckets). It creates
// the bucket "jobs" if db lacks it.
func NewBolt(db *bolt.DB) (*Bolt, error) {
	err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(boltBucket)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("jobs: %s: %w", db.Path(), err)
	}
	return &Bolt{db: db, path: db.Path()}, nil
}

// Put implements Store.
func (b *Bolt) Put(ctx context.Context, j Job) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	raw, err := json.Marshal(j)
	if err != nil {
		return err
	}
	err = b.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(boltBucket).Put([]byte(j.ID), raw) })
	if err != nil {
		return fmt.Errorf("jobs: writing job %s to %s: %w", j.ID, b.path, err)
	}
	return nil
}

// Get implements Store.
func (b *Bolt) Get(ctx context.Context, id string) (Job, error) {
	if err := ctx.Err(); err != nil {
		return Job{}, err
	}
	var j Job
	found := false
	err := b.db.View(func(tx *bolt.Tx) error {
		raw := tx.Bucket(boltBucket).Get([]byte(id))
		if raw == nil {
			return nil
		}
		found = true
		return json.Unmarshal(raw, &j)
	})
	switch {
	case err != nil:
		return Job{}, fmt.Errorf("jobs: reading job %s from %s: %w", id, b.path, err)
	case !found:
		return Job{}, notFound(id)
	}
	return j, nil
}

// List implements Store.
func (b *Bolt) List(ctx context.Context) ([]Job, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var js []Job
	err := b.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(boltBucket).ForEach(func(_, raw []byte) error {
			var j Job
			if err := json.Unmarshal(raw, &j); err != nil {
				return err
			}
			js = append(js, j)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("jobs: reading %s: %w", b.path, err)
	}
	sortJobs(js)
	return js, nil
}

// Redis is a Store in Redis: one hash, <prefix>jobs, mapping each job id
// to its JSON record. The proxy that created a job runs it and resumes it
// after its own restart; the files are on its host.
type Redis struct {
	client redis.UniversalClient
	key    string
}

var _ Store = (*Redis)(nil)

// NewRedis returns a Redis store whose hash is prefix + "jobs".
func NewRedis(client redis.UniversalClient, prefix string) *Redis {
	return &Redis{client: client, key: prefix + "jobs"}
}

// Put implements Store.
func (r *Redis) Put(ctx context.Context, j Job) error {
	raw, err := json.Marshal(j)
	if err != nil {
		return err
	}
	if err := r.client.HSet(ctx, r.key, j.ID, raw).Err(); err != nil {
		return fmt.Errorf("%w: jobs: writing job %s: %v", state.ErrUnavailable, j.ID, err)
	}
	return nil
}

// Get implements Store.
func (r *Redis) Get(ctx context.Context, id string) (Job, error) {
	raw, err := r.client.HGet(ctx, r.key, id).Bytes()
	switch {
	case err == redis.Nil:
		return Job{}, notFound(id)
	case err != nil:
		return Job{}, fmt.Errorf("%w: jobs: reading job %s: %v", state.ErrUnavailable, id, err)
	}
	var j Job
	if err := json.Unmarshal(raw, &j); err != nil {
		return Job{}, fmt.Errorf("jobs: job %s: %w", id, err)
	}
	return j, nil
}

// List implements Store.
func (r *Redis) List(ctx context.Context) ([]Job, error) {
	all, err := r.client.HGetAll(ctx, r.key).Result()
	if err != nil {
		return nil, fmt.Errorf("%w: jobs: listing: %v", state.ErrUnavailable, err)
	}
	js := make([]Job, 0, len(all))
	for id, raw := range all {
		var j Job
		if err := json.Unmarshal([]byte(raw), &j); err != nil {
			return nil, fmt.Errorf("jobs: job %s: %w", id, err)
		}
		js = append(js, j)
	}
	sortJobs(js)
	return js, nil
}
