package session

import (
	"fmt"
	"testing"
)

// TestKeyIDVector is docs/protocol.md 12.2's key_id.
func TestKeyIDVector(t *testing.T) {
	if got := fmt.Sprintf("%x", keyID([]byte("example-token-0123456789"))); got != "f2e93470da2baf3cfd709a76ea600b42" {
		t.Errorf("key_id = %s, want the documented vector", got)
	}
}

// TestMatch: a request naming its key ID has that token's proof checked;
// one without (an older client) has every token's; a wrong proof, an
// unknown ID or the ID of another token than the proof's match nothing.
func TestMatch(t *testing.T) {
	tokens := [][]byte{[]byte("token-a-0123456789"), []byte("token-b-0123456789"), []byte("token-c-0123456789")}
	ix := NewTokens(tokens)
	nonce, binding := make([]byte, nonceLen), []byte("binding")
	req := func(mac, id []byte) *Request {
		return &Request{Auth: Auth{MAC: mac, KeyID: id}, nonce: nonce, binding: binding}
	}
	good := proof(tokens[1], nonce, binding)
	for _, tc := range []struct {
		name string
		r    *Request
		want int
	}{
		{"key ID", req(good, keyID(tokens[1])), 1},
		{"no key ID (older client)", req(good, nil), 1},
		{"wrong proof", req(proof([]byte("other-token-0123"), nonce, binding), keyID(tokens[1])), -1},
		{"wrong proof, no key ID", req(proof([]byte("other-token-0123"), nonce, binding), nil), -1},
		{"unknown key ID", req(good, keyID([]byte("other-token-0123"))), -1},
		{"another token's key ID", req(good, keyID(tokens[2])), -1},
		{"proof of another binding", req(proof(tokens[1], nonce, []byte("other")), keyID(tokens[1])), -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.r.Match(ix); got != tc.want {
				t.Errorf("Match = %d, want %d", got, tc.want)
			}
		})
	}
}

// BenchmarkMatch: checking a proof among 10 000 tokens, by key ID and
// by computing every token's (an older client's way).
func BenchmarkMatch(b *testing.B) {
	var tokens [][]byte
	for i := range 10000 {
		tokens = append(tokens, []byte("token-0123456789-"+string(rune('a'+i%26))+string(rune(i))))
	}
	ix := NewTokens(tokens)
	nonce := make([]byte, nonceLen)
	mac := proof(tokens[7777], nonce, nil)
	for _, bc := range []struct {
		name string
		id   []byte
	}{{"key_id", keyID(tokens[7777])}, {"all", nil}} {
		b.Run(bc.name, func(b *testing.B) {
			r := &Request{Auth: Auth{MAC: mac, KeyID: bc.id}, nonce: nonce}
			for b.Loop() {
				if r.Match(ix) != 7777 {
					b.Fatal("no match")
				}
			}
		})
	}
}
