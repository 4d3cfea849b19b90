package sniff

import (
	"fmt"
	"io"
	"slices"
)

const (
	recordHeaderLen = 5       // type, legacy version, length
	maxRecordLen    = 1 << 14 // of a plaintext record's fragment
	recordHandshake = 22
	typeClientHello = 1
	extServerName   = 0
	nameTypeHost    = 0
)

// TLSServerName reads the TLS records that carry a ClientHello from r and
// returns the host name of its server_name extension (RFC 6066) in the
// form the package comment describes.
//
// It reads each record header and then exactly the record's length, so
// consumed is exactly the records read: it ends where the ClientHello
// ends, and on error where reading stopped. It is a prefix of the stream
// and never more than max bytes; a record that would take it past max is
// not read. The ClientHello may span several records. Errors, each
// wrapping one sentinel or a Read error:
//   - ErrNotTLS: the first record is not a handshake record of TLS or SSL 3.
//   - ErrNoSNI: a well-formed ClientHello without a host_name.
//   - ErrAmbiguous: two host names, or two server_name extensions.
//   - ErrMalformed: any length, type or structure that breaks RFC 8446.
//   - ErrBadName: the host name is not a DNS host name.
//   - ErrTooLarge: the ClientHello with its records needs more than max.
//   - io.EOF if r ended before its first byte, io.ErrUnexpectedEOF if it
//     ended inside the ClientHello, or r's own error (a deadline, say),
//     wrapped.
func TLSServerName(r io.Reader, max int) (name string, consumed []byte, err error) {
	max = clamp(max)
	buf := make([]byte, 0, min(2048, max))
	var msg []byte // the handshake message, reassembled from the records
	for first := true; ; first = false {
		if len(buf)+recordHeaderLen > max {
			return "", buf, fmt.Errorf("%w: ClientHello longer than %d bytes", ErrTooLarge, max)
		}
		buf, err = readFull(r, buf, recordHeaderLen)
		if first && len(buf) > 0 && buf[0] != recordHandshake {
			return "", buf, fmt.Errorf("%w: first byte is 0x%02x, not a handshake record (0x16)", ErrNotTLS, buf[0])
		}
		if err != nil {
			return "", buf, readError(err, len(buf), "TLS ClientHello")
		}
		hdr := buf[len(buf)-recordHeaderLen:]
		typ, version, n := hdr[0], int(hdr[1])<<8|int(hdr[2]), int(hdr[3])<<8|int(hdr[4])
		switch {
		// Only the major version is checked: clients put anything from
		// SSL 3.0 (0x0300) to TLS 1.2 (0x0303) in the legacy field.
		case first && version>>8 != 3:
			return "", buf, fmt.Errorf("%w: record version 0x%04x", ErrNotTLS, version)
		case version>>8 != 3:
			return "", buf, malformed("record version 0x%04x within the ClientHello", version)
		case typ != recordHandshake:
			return "", buf, malformed("record of type %d within the ClientHello", typ)
		case n == 0 || n > maxRecordLen:
			return "", buf, malformed("handshake record of %d bytes", n)
		case len(buf)+n > max:
			return "", buf, fmt.Errorf("%w: ClientHello longer than %d bytes", ErrTooLarge, max)
		}
		buf, err = readFull(r, buf, n)
		if err != nil {
			return "", buf, readError(err, len(buf), "TLS ClientHello")
		}
		if first {
			msg = buf[recordHeaderLen:len(buf):len(buf)] // append copies
		} else {
			msg = append(msg, buf[len(buf)-n:]...)
		}
		if len(msg) < 4 {
			continue
		}
		if msg[0] != typeClientHello {
			return "", buf, malformed("handshake message of type %d, not a ClientHello (1)", msg[0])
		}
		total := 4 + (int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3]))
		switch {
		case len(msg) == total:
			name, err := parseClientHello(msg[4:])
			return name, buf, err
		case len(msg) > total:
			return "", buf, malformed("%d stray bytes after the ClientHello", len(msg)-total)
		case len(buf)+recordHeaderLen+total-len(msg) > max:
			return "", buf, fmt.Errorf("%w: ClientHello of %d bytes, more than %d with its records", ErrTooLarge, total, max)
		}
	}
}

