package rpc

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
)

// Authentication (docs/rpc.md, "Authentication"): a container that has a
// secret puts a fresh random nonce in each connection's HELLO and serves
// nothing until the proxy answers with an AUTH frame holding
// HMAC-SHA256(secret, AuthContext || nonce). A container without a secret
// sends a HELLO without a nonce and is served without AUTH.
const (
	// AuthNonceLen is the length of the nonce a container sends.
	AuthNonceLen = 32
	// AuthMACLen is the length of an AUTH frame's MAC.
	AuthMACLen = sha256.Size
	// AuthContext prefixes the nonce under the MAC, so that a MAC made for
	// this handshake means nothing elsewhere.
	AuthContext = "sloproxy-rpc-auth-v1\x00"
	// SecretEnv names the environment variable that gives a container its
	// secret; empty or unset means none.
	SecretEnv = "SLOPROXY_RPC_SECRET"
)

// TypeAuth is the AUTH frame's type byte.
const TypeAuth byte = 7

// Auth proves to a container that asked for it (a HELLO with an AuthNonce)
// that the proxy holds the container's secret.
type Auth struct {
	MAC [AuthMACLen]byte
}

// Type implements Message.
func (*Auth) Type() byte { return TypeAuth }

func (m *Auth) appendPayload(dst []byte) []byte { return append(dst, m.MAC[:]...) }

func (d *decoder) auth() (Message, error) {
	m := &Auth{}
	copy(m.MAC[:], d.take(AuthMACLen))
	return m, d.end("AUTH")
}

// AuthMAC is the MAC that answers nonce under secret.
func AuthMAC(secret, nonce []byte) [AuthMACLen]byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(AuthContext))
	h.Write(nonce)
	var mac [AuthMACLen]byte
	h.Sum(mac[:0])
	return mac
}

// validAuth reports whether m answers nonce under secret, in constant time.
func validAuth(m *Auth, secret, nonce []byte) bool {
	want := AuthMAC(secret, nonce)
	return hmac.Equal(m.MAC[:], want[:])
}

// newNonce returns a fresh random nonce.
func newNonce() []byte {
	b := make([]byte, AuthNonceLen)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (it panics where it could)
	return b
}

// DeriveSecret is the secret of one model version under key: HMAC-SHA256
// of "model\x00version" in hexadecimal. Every proxy that holds key derives
// the same secret for a version, so none has to store or share it.
func DeriveSecret(key []byte, model, version string) string {
	h := hmac.New(sha256.New, key)
	h.Write([]byte("sloproxy-version-secret\x00" + model + "\x00" + version))
	return hex.EncodeToString(h.Sum(nil))
}

// SecretFromEnv returns the container's secret from $SLOPROXY_RPC_SECRET:
// nil when it is unset or empty, which means the container does not ask
// peers to authenticate.
func SecretFromEnv() []byte {
	if s := os.Getenv(SecretEnv); s != "" {
		return []byte(s)
	}
	return nil
}

// ErrUnexpectedAuth is why a client with a secret refuses a container that
// does not ask it to authenticate: whoever answers at the address does not
// hold the version's secret, so it gets no queries.
var ErrUnexpectedAuth = errors.New("rpc: the container does not ask to authenticate, but the client has a secret for it")

// checkNonce rejects a HELLO nonce of the wrong length.
func checkNonce(nonce []byte) error {
	if len(nonce) != 0 && len(nonce) != AuthNonceLen {
		return badRequest(0, "HELLO auth_nonce has %d bytes, want 0 or %d", len(nonce), AuthNonceLen)
	}
	return nil
}

// unauthenticated is the ERROR a container sends before it closes a
// connection that did not authenticate.
func unauthenticated(why string) *Error {
	return &Error{Code: Unauthenticated, Message: fmt.Sprintf("authentication failed: %s", why)}
}
