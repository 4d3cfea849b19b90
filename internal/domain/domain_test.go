package domain

import (
	"errors"
	"strings"
	"testing"
)

func TestNormalize(t *testing.T) {
	cases := []struct {
		name, in, want string
		ok             bool
	}{
		{"lower case", "WWW.Example.COM", "www.example.com", true},
		{"trailing dot", "example.com.", "example.com", true},
		{"wildcard", "*.Example.com", "*.example.com", true},
		{"unicode to punycode", "bücher.example", "xn--bcher-kva.example", true},
		{"punycode stays", "xn--bcher-kva.example", "xn--bcher-kva.example", true},
		{"empty", "", "", false},
		{"bare wildcard", "*.", "", false},
		{"wildcard inside", "a.*.example.com", "", false},
		{"partial wildcard", "a*.example.com", "", false},
		{"space", "exa mple.com", "", false},
		{"underscore", "a_b.example.com", "", false},
		{"empty label", "a..example.com", "", false},
		{"label too long", strings.Repeat("a", 64) + ".com", "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Normalize(tc.in)
			if tc.ok != (err == nil) {
				t.Fatalf("Normalize(%q) = %q, %v", tc.in, got, err)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			if got != tc.want {
				t.Fatalf("Normalize(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestMatchAndCovers(t *testing.T) {
	cases := []struct {
		pattern, name string
		match, covers bool
	}{
		{"example.com", "example.com", true, true},
		{"example.com", "www.example.com", false, false},
		{"*.example.com", "www.example.com", true, true},
		{"*.example.com", "a.b.example.com", true, true},
		{"*.example.com", "example.com", false, false},
		{"*.example.com", "badexample.com", false, false},
		{"*.example.com", "*.example.com", false, true},
		{"*.example.com", "*.app.example.com", false, true},
		{"*.app.example.com", "*.example.com", false, false},
		{"www.example.com", "*.example.com", false, false},
	}
	for _, tc := range cases {
		if got := Match(tc.pattern, tc.name); !IsWildcard(tc.name) && got != tc.match {
			t.Errorf("Match(%q, %q) = %v", tc.pattern, tc.name, got)
		}
		if got := Covers(tc.pattern, tc.name); got != tc.covers {
			t.Errorf("Covers(%q, %q) = %v", tc.pattern, tc.name, got)
		}
	}
}

func TestSpecificity(t *testing.T) {
	order := []string{"www.app.example.com", "a.example.com", "*.app.example.com", "*.example.com"}
	for i := 1; i < len(order); i++ {
		if Specificity(order[i-1]) <= Specificity(order[i]) {
			t.Errorf("%q should beat %q", order[i-1], order[i])
		}
	}
}
