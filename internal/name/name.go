// Package name checks the names of clients and services: in config files,
// and in the claims a client sends.
package name

import "regexp"

// Rule says what a name may look like, for error messages.
const Rule = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"

var pattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// Valid reports whether s follows Rule.
func Valid(s string) bool { return pattern.MatchString(s) }
