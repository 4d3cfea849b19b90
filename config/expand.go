package config

import (
	"bytes"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/warren-tunnel/warren/internal/quote"
)

// Environment expansion: ${NAME} in a string value is replaced by the
// environment variable NAME. It works on decoded values, after the TOML
// parser has undone quoting and escapes, and the result is never parsed as
// TOML again: a value may hold quotes, backslashes or newlines, and a
// literal or multi-line string expands like a basic one. Keys, comments,
// numbers and booleans are never expanded.
//
//   - NAME is [A-Za-z_][A-Za-z0-9_]*; "${" must start a well-formed
//     reference, anything else after it ("${1}", "${A:-x}", "${A") is an
//     error rather than text left as written.
//   - "$${" is a literal "${". No other "$" is special: "$HOME", "a$b" and
//     "$$" stay as written.
//   - An unset variable is an error naming it, the file and the key. A
//     variable set to "" expands to "".

// expandError is one bad reference in one value.
type expandError struct {
	name string // the variable, if the reference is well formed
	msg  string
}

// expandString returns s with its references replaced. lookupEnv may be
// nil: then every variable is unset.
func expandString(s string, lookupEnv func(string) (string, bool)) (string, *expandError) {
	if !strings.Contains(s, "${") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		switch {
		case strings.HasPrefix(s[i:], "$${"):
			b.WriteString("${")
			i += 3
		case strings.HasPrefix(s[i:], "${"):
			n := refName(s[i+2:])
			if n == 0 || i+2+n >= len(s) || s[i+2+n] != '}' {
				end := strings.IndexByte(s[i:], '}')
				ref := s[i:]
				if end >= 0 {
					ref = s[i : i+end+1]
				}
				if len(ref) > 40 {
					ref = ref[:40] + "..."
				}
				return "", &expandError{msg: fmt.Sprintf("%q is not a ${NAME} reference (NAME is letters, digits and _, not starting with a digit; write $${ for a literal ${)", ref)}
			}
			name := s[i+2 : i+2+n]
			v, ok := "", false
			if lookupEnv != nil {
				v, ok = lookupEnv(name)
			}
			if !ok {
				return "", &expandError{name: name, msg: quote.Bare("${"+name+"}") + " is not set"}
			}
			b.WriteString(v)
			i += 2 + n + 1
		default:
			b.WriteByte(s[i])
			i++
		}
	}
	return b.String(), nil
}

// refName returns the length of the variable name at the start of s.
func refName(s string) int {
	for i := 0; i < len(s); i++ {
		c := s[i]
		letter := c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
		if !letter && (i == 0 || c < '0' || c > '9') {
			return i
		}
	}
	return len(s)
}

// pathError is an expandError at a key, e.g. server.clients[0].token.
type pathError struct {
	key string
	expandError
}

// expandTree expands every string in v, a value decoded into an empty
// interface (maps, slices, scalars), in place, and returns the bad
// references in key order. Map keys are visited sorted, array elements in
// order, so errors come out the same way each time.
func expandTree(v any, key string, lookupEnv func(string) (string, bool)) []pathError {
	var errs []pathError
	var walk func(v any, key string) (any, bool)
	// walk returns the expanded value of a string and whether it changed;
	// maps and slices are updated in place.
	walk = func(v any, key string) (any, bool) {
		switch v := v.(type) {
		case string:
			s, err := expandString(v, lookupEnv)
			if err != nil {
				errs = append(errs, pathError{key, *err})
				return v, false
			}
			return s, s != v
		case map[string]any:
			keys := make([]string, 0, len(v))
			for k := range v {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				if nv, changed := walk(v[k], key+"."+keySegment(k)); changed {
					v[k] = nv
				}
			}
		case []map[string]any:
			for i, m := range v {
				walk(m, key+"["+strconv.Itoa(i)+"]")
			}
		case []any:
			for i, e := range v {
				if nv, changed := walk(e, key+"["+strconv.Itoa(i)+"]"); changed {
					v[i] = nv
				}
			}
		}
		return v, false
	}
	walk(v, key)
	return errs
}

// keySegment writes a key as TOML would: bare if it can be, else quoted.
func keySegment(k string) string {
	if k == "" {
		return `""`
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c == '_' || c == '-' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
			return strconv.Quote(k)
		}
	}
	return k
}

// formatExpandErrors turns bad references into one error per line, each
// naming the file, the key and, when the reference can be found on one line
// only, the line.
func formatExpandErrors(path string, data []byte, errs []pathError) error {
	refs := map[string]int{} // references to each unset variable
	for _, e := range errs {
		if e.name != "" {
			refs[e.name]++
		}
	}
	lines := make([]string, len(errs))
	for i, e := range errs {
		where := path
		if e.name != "" && refs[e.name] == 1 {
			if line := refLine(data, e.name); line > 0 {
				where = fmt.Sprintf("%s:%d", path, line)
			}
		}
		lines[i] = fmt.Sprintf("%s: %s: %s", where, quote.Bare(e.key), e.msg)
	}
	return fmt.Errorf("%s", strings.Join(lines, "\n"))
}

// refLine returns the line of the one "${name}" in data that is not
// escaped as "$${name}", or 0 if there are none or several (in comments,
// say): a line is given only when the text points at one place.
func refLine(data []byte, name string) int {
	ref := []byte("${" + name + "}")
	line, found := 0, 0
	for off := 0; ; {
		i := bytes.Index(data[off:], ref)
		if i < 0 {
			break
		}
		i += off
		// Scanning left to right, "$${" is taken at the first "$" of a
		// run, so only a lone "$" before "{" starts a reference.
		if i == 0 || data[i-1] != '$' {
			found++
			line = bytes.Count(data[:i], []byte("\n")) + 1
		}
		off = i + len(ref)
	}
	if found != 1 {
		return 0
	}
	return line
}
