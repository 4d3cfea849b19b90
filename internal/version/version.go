// Package version holds the build's version, set at link time:
//
//	go build -ldflags "-X github.com/warren-tunnel/warren/internal/version.Version=v1.2.3"
package version

// Version is the release this binary was built from.
var Version = "0.1.0-dev"

// Software names this build in protocol hellos and logs.
func Software() string { return "warren/" + Version }
