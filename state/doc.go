// Package state holds the proxy's shared state: apps, models with their
// versions and current version, the links between apps and models, the
// addresses of the live replicas of each model version, and each version's
// latest profile.
//
// # Reads: one immutable Snapshot
//
// Every query reads the state (its app, the app's models, their current
// versions and replicas), while the state changes only through the admin
// API and the runtimes. So reads are optimized and writes are not: the whole
// state is an immutable Snapshot, indexed when it is built, which
// Store.Snapshot returns with one atomic pointer load. A query takes one
// snapshot and uses it throughout, so it never sees half of a change (a new
// current version without its replicas). Components that react to changes
// (the dispatcher dialling new replicas, the runtimes reconciling replica
// counts) wait on Snapshot.Changed, a channel closed when a newer snapshot
// replaces the one they hold; any number of them can wait, and none misses
// a change made between reading its snapshot and waiting.
//
// # Writes: validated read-modify-write of one document
//
// The state is stored as one document (Data) in a Backend: Bolt, a file on
// local disk, for one proxy (the embedded default, whose state outlives
// restarts); Memory, for one process whose state need not (tests); or
// Redis, for several proxies. A mutation (PutApp, Link, SetCurrent, ...) is
// validated on its own (names, SLO, runtime fields: ErrInvalid), then
// applied to the latest stored document in one atomic read-modify-write
// that checks it against the rest of the state (a missing app: ErrNotFound;
// deleting the current version of a linked model, or linking an app to a
// model of another input type: ErrConflict), and committed with the
// revision increased by one. The committed document becomes the mutating
// Store's snapshot at once. Mutations that would change nothing (linking
// twice, setting the same replicas) write nothing, so they are safe to
// retry and to repeat.
//
// # Consistency across proxies
//
// Each commit is atomic and based on the latest document (Redis WATCH/MULTI/
// EXEC, retried when another writer got in first), so concurrent mutations
// are serialized and none is lost; when two change the same field, the last
// to commit wins. Every commit publishes its revision; each Store reloads on
// a notification for a revision newer than its own, and also every few
// seconds (Options.PollInterval), because Redis pub/sub drops messages sent
// while a subscriber is disconnected. So every proxy converges on the latest
// revision, normally within milliseconds, at worst within the poll interval.
// A Store's revision only grows.
//
// If the stored document is ever older than a Store's snapshot, the backend
// has lost data (a Redis restarted without persistence): the Store writes
// its snapshot back rather than regress. Changes that other proxies made in
// that window, based on the lost data, may then be overwritten; run Redis
// with persistence where that matters. It also means that deleting the key
// by hand does not reset running proxies.
package state
