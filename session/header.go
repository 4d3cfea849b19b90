package session

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Header opens every data stream: which service the connection is for,
// who made it and where it arrived.
//
//	layout (1 byte, 1) | payload length (2 bytes, big endian) | payload
//	payload: service length (1 byte) | service | peer length (1 byte) | peer
//	         | local length (1 byte) | local [| kind length (1 byte) | kind
//	         [| target length (1 byte) | target]]
//
// encode always writes the local field; the kind field when Kind is set or
// the stream is a dial stream; the target field on a dial stream only.
// readHeader also takes a payload that ends after the peer field, as older
// servers send it, and reads Local as empty.
//
// Kind is "" or "tcp" for a byte stream, "udp" for a datagram flow (its
// chunks carry datagrams, datagram.go). Three shapes of stream share the
// header:
//   - a public connection or UDP flow, server to client: Service names a
//     service of the client's (a "udp" flow only to a client that claimed a
//     UDP service);
//   - a dial stream, server to client (only to a client that said
//     Auth.Dial): Service empty, Kind and Target say what to dial, and the
//     client answers with a dial reply (dial.go) before any chunk;
//   - a visitor stream, client to server (only after Welcome.Private):
//     Service is "client/service", the private service to reach.
type Header struct {
	// Service is the name of the client's service.
	Service string
	// Peer is the public connection's remote address, "ip:port".
	Peer string
	// Local is the address the public connection was accepted on,
	// "ip:port"; empty from a server that does not send it.
	Local string
	// Kind is KindDatagram for a UDP flow (the stream carries datagram
	// chunks, datagram.go), "" or KindStream for a relayed TCP connection.
	Kind string
	// Target ("host:port") is set on a dial stream only, whose Service is
	// empty: what the client is asked to dial, over Network().
	Target string
}

// Kinds of stream (Header.Kind).
const (
	KindStream   = "tcp" // the same as ""
	KindDatagram = "udp"
)

// Dial reports whether h opens a dial stream.
func (h Header) Dial() bool { return h.Target != "" }

// Network is the network the stream carries: "udp" for a datagram flow,
// else "tcp".
func (h Header) Network() string {
	if h.Kind == KindDatagram {
		return "udp"
	}
	return "tcp"
}

const (
	headerPrefixLen   = 3
	maxHeaderField    = 255
	headerFieldsCount = 5
	// headerFieldsMin is how many fields a header must have: the local
	// field came later and may be missing.
	headerFieldsMin  = 2
	maxHeaderPayload = headerFieldsCount * (1 + maxHeaderField)
)

// encode returns the wire form of h.
func (h Header) encode() ([]byte, error) {
	if (h.Service == "") == (h.Target == "") {
		return nil, errors.New("stream header: want a service name or a dial target, not both")
	}
	if len(h.Service) > maxHeaderField || len(h.Peer) > maxHeaderField || len(h.Local) > maxHeaderField ||
		len(h.Kind) > maxHeaderField || len(h.Target) > maxHeaderField {
		return nil, fmt.Errorf("stream header: field longer than %d bytes", maxHeaderField)
	}
	n := 3 + len(h.Service) + len(h.Peer) + len(h.Local)
	if h.Kind != "" || h.Dial() {
		n += 1 + len(h.Kind)
	}
	if h.Dial() {
		n += 1 + len(h.Target)
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
	if h.Kind != "" || h.Dial() {
		b = append(b, byte(len(h.Kind)))
		b = append(b, h.Kind...)
	}
	if h.Dial() {
		b = append(b, byte(len(h.Target)))
		b = append(b, h.Target...)
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
	read := 0
	for i := range fields {
		if i >= headerFieldsMin && len(p) == 0 {
			break // an optional field the sender did not write
		}
		read++
		if len(p) < 1 || len(p) < 1+int(p[0]) {
			return Header{}, fmt.Errorf("%w: stream header field %d overruns the header", ErrProtocol, i+1)
		}
		fields[i] = string(p[1 : 1+int(p[0])])
		p = p[1+int(p[0]):]
	}
	if len(p) != 0 {
		return Header{}, fmt.Errorf("%w: %d stray bytes after the stream header", ErrProtocol, len(p))
	}
	h := Header{Service: fields[0], Peer: fields[1], Local: fields[2], Kind: fields[3], Target: fields[4]}
	switch {
	case h.Service == "" && h.Target == "":
		return Header{}, fmt.Errorf("%w: stream header without a service name", ErrProtocol)
	case h.Service != "" && h.Target != "":
		return Header{}, fmt.Errorf("%w: stream header with both a service name and a dial target", ErrProtocol)
	case read == headerFieldsCount && h.Target == "":
		return Header{}, fmt.Errorf("%w: stream header with an empty dial target", ErrProtocol)
	}
	if k := h.Kind; k != "" && k != KindStream && k != KindDatagram {
		return Header{}, fmt.Errorf("%w: stream of unknown kind %q", ErrProtocol, k)
	}
	return h, nil
}
