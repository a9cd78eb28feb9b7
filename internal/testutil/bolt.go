package testutil

import (
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// OpenBolt opens the bbolt file at path, as the proxy opens its data
// directory's, and closes it when the test ends.
func OpenBolt(t testing.TB, path string) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}
