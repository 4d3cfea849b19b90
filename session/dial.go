package session

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// A dial stream asks the client to dial an address on its side (the
// reverse dialer). Flow:
//
//	server                                        client
//	  |--- header{network, target} -------------->|  checks its [client.dial]
//	  |                                            |  policy, resolves, dials
//	  |<-- dial reply{status, message} -----------|  exactly the addresses it checked
//	  |<== chunks both ways (status 0 only) =====>|
//
// The reply is warren's own, ahead of the chunks:
//
//	layout (1 byte, 1) | status (1 byte) | message length (2 bytes, BE) | message
//
// Status 0: connected, message = the address dialed ("10.0.0.5:5432").
// Status 1: refused by the client's policy, message = why. Status 2: the
// dial failed, message = the client's dial error. After a non-zero status
// the client sends an abort chunk with the same message and closes.
const (
	DialOK      byte = 0
	DialRefused byte = 1
	DialFailed  byte = 2
)

// maxDialMessage caps a dial reply's message, as an abort reason is capped.
const maxDialMessage = maxAbortReason

const dialReplyPrefix = 4

// defaultDialWait bounds Session.Dial's wait for the reply when its
// context has no deadline: the client bounds its dial by its dial_timeout
// (5 s by default), so a reply this late is not coming.
const defaultDialWait = 30 * time.Second

// DialError is a dial the client did not make: refused by its policy
// (Status DialRefused) or failed (DialFailed), with the client's message.
type DialError struct {
	Status  byte
	Message string
}

func (e *DialError) Error() string {
	if e.Status == DialRefused {
		return "refused by the client's dial policy: " + e.Message
	}
	return "the client could not dial: " + e.Message
}

// encodeDialReply returns the wire form of a dial reply.
func encodeDialReply(status byte, msg string) []byte {
	msg = truncateUTF8(msg, maxDialMessage)
	b := make([]byte, dialReplyPrefix+len(msg))
	b[0] = frameLayout
	b[1] = status
	binary.BigEndian.PutUint16(b[2:], uint16(len(msg)))
	copy(b[dialReplyPrefix:], msg)
	return b
}

// readDialReply reads exactly one dial reply from r.
func readDialReply(r io.Reader) (status byte, msg string, err error) {
	var pre [dialReplyPrefix]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return 0, "", err
	}
	if pre[0] != frameLayout {
		return 0, "", fmt.Errorf("%w: dial reply of layout %d; this build reads layout %d", ErrVersion, pre[0], frameLayout)
	}
	if pre[1] > DialFailed {
		return 0, "", fmt.Errorf("%w: dial reply of unknown status %d", ErrProtocol, pre[1])
	}
	n := int(binary.BigEndian.Uint16(pre[2:]))
	if n > maxDialMessage {
		return 0, "", fmt.Errorf("%w: dial reply message of %d bytes exceeds %d", ErrProtocol, n, maxDialMessage)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return 0, "", err
	}
	return pre[1], string(b), nil
}

// Dial asks the client to dial address over network on its side and
// returns the stream once the client has connected, with the address it
// dialed. A refusal or a failed dial is a *DialError; ctx (or, without a
// deadline, 30 s) bounds the wait, and the session's end ends it.
func (s *Session) Dial(ctx context.Context, network, address string) (*Stream, string, error) {
	h := Header{Target: address}
	switch network {
	case "tcp":
	case "udp":
		h.Kind = KindDatagram
	default:
		return nil, "", fmt.Errorf("dial: network %q is not \"tcp\" or \"udp\"", network)
	}
	st, err := s.Open(h)
	if err != nil {
		return nil, "", err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultDialWait)
		defer cancel()
	}
	stop := context.AfterFunc(ctx, func() { st.SetReadDeadline(time.Now()) })
	cr := &countedReader{st: st.st, led: s.led}
	status, msg, err := readDialReply(cr)
	st.taken.Add(uint32(cr.n))
	if !stop() {
		err = errors.Join(ctx.Err(), err)
	}
	st.SetReadDeadline(time.Time{})
	switch {
	case err != nil:
		st.Abort("gave up waiting for the dial")
		if ctx.Err() != nil {
			return nil, "", ctx.Err()
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.ErrClosedPipe) {
			err = ErrTruncated
		}
		return nil, "", s.orErr(fmt.Errorf("waiting for the client's dial reply: %w", err))
	case status != DialOK:
		st.Close()
		return nil, "", &DialError{Status: status, Message: msg}
	}
	return st, msg, nil
}

// ReplyDial answers a dial stream (the client's side): status DialOK with
// the address dialed, then the stream carries the connection; any other
// status with why, and the stream is given up.
func (s *Stream) ReplyDial(status byte, msg string) error {
	b := encodeDialReply(status, msg)
	if status != DialOK {
		s.wmu.Lock()
		s.st.SetWriteDeadline(time.Now().Add(abortWriteTimeout))
		s.st.Write(b)
		s.wmu.Unlock()
		return s.Abort(msg)
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if _, err := s.st.Write(b); err != nil {
		s.wclosed = true
		return s.cutOff(err)
	}
	return nil
}
