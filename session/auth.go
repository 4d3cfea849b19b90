package session

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"net"
)

// authLabel separates warren's auth MAC from any other use of the token.
const authLabel = "warren auth v1\x00"

// nonceLen is the size of the server's challenge.
const nonceLen = 32

// proof is the MAC a client holding token sends for this nonce and TLS
// channel binding (nil over plaintext).
func proof(token, nonce, binding []byte) []byte {
	return MAC(authLabel, token, nonce, binding)
}

// MAC proves that the holder of token saw nonce on the TLS connection
// whose channel binding (transport.ExportBinding) is binding:
// HMAC-SHA256(token, label | nonce | binding). Each use of a token has its
// own label, so that a proof made for one is worthless for another:
// clients prove theirs with "warren auth v1\x00", cluster peers with
// their own (cluster/peer.go).
func MAC(label string, token, nonce, binding []byte) []byte {
	m := hmac.New(sha256.New, token)
	m.Write([]byte(label))
	m.Write(nonce)
	m.Write(binding)
	return m.Sum(nil)
}

// NonceLen is the size of an auth challenge.
const NonceLen = nonceLen

// NewNonce returns a fresh random challenge of NonceLen bytes.
func NewNonce() ([]byte, error) { return newNonce() }

// EqualMAC compares two MACs in constant time.
func EqualMAC(a, b []byte) bool { return subtle.ConstantTimeCompare(a, b) == 1 }

func newNonce() ([]byte, error) {
	n := make([]byte, nonceLen)
	_, err := rand.Read(n)
	return n, err
}

// Request is a client's Auth as the server holds it before answering.
type Request struct {
	Auth
	// Remote is the client's transport address.
	Remote  net.Addr
	nonce   []byte
	binding []byte
}

// Match returns the index of the token whose proof the client sent, or -1.
// It computes the proof of every token and compares each in constant time,
// so its timing tells neither which token matched nor how close a wrong
// proof came. Tokens must be distinct.
func (r *Request) Match(tokens [][]byte) int {
	found := -1
	for i, t := range tokens {
		eq := subtle.ConstantTimeCompare(proof(t, r.nonce, r.binding), r.MAC)
		found = subtle.ConstantTimeSelect(eq, i, found)
	}
	return found
}
