package cache

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"sync"

	"github.com/cespare/xxhash/v2"
)

// Key names one input to one model version.
//
// Entries are stored under Index, the first 128 bits of a SHA-256 of the
// model name, version, input type, input length (the shape of a
// one-dimensional input) and input bytes, each length-prefixed so that no
// two different tuples encode alike. Check is a second, independent hash
// of the same fields (xxHash64), stored with the entry and compared on
// every read: an entry whose Check differs is a collision of Index and
// counts as a miss, so a collision can cost a hit but never answer wrongly.
//
// A new version of a model hashes differently: it never sees the old
// version's entries.
type Key struct {
	Model, Version string
	Index          [16]byte
	Check          uint64
}

// hashers are reused: a SHA-256 state is a few hundred bytes.
var hashers = sync.Pool{New: func() any { return &keyHasher{sha: sha256.New(), xx: xxhash.New()} }}

type keyHasher struct {
	sha hash.Hash
	xx  *xxhash.Digest
	buf [binary.MaxVarintLen64]byte
	sum [sha256.Size]byte
	str []byte // scratch for string fields, which hash.Hash takes as bytes
}

// NewKey returns the key of input, of inputType, to model version.
func NewKey(model, version, inputType string, input []byte) Key {
	h := hashers.Get().(*keyHasher)
	h.sha.Reset()
	h.xx.Reset()
	h.stringField(model)
	h.stringField(version)
	h.stringField(inputType)
	h.field(input)
	k := Key{Model: model, Version: version, Check: h.xx.Sum64()}
	copy(k.Index[:], h.sha.Sum(h.sum[:0]))
	hashers.Put(h)
	return k
}

// stringField is field for a string, without allocating.
func (h *keyHasher) stringField(s string) {
	h.str = append(h.str[:0], s...)
	h.field(h.str)
}

// field writes one length-prefixed field to both hashes.
func (h *keyHasher) field(b []byte) {
	n := binary.PutUvarint(h.buf[:], uint64(len(b)))
	h.sha.Write(h.buf[:n])
	h.sha.Write(b)
	_, _ = h.xx.Write(h.buf[:n])
	_, _ = h.xx.Write(b)
}

// redisKey is where the entry lives in Redis: under the model and version,
// so that a purge can find a model's entries by pattern.
func (c *Cache) redisKey(k Key) string {
	var idx [32]byte
	hex.Encode(idx[:], k.Index[:])
	return c.prefix + "p:" + k.Model + ":" + k.Version + ":" + string(idx[:])
}
