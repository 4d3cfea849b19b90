// Package version says which build of warren this is: the release, the
// commit it was built from and that commit's date.
//
// "go build" and "go install" in a clone stamp the commit into the binary
// (read back with debug.ReadBuildInfo). A build without the .git directory,
// such as the Docker image's, passes them at link time:
//
//	go build -ldflags "-X github.com/warren-tunnel/warren/internal/version.Commit=$(git rev-parse HEAD)
//	                   -X github.com/warren-tunnel/warren/internal/version.Date=$(git log -1 --format=%cI)" ./cmd/warren
package version

import (
	"runtime"
	"runtime/debug"
	"strings"
)

// Version is the release this binary was built from.
var Version = "0.1.0-dev"

// Commit and Date, when set at link time, name the commit the binary was
// built from and its date (RFC 3339); they win over what the Go toolchain
// stamped.
var (
	Commit = ""
	Date   = ""
)

// Software names this build in protocol hellos and logs.
func Software() string { return "warren/" + Version }

// Build describes a binary.
type Build struct {
	Version  string
	Commit   string // full hash; "" when unknown
	Date     string // of the commit, RFC 3339; "" when unknown
	Modified bool   // built from a work tree with uncommitted changes
	Go       string // toolchain, "go1.26.0"
	Platform string // "linux/amd64"
}

// Get returns this binary's build.
func Get() Build {
	info, _ := debug.ReadBuildInfo()
	return get(info)
}

func get(info *debug.BuildInfo) Build {
	b := Build{Version: Version, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if info != nil {
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				b.Commit = s.Value
			case "vcs.time":
				b.Date = s.Value
			case "vcs.modified":
				b.Modified = s.Value == "true"
			}
		}
	}
	if Commit != "" {
		b.Commit, b.Date, b.Modified = Commit, Date, false
	}
	return b
}

// String is the line "warren version" prints:
//
//	warren 0.1.0-dev (commit 20973ae1f2c3, 2026-11-30T10:11:12Z; go1.26.0 linux/amd64)
func (b Build) String() string {
	var s strings.Builder
	s.WriteString("warren " + b.Version + " (")
	switch {
	case b.Commit == "":
		s.WriteString("commit unknown")
	default:
		c := b.Commit
		if len(c) > 12 {
			c = c[:12]
		}
		s.WriteString("commit " + c)
		if b.Modified {
			s.WriteString(" with uncommitted changes")
		}
		if b.Date != "" {
			s.WriteString(", " + b.Date)
		}
	}
	s.WriteString("; " + b.Go + " " + b.Platform + ")")
	return s.String()
}
