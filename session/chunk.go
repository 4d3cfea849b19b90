package session

import (
	"fmt"
	"io"
)

// A data stream carries chunks, each direction on its own:
//
//	kind (1 byte) | length (3 bytes, big endian) | payload
//
//	data  (0): 1 to 2^24-1 bytes of the relayed connection
//	end   (1): length 0; the writer sends nothing more (its half-close)
//	abort (2): length 0 to 1024, a UTF-8 reason; the writer gave up
//
// Nothing follows an end or abort chunk in that direction. A stream that
// ends (smux FIN or session loss) before either was cut off.
const (
	chunkData  byte = 0
	chunkEnd   byte = 1
	chunkAbort byte = 2

	chunkHeaderLen = 4
	maxChunkData   = 1<<24 - 1
	maxAbortReason = 1024
)

func putChunkHeader(b []byte, kind byte, n int) {
	b[0] = kind
	b[1] = byte(n >> 16)
	b[2] = byte(n >> 8)
	b[3] = byte(n)
}

// decoder parses one direction of a data stream. Read and WriteTo share it,
// so both see the same protocol.
type decoder struct {
	hdr    [chunkHeaderLen]byte
	nhdr   int  // bytes of hdr collected
	kind   byte // kind of the chunk whose payload is being consumed
	left   int  // payload bytes of that chunk still to come
	reason []byte
	done   error // io.EOF, *AbortError or a protocol error, once reached
}

// want reports how many bytes the decoder needs to finish the header or
// abort reason under way, or 0 inside a data payload, where any amount
// will do (up to left).
func (d *decoder) want() int {
	switch {
	case d.left > 0 && d.kind == chunkData:
		return 0
	case d.left > 0:
		return d.left
	}
	return chunkHeaderLen - d.nhdr
}

// feed consumes a prefix of b, one step at a time. It returns the data
// payload at the front of b (a sub-slice of b) and how many bytes of b it
// consumed. At an end chunk it returns io.EOF, at an abort chunk an
// *AbortError, at malformed input an ErrProtocol error; from then on it
// returns that error and consumes nothing, and any byte offered after it is a
// protocol error.
func (d *decoder) feed(b []byte) (data []byte, n int, err error) {
	if d.done != nil {
		if len(b) > 0 {
			d.done = fmt.Errorf("%w: %d bytes after the end of a data stream", ErrProtocol, len(b))
		}
		return nil, 0, d.done
	}
	if len(b) == 0 {
		return nil, 0, nil
	}
	if d.left > 0 {
		k := min(len(b), d.left)
		d.left -= k
		if d.kind == chunkData {
			return b[:k], k, nil
		}
		d.reason = append(d.reason, b[:k]...)
		if d.left == 0 {
			d.done = &AbortError{Reason: string(d.reason)}
			return nil, k, d.done
		}
		return nil, k, nil
	}
	k := copy(d.hdr[d.nhdr:], b)
	d.nhdr += k
	if d.nhdr < chunkHeaderLen {
		return nil, k, nil
	}
	d.nhdr = 0
	kind := d.hdr[0]
	length := int(d.hdr[1])<<16 | int(d.hdr[2])<<8 | int(d.hdr[3])
	switch {
	case kind == chunkData && length > 0:
		d.kind, d.left = chunkData, length
	case kind == chunkEnd && length == 0:
		d.done = io.EOF
	case kind == chunkAbort && length == 0:
		d.done = &AbortError{Reason: "no reason given"}
	case kind == chunkAbort && length <= maxAbortReason:
		d.kind, d.left = chunkAbort, length
		d.reason = make([]byte, 0, length)
	default:
		d.done = fmt.Errorf("%w: bad chunk (kind %d, length %d)", ErrProtocol, kind, length)
	}
	return nil, k, d.done
}

// smuxHeaderLen is the size of smux's own frame header.
const smuxHeaderLen = 8

// chunkBufSize is the buffer a relay reads into: the largest chunk whose
// smux frame, header included, is exactly frameSize bytes (with the
// default, four TLS records, the last one byte short, which leave in one
// write: transport.Batcher).
func chunkBufSize(frameSize int) int {
	return frameSize - smuxHeaderLen
}
