package sniff

import (
	"errors"
	"strings"
	"testing"
)

func TestNormalize(t *testing.T) {
	label63 := strings.Repeat("a", 63)
	name253 := strings.Repeat(label63+".", 3) + strings.Repeat("b", 61) // 3*64 + 61
	cases := []struct {
		name, in, want string
	}{
		{"lower case", "Www.Example.COM", "www.example.com"},
		{"trailing dot", "example.com.", "example.com"},
		{"single label", "localhost", "localhost"},
		{"digits and hyphens", "a-1.2-b.example", "a-1.2-b.example"},
		{"A-label", "XN--bcher-kva.example", "xn--bcher-kva.example"},
		{"IPv4", "192.0.2.1", "192.0.2.1"},
		{"63-byte label", label63 + ".example", label63 + ".example"},
		{"253 bytes", name253, name253},
		{"253 bytes and a dot", name253 + ".", name253},
		{"empty", "", ""},
		{"dot", ".", ""},
		{"two trailing dots", "example.com..", ""},
		{"leading dot", ".example.com", ""},
		{"empty label", "a..example.com", ""},
		{"64-byte label", label63 + "a.example", ""},
		{"254 bytes", name253 + "b", ""},
		{"wildcard", "*.example.com", ""},
		{"underscore", "a_b.example", ""},
		{"space", "a b.example", ""},
		{"UTF-8", "bücher.example", ""},
		{"Kelvin sign", "\u212a.example", ""}, // strings.ToLower would make it "k"
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := normalize(tc.in, "test")
			if got != tc.want || (err == nil) != (tc.want != "") || err != nil && !errors.Is(err, ErrBadName) {
				t.Fatalf("normalize(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}
