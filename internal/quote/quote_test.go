package quote

import (
	"strings"
	"testing"
)

func TestShort(t *testing.T) {
	long := strings.Repeat("a", 10<<20)
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", `""`},
		{"short", "0.0.0.0", `"0.0.0.0"`},
		{"escapes", "a\"b\n", `"a\"b\n"`},
		{"at the limit", strings.Repeat("x", Max), `"` + strings.Repeat("x", Max) + `"`},
		{"10 MB", long, `"` + strings.Repeat("a", 40) + `"… (10485760 bytes)`},
		// A 3-byte character straddling byte 40 is left out whole.
		{"no split character", strings.Repeat("b", 39) + "€" + long, `"` + strings.Repeat("b", 39) + `"… (10485802 bytes)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Short(tt.in); got != tt.want {
				t.Errorf("Short(%d bytes) = %q, want %q", len(tt.in), got, tt.want)
			}
		})
	}
}

func TestBare(t *testing.T) {
	long := strings.Repeat("a", 1000)
	for in, want := range map[string]string{
		"/etc/warren/token": "/etc/warren/token",
		"WARREN_TOKEN":      "WARREN_TOKEN",
		"a b":               "a b",
		"":                  `""`,
		"new\nline":         `"new\nline"`,
		long:                `"` + long[:40] + `"… (1000 bytes)`,
	} {
		if got := Bare(in); got != want {
			t.Errorf("Bare(%.50q) = %q, want %q", in, got, want)
		}
	}
}
