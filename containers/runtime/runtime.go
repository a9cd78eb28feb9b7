// Package runtime is the seam between the state and the runtimes that start
// model containers: the Runtime interface every runtime implements (process,
// docker, external), and the Manager that makes them run what the state
// says.
//
// # What runs
//
// The Manager runs every version registered in the state, not only each
// model's current version: a rollback (state.Store.SetCurrent to an older
// version) then only switches traffic to replicas already up, and a new
// version warms up before it becomes current. Delete a version that should
// no longer run. Each version runs its ModelVersion.Replicas replicas; the
// Manager registers their addresses with state.Store.SetReplicas, which the
// dispatcher follows.
//
// # Several proxies
//
// Several proxies that share a Redis see one state. A runtime kind must be
// managed by one proxy only (or by proxies that share what they manage, as
// proxies driving one Docker Engine do): each proxy's configuration names
// the kinds it manages, and only those get a Runtime in its Manager. Two
// proxies both managing the process runtime would each start the replicas
// on their own machine and overwrite each other's addresses. The external
// runtime starts nothing, so any number of proxies may manage it.
package runtime

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/sloproxy/sloproxy/state"
)

// Runtime starts and stops the replicas of model versions of one kind. The
// Manager calls its methods from one goroutine at a time.
type Runtime interface {
	// Ensure makes mv's replicas run as mv specifies (starting, scaling
	// or replacing them) and returns their RPC addresses (host:port). It
	// need not wait for them to answer: the dispatcher's heartbeats tell.
	// It must be cheap when nothing changed, since the Manager calls it
	// on every pass.
	Ensure(ctx context.Context, mv state.ModelVersion) ([]string, error)
	// Remove stops and removes every replica of a model version. Removing
	// a version that runs nothing is not an error.
	Remove(ctx context.Context, model, version string) error
	// Running returns the model versions that have replicas under this
	// runtime, including those it found running when it started (a docker
	// runtime adopts its labelled containers): the Manager removes those
	// that are no longer in the state.
	Running(ctx context.Context) ([]VersionKey, error)
}

// Notifier is implemented by runtimes whose replicas change on their own:
// a docker container that becomes ready after its warm-up, or dies and is
// replaced. The Manager runs a pass whenever Changed's channel receives, so
// such a change reaches the state at once rather than on the next periodic
// pass.
type Notifier interface {
	Changed() <-chan struct{}
}

// VersionKey names a model version.
type VersionKey struct {
	Model, Version string
}

// Compare orders keys by model, then version.
func (k VersionKey) Compare(o VersionKey) int {
	return cmp.Or(cmp.Compare(k.Model, o.Model), cmp.Compare(k.Version, o.Version))
}

// External is the external runtime: replicas that someone else runs (an
// orchestrator, docker compose) at the addresses the version's spec lists.
// It starts and stops nothing.
type External struct{}

var _ Runtime = External{}

// Ensure returns mv.Runtime.Addresses.
func (External) Ensure(_ context.Context, mv state.ModelVersion) ([]string, error) {
	return slices.Clone(mv.Runtime.Addresses), nil
}

// Remove does nothing.
func (External) Remove(context.Context, string, string) error { return nil }

// Running returns nothing: External runs nothing.
func (External) Running(context.Context) ([]VersionKey, error) { return nil, nil }

// SortedKeys returns the keys of m, ordered by VersionKey.Compare: what a
// runtime's Running returns of the versions it keeps in a map.
func SortedKeys[V any](m map[VersionKey]V) []VersionKey {
	return slices.SortedFunc(maps.Keys(m), VersionKey.Compare)
}

// Signal is the Notifier side of a runtime, to embed: Notify records that
// the replicas changed, Changed delivers it. A burst of Notify calls before
// the Manager receives costs one pass. Make it with NewSignal.
type Signal struct {
	ch chan struct{} // 1-buffered: one pending change at most
}

// NewSignal returns a Signal with no change pending.
func NewSignal() Signal { return Signal{ch: make(chan struct{}, 1)} }

// Changed implements Notifier.
func (s Signal) Changed() <-chan struct{} { return s.ch }

// Notify records a change without blocking.
func (s Signal) Notify() {
	select {
	case s.ch <- struct{}{}:
	default:
	}
}

// CheckImage fails unless mv is of kind and names an image: what the
// docker and swarm runtimes check before they run a version.
func CheckImage(mv state.ModelVersion, kind state.RuntimeKind) error {
	if mv.Runtime.Kind != kind {
		return fmt.Errorf("model %q version %q: runtime kind %q is not %q", mv.Model, mv.Version, mv.Runtime.Kind, kind)
	}
	if mv.Runtime.Image == "" {
		return fmt.Errorf("model %q version %q: runtime.image is empty", mv.Model, mv.Version)
	}
	return nil
}
