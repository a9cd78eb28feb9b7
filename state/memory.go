package state

import (
	"context"
	"sync"
)

// Memory is a Backend in process memory, for one proxy whose state need
// not outlive it (tests, trials). Several Stores over one Memory see each
// other's changes, as Stores over one Redis do.
type Memory struct {
	// save, if not nil, makes a committed document durable before Update
	// installs it; an error fails the Update and keeps the previous
	// document. Bolt sets it.
	save func(*Data) error

	// mu guards data and watchers, and serializes saves.
	mu       sync.Mutex
	data     *Data
	watchers map[chan struct{}]struct{}
}

var _ Backend = (*Memory)(nil)

// NewMemory returns an empty Memory.
func NewMemory() *Memory { return newMemory(&Data{Schema: schemaVersion}, nil) }

func newMemory(d *Data, save func(*Data) error) *Memory {
	return &Memory{save: save, data: d, watchers: make(map[chan struct{}]struct{})}
}

// Load returns the current document.
func (m *Memory) Load(ctx context.Context) (*Data, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.data, nil
}

// Update applies fn to a copy of the current document and commits it.
// Writers are serialized, so fn runs once.
func (m *Memory) Update(ctx context.Context, fn func(*Data) error) (*Data, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	d, err := m.data.clone()
	if err != nil {
		return nil, err
	}
	if err := fn(d); err != nil {
		return nil, err
	}
	d.Revision++
	d.Schema = schemaVersion
	if m.save != nil {
		if err := m.save(d); err != nil {
			return nil, err
		}
	}
	m.data = d
	for w := range m.watchers {
		select {
		case w <- struct{}{}:
		default: // the watcher has a notification pending already
		}
	}
	return d, nil
}

// Watch calls notify once it is registered, then after every Update,
// until ctx is done.
func (m *Memory) Watch(ctx context.Context, notify func(revision uint64)) error {
	w := make(chan struct{}, 1)
	w <- struct{}{} // changes made before registering are not announced
	m.mu.Lock()
	m.watchers[w] = struct{}{}
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.watchers, w)
		m.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w:
			notify(0)
		}
	}
}