// parseClientHello returns the host name in the body of a ClientHello
// (RFC 8446 section 4.1.2, RFC 6066 section 3).
func parseClientHello(b []byte) (string, error) {
	s := cursor(b)
	var sessionID, suites, compression, exts cursor
	switch {
	case !s.skip(2 + 32):
		return "", malformed("ClientHello of %d bytes, too short for version and random", len(b))
	case !s.vec8(&sessionID) || len(sessionID) > 32:
		return "", malformed("ClientHello session id overruns it or is longer than 32 bytes")
	case !s.vec16(&suites) || len(suites)%2 != 0:
		return "", malformed("ClientHello cipher suites overrun it or have an odd length")
	case !s.vec8(&compression):
		return "", malformed("ClientHello compression methods overrun it")
	case len(s) == 0:
		return "", fmt.Errorf("%w: the ClientHello has no extensions", ErrNoSNI)
	case !s.vec16(&exts) || len(s) != 0:
		return "", malformed("ClientHello extensions do not fill it exactly")
	}
	var raw string
	found := false
	for len(exts) > 0 {
		var typ uint16
		var data cursor
		if !exts.u16(&typ) || !exts.vec16(&data) {
			return "", malformed("ClientHello extension overruns the extensions")
		}
		if typ != extServerName {
			continue
		}
		if found {
			return "", fmt.Errorf("%w: two server_name extensions", ErrAmbiguous)
		}
		found = true
		var err error
		if raw, err = hostName(data); err != nil {
			return "", err
		}
	}
	if raw == "" {
		return "", fmt.Errorf("%w: the ClientHello has no server_name host name", ErrNoSNI)
	}
	return normalize(raw, "server_name")
}

// hostName returns the host_name in the body of a server_name extension,
// or "" if it holds names of other types only.
func hostName(data cursor) (string, error) {
	var list cursor
	if !data.vec16(&list) || len(data) != 0 || len(list) == 0 {
		return "", malformed("server_name extension is not one non-empty list")
	}
	var name string
	for len(list) > 0 {
		var typ uint8
		var n cursor
		if !list.u8(&typ) || !list.vec16(&n) {
			return "", malformed("server_name entry overruns its list")
		}
		if typ != nameTypeHost {
			continue
		}
		if len(n) == 0 {
			return "", malformed("empty server_name host_name")
		}
		if name != "" {
			return "", fmt.Errorf("%w: two host names in server_name", ErrAmbiguous)
		}
		name = string(n)
	}
	return name, nil
}

// readFull appends n bytes read from r to buf; on error, those it got.
func readFull(r io.Reader, buf []byte, n int) ([]byte, error) {
	buf = slices.Grow(buf, n)
	m, err := io.ReadFull(r, buf[len(buf):len(buf)+n])
	return buf[:len(buf)+m], err
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

// cursor reads a TLS structure front to back; each method reports whether
// the bytes were there, and consumes them if so.
type cursor []byte

func (c *cursor) skip(n int) bool {
	if n > len(*c) {
		return false
	}
	*c = (*c)[n:]
	return true
}

func (c *cursor) u8(v *uint8) bool {
	if len(*c) < 1 {
		return false
	}
	*v = (*c)[0]
	return c.skip(1)
}

func (c *cursor) u16(v *uint16) bool {
	if len(*c) < 2 {
		return false
	}
	*v = uint16((*c)[0])<<8 | uint16((*c)[1])
	return c.skip(2)
}

// vec8 and vec16 read a vector with a 1- or 2-byte length prefix.
func (c *cursor) vec8(v *cursor) bool {
	var n uint8
	return c.u8(&n) && c.vec(int(n), v)
}

func (c *cursor) vec16(v *cursor) bool {
	var n uint16
	return c.u16(&n) && c.vec(int(n), v)
}

func (c *cursor) vec(n int, v *cursor) bool {
	if n > len(*c) {
		return false
	}
	*v = (*c)[:n]
	return c.skip(n)
}
