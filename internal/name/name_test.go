package name

import (
	"strings"
	"testing"
)

func TestValid(t *testing.T) {
	for _, tc := range []struct {
		s  string
		ok bool
	}{
		{"ssh", true}, {"web-1.prod_a", true}, {"0", true}, {strings.Repeat("a", 64), true},
		{"", false}, {"-x", false}, {".x", false}, {"_x", false}, {strings.Repeat("a", 65), false},
		{"a b", false}, {"a/b", false}, {"ümlaut", false},
	} {
		if got := Valid(tc.s); got != tc.ok {
			t.Errorf("Valid(%q) = %v, want %v", tc.s, got, tc.ok)
		}
	}
}
