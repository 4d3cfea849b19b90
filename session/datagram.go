package session

import (
	"fmt"
	"io"
)

// A UDP flow's stream (Header.Kind KindDatagram) carries datagram chunks
// in place of data chunks, each direction on its own, in the chunk layout
// of chunk.go:
//
//	kind (1 byte) | length (3 bytes, big endian) | payload
//
//	datagram (3): 0 to MaxDatagram bytes: exactly one datagram
//	end      (1): length 0; the writer sends nothing more
//	abort    (2): length 0 to 1024, a UTF-8 reason; the writer gave up
//
// One chunk is one datagram: boundaries are kept, nothing is merged or
// split, and a 0-byte datagram is a chunk of length 0 (which a data chunk
// may not be). Each side refuses a datagram longer than the max_datagram
// the claim was granted with (a protocol error that ends the flow, not the
// session); the sender drops such datagrams before they are framed.
const (
	chunkDatagram byte = 3

	// DatagramHeaderLen is the room WriteDatagram needs in front of a
	// datagram for its chunk header.
	DatagramHeaderLen = chunkHeaderLen
	// MaxDatagram is the longest datagram a chunk may carry: 65535, more
	// than a UDP datagram over IPv4 can hold (65507).
	MaxDatagram = 1<<16 - 1
)

// WriteDatagram sends b[DatagramHeaderLen:] as one datagram. The first
// DatagramHeaderLen bytes of b are scratch for the chunk header, so that
// the header and the datagram leave in one write without a copy. After an
// error b must not be reused: smux may still hold it.
func (s *Stream) WriteDatagram(b []byte) error {
	n := len(b) - DatagramHeaderLen
	if n < 0 || n > MaxDatagram {
		return fmt.Errorf("datagram of %d bytes: want 0 to %d after %d bytes of room", n, MaxDatagram, DatagramHeaderLen)
	}
	putChunkHeader(b, chunkDatagram, n)
	return s.writeChunk(b)
}

// AppendDatagram appends datagram to dst as one datagram chunk, for
// WriteDatagrams; datagram is at most MaxDatagram bytes.
func AppendDatagram(dst, datagram []byte) []byte {
	var h [chunkHeaderLen]byte
	putChunkHeader(h[:], chunkDatagram, len(datagram))
	return append(append(dst, h[:]...), datagram...)
}

// WriteDatagrams sends b, whole datagram chunks made by AppendDatagram, in
// one write: a burst of datagrams costs the session one frame (one TLS
// record, one system call) instead of one each. After an error b must not
// be reused.
func (s *Stream) WriteDatagrams(b []byte) error { return s.writeChunk(b) }

// ReadDatagram reads the peer's next datagram. It reads the chunk header,
// calls buf with the datagram's length for a buffer at least that long,
// and reads the datagram into it, so that a reader holds no buffer while
// its flow is idle; it returns the datagram, a prefix of that buffer.
// A datagram longer than max is a protocol error. After the peer's end
// chunk it returns io.EOF, after its abort chunk an *AbortError, and an
// error wrapping ErrTruncated when the stream was cut off before either.
// Every error is final. One goroutine reads at a time.
func (s *Stream) ReadDatagram(max int, buf func(n int) []byte) ([]byte, error) {
	if s.rerr != nil {
		return nil, s.rerr
	}
	p, err := readDatagram((*datagramSource)(s), s.dhdr[:], max, buf)
	if err != nil {
		s.rerr = err
	}
	return p, err
}

// datagramSource reads a flow's stream for readDatagram, turning the
// stream's own end (smux FIN, session loss) into ErrTruncated, so that
// io.EOF means the peer's end chunk only.
type datagramSource Stream

func (d *datagramSource) Read(p []byte) (int, error) {
	s := (*Stream)(d)
	n, err := s.read(p) // counted by the ledger, as a data stream's reads are
	if err != nil && !isTimeout(err) {
		err = s.cutOff(err)
	}
	return n, err
}

// readDatagram reads one chunk of a datagram stream from r (see above):
// the datagram, read into buf(length), or the end of the direction.
// hdr is scratch of chunkHeaderLen bytes.
func readDatagram(r io.Reader, hdr []byte, max int, buf func(n int) []byte) ([]byte, error) {
	if _, err := io.ReadFull(r, hdr[:chunkHeaderLen]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	kind := hdr[0]
	n := int(hdr[1])<<16 | int(hdr[2])<<8 | int(hdr[3])
	switch {
	case kind == chunkDatagram && n <= max && n <= MaxDatagram:
		p := buf(n)[:n]
		if _, err := io.ReadFull(r, p); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		return p, nil
	case kind == chunkDatagram:
		return nil, fmt.Errorf("%w: a datagram of %d bytes exceeds the %d-byte limit (max_datagram)", ErrProtocol, n, min(max, MaxDatagram))
	case kind == chunkEnd && n == 0:
		return nil, io.EOF
	case kind == chunkAbort && n == 0:
		return nil, &AbortError{Reason: "no reason given"}
	case kind == chunkAbort && n <= maxAbortReason:
		reason := make([]byte, n)
		if _, err := io.ReadFull(r, reason); err != nil {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, &AbortError{Reason: string(reason)}
	}
	return nil, fmt.Errorf("%w: bad chunk on a datagram stream (kind %d, length %d)", ErrProtocol, kind, n)
}

// Datagram chunks carried by something other than a session stream (a
// cluster's forwarded UDP flow, docs/protocol.md §13) keep this layout;
// these are its parts for such a carrier.

// PutDatagramHeader writes the chunk header of the datagram
// b[DatagramHeaderLen:] into b's first DatagramHeaderLen bytes.
func PutDatagramHeader(b []byte) {
	putChunkHeader(b, chunkDatagram, len(b)-DatagramHeaderLen)
}

// AppendDatagramEnd appends the end chunk to dst, or with abort the abort
// chunk with reason (cut to 1024 bytes).
func AppendDatagramEnd(dst []byte, abort bool, reason string) []byte {
	var h [chunkHeaderLen]byte
	if !abort {
		putChunkHeader(h[:], chunkEnd, 0)
		return append(dst, h[:]...)
	}
	reason = truncateUTF8(reason, maxAbortReason)
	putChunkHeader(h[:], chunkAbort, len(reason))
	return append(append(dst, h[:]...), reason...)
}

// ReadDatagramFrom is ReadDatagram on r: hdr is scratch of
// DatagramHeaderLen bytes. io.EOF means the end chunk; r's own end before
// one is io.ErrUnexpectedEOF.
func ReadDatagramFrom(r io.Reader, hdr []byte, max int, buf func(n int) []byte) ([]byte, error) {
	return readDatagram(r, hdr, max, buf)
}
