package transport

import (
	"strings"
	"testing"
)

func TestParseFingerprint(t *testing.T) {
	want := [32]byte{0x5a, 0xae, 0x01, 0xff}
	want[31] = 0x07
	hexLower := "5aae01ff" + strings.Repeat("00", 27) + "07"
	var pairs []string
	for i := 0; i < len(hexLower); i += 2 {
		pairs = append(pairs, strings.ToUpper(hexLower[i:i+2]))
	}
	colons := strings.Join(pairs, ":")
	tests := []struct {
		name, in string
		ok       bool
	}{
		{"as the server logs it", "sha256:" + hexLower, true},
		{"upper case", "SHA256:" + strings.ToUpper(hexLower), true},
		{"bare hex", hexLower, true},
		{"openssl 3 line", "sha256 Fingerprint=" + colons, true},
		{"openssl 1.1 line", "SHA256 Fingerprint=" + colons, true},
		{"colon pairs", colons, true},
		{"sha256: and colon pairs", "sha256:" + colons, true},
		{"surrounding space", "  sha256:" + hexLower + "\n", true},
		{"empty", "", false},
		{"short", "sha256:" + hexLower[2:], false},
		{"not hex", "sha256:" + strings.Repeat("zz", 32), false},
		{"colons misplaced", "5AA:E" + colons[5:], false},
		{"sha1", "sha1:" + hexLower, false},
		{"openssl sha1 line", "SHA1 Fingerprint=" + colons, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseFingerprint(tt.in)
			if (err == nil) != tt.ok {
				t.Fatalf("ParseFingerprint(%q) error %v, want ok=%v", tt.in, err, tt.ok)
			}
			if tt.ok && got != want {
				t.Errorf("ParseFingerprint(%q) = %x, want %x", tt.in, got, want)
			}
		})
	}
}
