// Package quote writes values from config files and command lines into
// error messages. A value may be any size (a 10 MB public_address is a
// valid TOML string), and an error is one line on stderr or in a log:
// Short quotes at most a short prefix of it, with its length.
package quote

import (
	"strconv"
	"unicode/utf8"
)

// Max is the longest value Short quotes whole, in bytes. Every legitimate
// value it is used for (addresses, names, modes, fingerprints with colons)
// fits; a longer one is a mistake, and its start is enough to find it.
const Max = 100

// prefix is how much of a longer value Short quotes.
const prefix = 40

// Short returns s quoted as %q would, if it has at most Max bytes;
// otherwise its first 40 or so bytes (whole characters) quoted, followed by
// "… (N bytes)".
func Short(s string) string {
	if len(s) <= Max {
		return strconv.Quote(s)
	}
	n := prefix
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return strconv.Quote(s[:n]) + "… (" + strconv.Itoa(len(s)) + " bytes)"
}

// Bare returns s as it is when it is short, not empty and needs no
// escaping (a file path, a variable name), and Short(s) otherwise.
func Bare(s string) string {
	if q := Short(s); s == "" || q[1:len(q)-1] != s {
		return q
	}
	return s
}
