package suggest

import (
	"strings"
	"testing"
)

func TestNearest(t *testing.T) {
	keys := []string{"address", "token", "token_file", "token_env", "public_address", "heartbeat_interval", "tls", "kcp", "tcp"}
	tests := []struct{ word, want string }{
		{"adress", "address"},
		{"Address", "address"},
		{"addresss", "address"},
		{"adderss", "address"},      // a transposition is one edit
		{"toekn", "token"},          // one edit, short word
		{"token_fle", "token_file"}, //
		{"tokenfile", "token_file"},
		{"heartbeat_intervall", "heartbeat_interval"},
		{"kpc", "kcp"},
		{"udp", ""}, // two edits from tcp: too far for a short word
		{"frobnicate", ""},
		{"", ""},
		{strings.Repeat("a", 1<<20), ""},
	}
	for _, tt := range tests {
		if got := Nearest(tt.word, keys); got != tt.want {
			t.Errorf("Nearest(%.20q) = %q, want %q", tt.word, got, tt.want)
		}
	}
}
