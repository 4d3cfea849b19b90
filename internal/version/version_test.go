package version

import (
	"runtime"
	"runtime/debug"
	"testing"
)

func TestBuild(t *testing.T) {
	stamped := &debug.BuildInfo{Settings: []debug.BuildSetting{
		{Key: "vcs", Value: "git"},
		{Key: "vcs.revision", Value: "20973ae1f2c3d4e5f60718293a4b5c6d7e8f9012"},
		{Key: "vcs.time", Value: "2026-11-30T10:11:12Z"},
		{Key: "vcs.modified", Value: "false"},
	}}
	dirty := &debug.BuildInfo{Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "20973ae1f2c3d4e5f60718293a4b5c6d7e8f9012"},
		{Key: "vcs.time", Value: "2026-11-30T10:11:12Z"},
		{Key: "vcs.modified", Value: "true"},
	}}
	goPlat := runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH
	tests := []struct {
		name         string
		info         *debug.BuildInfo
		commit, date string // link-time values
		want         string
	}{
		{"stamped by go build", stamped, "", "", "warren 0.1.0-dev (commit 20973ae1f2c3, 2026-11-30T10:11:12Z; " + goPlat + ")"},
		{"uncommitted changes", dirty, "", "", "warren 0.1.0-dev (commit 20973ae1f2c3 with uncommitted changes, 2026-11-30T10:11:12Z; " + goPlat + ")"},
		{"no build info", nil, "", "", "warren 0.1.0-dev (commit unknown; " + goPlat + ")"},
		{"go run: no vcs settings", &debug.BuildInfo{}, "", "", "warren 0.1.0-dev (commit unknown; " + goPlat + ")"},
		{"link time (Docker)", &debug.BuildInfo{}, "abcdef0123456789", "2026-12-01T00:00:00+01:00", "warren 0.1.0-dev (commit abcdef012345, 2026-12-01T00:00:00+01:00; " + goPlat + ")"},
		{"link time wins", dirty, "abcdef0123456789", "", "warren 0.1.0-dev (commit abcdef012345; " + goPlat + ")"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			Commit, Date = tt.commit, tt.date
			defer func() { Commit, Date = "", "" }()
			if got := get(tt.info).String(); got != tt.want {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}
