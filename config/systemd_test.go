package config

import (
	"os"
	"regexp"
	"testing"
)

// TestSystemdRestartPolicy: the units do what their comments promise. The
// client does not restart on exit 2 (a bad config would fail the same way
// forever); the server restarts on any failure (a Go panic exits 2 too).
// The server's unit gives it /var/lib/warren as $STATE_DIRECTORY, which
// the default state directory rule reads.
func TestSystemdRestartPolicy(t *testing.T) {
	for _, tt := range []struct {
		unit        string
		preventTwo  bool
		stateDirEnv bool
	}{
		{"../deploy/systemd/warren-client.service", true, false},
		{"../deploy/systemd/warren-server.service", false, true},
	} {
		b, err := os.ReadFile(tt.unit)
		if err != nil {
			t.Fatal(err)
		}
		unit := string(b)
		if !regexp.MustCompile(`(?m)^Restart=on-failure$`).MatchString(unit) {
			t.Errorf("%s: want Restart=on-failure", tt.unit)
		}
		prevents := regexp.MustCompile(`(?m)^RestartPreventExitStatus=.*\b2\b`).MatchString(unit)
		if prevents != tt.preventTwo {
			t.Errorf("%s: RestartPreventExitStatus with 2: %v, want %v", tt.unit, prevents, tt.preventTwo)
		}
		if got := regexp.MustCompile(`(?m)^StateDirectory=warren$`).MatchString(unit); got != tt.stateDirEnv {
			t.Errorf("%s: StateDirectory=warren: %v, want %v", tt.unit, got, tt.stateDirEnv)
		}
	}
}
