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

// keyIDLabel separates a token's key ID (Auth.KeyID) from its MAC.
const keyIDLabel = "warren key id v1\x00"

// keyIDLen is the size of a key ID: 128 bits, so that one cannot be
// guessed, nor two tokens' collide.
const keyIDLen = 16

// keyID names token without revealing it: a hash of the token, which the
// server looks up to check one token's proof instead of every token's.
func keyID(token []byte) []byte {
	h := sha256.New()
	h.Write([]byte(keyIDLabel))
	h.Write(token)
	return h.Sum(nil)[:keyIDLen]
}

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

// Tokens are a server's client tokens, indexed by key ID.
type Tokens struct {
	all  [][]byte
	byID map[string]int // by keyID, to the index in all
}

// NewTokens indexes tokens, which must be distinct.
func NewTokens(tokens [][]byte) *Tokens {
	t := &Tokens{all: tokens, byID: make(map[string]int, len(tokens))}
	for i, tok := range tokens {
		t.byID[string(keyID(tok))] = i
	}
	return t
}

// Match returns the index of the token whose proof the client sent, or -1.
// A client that named its token's key ID (Auth.KeyID) has the proof of
// that one token checked, in constant time: a server of 10 000 clients
// would otherwise compute 10 000 MACs a handshake, the most of a
// reconnect storm's CPU (issue 21). The lookup's timing tells only
// whether the ID is known, and an ID is a hash of a token: it is of use
// only to who holds the token. Without a key ID (an older client) it is
// MatchAll.
func (r *Request) Match(tokens *Tokens) int {
	if len(r.KeyID) == 0 {
		return r.MatchAll(tokens.all)
	}
	i, ok := tokens.byID[string(r.KeyID)]
	if !ok || subtle.ConstantTimeCompare(proof(tokens.all[i], r.nonce, r.binding), r.MAC) != 1 {
		return -1
	}
	return i
}

// MatchAll returns the index of the token whose proof the client sent, or -1.
// It computes the proof of every token and compares each in constant time,
// so its timing tells neither which token matched nor how close a wrong
// proof came. Tokens must be distinct.
func (r *Request) MatchAll(tokens [][]byte) int {
	found := -1
	for i, t := range tokens {
		eq := subtle.ConstantTimeCompare(proof(t, r.nonce, r.binding), r.MAC)
		found = subtle.ConstantTimeSelect(eq, i, found)
	}
	return found
}
