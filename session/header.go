package session

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Header opens every data stream, server to client: which service the
// public connection is for, who made it and where it arrived.
//
//	layout (1 byte, 1) | payload length (2 bytes, big endian) | payload
//	payload: service length (1 byte) | service | peer length (1 byte) | peer
//	         | local length (1 byte) | local [| kind length (1 byte) | kind]
//
// encode always writes the local field, and the kind field only when Kind
// is set (a datagram flow, which only a client that claimed a UDP service
// receives); readHeader also takes a payload that ends after the peer
// field, as older servers send it, and reads Local as empty.
type Header struct {
	// Service is the name of the client's service.
	Service string
	// Peer is the public connection's remote address, "ip:port".
	Peer string
	// Local is the address the public connection was accepted on,
	// "ip:port"; empty from a server that does not send it.
	Local string
	// Kind is KindDatagram for a UDP flow (the stream carries datagram
	// chunks, datagram.go), "" for a relayed TCP connection.
	Kind string
}

// KindDatagram is Header.Kind of a UDP flow's stream.
const KindDatagram = "udp"

const (
	headerPrefixLen   = 3
	maxHeaderField    = 255
	headerFieldsCount = 4
	// headerFieldsMin is how many fields a header must have: the local
	// field came later and may be missing.
	headerFieldsMin  = 2
	maxHeaderPayload = headerFieldsCount * (1 + maxHeaderField)
)

// encode returns the wire form of h.
func (h Header) encode() ([]byte, error) {
	if h.Service == "" {
		return nil, errors.New("stream header: empty service name")
	}
	if len(h.Service) > maxHeaderField || len(h.Peer) > maxHeaderField || len(h.Local) > maxHeaderField || len(h.Kind) > maxHeaderField {
		return nil, fmt.Errorf("stream header: field longer than %d bytes", maxHeaderField)
	}
	n := 3 + len(h.Service) + len(h.Peer) + len(h.Local)
	if h.Kind != "" {
		n += 1 + len(h.Kind)
	}
	b := make([]byte, headerPrefixLen, headerPrefixLen+n)
	b[0] = frameLayout
	binary.BigEndian.PutUint16(b[1:], uint16(n))
	b = append(b, byte(len(h.Service)))
	b = append(b, h.Service...)
	b = append(b, byte(len(h.Peer)))
	b = append(b, h.Peer...)
	b = append(b, byte(len(h.Local)))
	b = append(b, h.Local...)
	if h.Kind != "" {
		b = append(b, byte(len(h.Kind)))
		b = append(b, h.Kind...)
	}
	return b, nil
}

// readHeader reads exactly one header from r, and nothing after it.
func readHeader(r io.Reader) (Header, error) {
	var pre [headerPrefixLen]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return Header{}, err
	}
	if pre[0] != frameLayout {
		return Header{}, fmt.Errorf("%w: stream header of layout %d; this build reads layout %d", ErrVersion, pre[0], frameLayout)
	}
	n := int(binary.BigEndian.Uint16(pre[1:]))
	if n > maxHeaderPayload {
		return Header{}, fmt.Errorf("%w: stream header of %d bytes exceeds %d", ErrProtocol, n, maxHeaderPayload)
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return Header{}, err
	}
	return parseHeaderPayload(payload)
}

func parseHeaderPayload(p []byte) (Header, error) {
	var fields [headerFieldsCount]string
	for i := range fields {
		if i >= headerFieldsMin && len(p) == 0 {
			break // an optional field the sender did not write
		}
		if len(p) < 1 || len(p) < 1+int(p[0]) {
			return Header{}, fmt.Errorf("%w: stream header field %d overruns the header", ErrProtocol, i+1)
		}
		fields[i] = string(p[1 : 1+int(p[0])])
		p = p[1+int(p[0]):]
	}
	if len(p) != 0 {
		return Header{}, fmt.Errorf("%w: %d stray bytes after the stream header", ErrProtocol, len(p))
	}
	if fields[0] == "" {
		return Header{}, fmt.Errorf("%w: stream header without a service name", ErrProtocol)
	}
	if k := fields[3]; k != "" && k != KindDatagram {
		return Header{}, fmt.Errorf("%w: stream of unknown kind %q", ErrProtocol, k)
	}
	return Header{Service: fields[0], Peer: fields[1], Local: fields[2], Kind: fields[3]}, nil
}
