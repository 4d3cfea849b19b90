// Package session speaks warren's protocol over one transport connection:
// the authenticated control stream, heartbeats, and one data stream per
// relayed public connection, all multiplexed by smux (protocol v2).
//
// Protocol flow (version 1; docs/protocol.md is the long form):
//
//	client                                            server
//	  |--- transport: TCP or KCP, TLS 1.3 handshake ---->|
//	  |--- smux v2; client opens the control stream ---->|
//	  |--- ClientHello{min_version, max_version, lane} ->|
//	  |<------------------- Challenge{version, nonce}     |  or Reject{version}, close
//	  |--- Auth{mac, instance, group, drain_notice, ---->|  mac = HMAC-SHA256(token,
//	  |         services}                                 |    label | nonce | TLS exporter)
//	  |<--------------- Welcome{client, session, ports,   |  or Reject{code, reason}, close
//	  |                   groups, drain_notice, lane}     |
//	  |         (deadlines cleared: authenticated)        |
//	  |   control frames from here: on the lane (lane.go) |  when both said lane
//	  |<-- Ping{seq} / Pong{seq} -- both ways, each side's own interval -->|
//	  |<-- server opens one data stream per public connection:
//	  |       [stream header: service, peer][chunks...]  |
//	  |--- [chunks...] --------------------------------->|
//	  |<-- and one per UDP flow (Challenge.UDP, a UDP claim):
//	  |       [header, kind "udp"][datagram chunks...]   |
//	  |--- [datagram chunks...] ------------------------>|
//	  |--- Update{seq, services} -- client: new claims ---->|
//	  |<------------------ Updated{seq, services | code}    |
//	  |--- Drain{} -- client: no new connections for me --->|
//	  |<-- Drain{return_after_ms} -- server: stopping; come  |  only after drain_notice
//	  |      back that long after my Goodbye                 |    on both sides
//	  |<-- Goodbye{code, reason} -- either side, then close -->|
//
// The client speaks first on the control stream because smux registers a
// stream it opens only after sending the SYN: a reply that raced ahead of
// the registration would be dropped. The ClientHello and the SYN leave
// together, so this costs no round trip.
//
// Control frames: layout version (1 byte, always 1), type (1 byte), payload
// length (4 bytes, big endian), JSON payload of at most
// Config.MaxControlFrame bytes. Protocol versions are negotiated inside the
// ClientHello and Challenge; the frame layout itself never changes, so
// peers of any two versions can always read each other's ClientHello,
// Reject and Goodbye and say that their versions do not match.
//
// A UDP flow's stream carries one datagram chunk per datagram
// (datagram.go) in place of data chunks.
//
// Data streams carry chunks (see chunk.go): data, end (the writer's
// half-close) and abort (with a reason). End-of-stream travels as a chunk and
// not as smux's FIN, because smux v1.5.57 drops a stream's unread data when
// the peer's last data and FIN arrive after the local side's CloseWrite.
//
// Everything before Welcome has a deadline (Config.HandshakeTimeout) and
// every frame a size cap. The token never crosses the wire; the exporter
// binds the proof to this TLS session, and the nonce binds it to this
// handshake even over plaintext, so a captured Auth cannot be replayed.
package session

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
)

// MaxConnections is how many parallel sessions of one client process (one
// Auth.Group) a server accepts at once.
const MaxConnections = 16

// Protocol versions this build speaks.
const (
	MinVersion = 1
	MaxVersion = 1
)

// frameLayout is the first byte of every control frame and stream header:
// the version of their byte layout, frozen so that version negotiation
// always works. A new layout would need a new value here and negotiation
// of a protocol version that uses it.
const frameLayout = 1

// Control frame types.
const (
	typeClientHello byte = 1
	typeChallenge   byte = 2
	typeAuth        byte = 3
	typeWelcome     byte = 4
	typeReject      byte = 5
	typePing        byte = 6
	typePong        byte = 7
	typeGoodbye     byte = 8
	typeDrain       byte = 9
	typeUpdate      byte = 10
	typeUpdated     byte = 11
	typeReset       byte = 12 // on the lane only
)

var typeNames = map[byte]string{
	typeClientHello: "client hello",
	typeChallenge:   "challenge",
	typeAuth:        "auth",
	typeWelcome:     "welcome",
	typeReject:      "reject",
	typePing:        "ping",
	typePong:        "pong",
	typeGoodbye:     "goodbye",
	typeDrain:       "drain",
	typeUpdate:      "update",
	typeUpdated:     "updated",
	typeReset:       "reset",
}

const frameHeaderLen = 6

// ClientHello opens the control stream: the protocol versions the client
// speaks.
type ClientHello struct {
	MinVersion int    `json:"min_version"`
	MaxVersion int    `json:"max_version"`
	Software   string `json:"software,omitempty"`
	// Lane says the client reads and writes control frames on the control
	// lane (lane.go); the server answers with Welcome.Lane.
	Lane bool `json:"lane,omitempty"`
}

// Challenge answers the ClientHello: the version chosen and a fresh nonce.
type Challenge struct {
	Version  int    `json:"version"`
	Nonce    []byte `json:"nonce"`
	Software string `json:"software,omitempty"`
	// UDP says the server serves UDP claims (Service.Protocol "udp"). A
	// client sends no such claim to a server without it: an older server
	// would ignore the protocol field and bind a TCP port instead.
	UDP bool `json:"udp,omitempty"`
	// PrivateUDP says the server serves private UDP services (an
	// Auth.Private entry of Protocol "udp") and UDP visitors (an
	// Auth.Visitors entry of Protocol "udp", and the visitor flows a
	// client opens: Header.Kind "udp" with Service "client/service").
	// A client sends neither to a server without it: a server that knows
	// private services but not this would read a private UDP claim as a
	// TCP one. It is in the Challenge, not the Welcome, because the
	// claims go in the Auth.
	PrivateUDP bool `json:"private_udp,omitempty"`
}

// Auth is the client's proof of its token and its claims.
type Auth struct {
	// MAC is HMAC-SHA256 keyed by the token over the auth label, the
	// server's nonce and the TLS channel binding.
	MAC []byte `json:"mac"`
	// KeyID names the token the MAC is keyed by: the first 16 bytes of
	// SHA-256 over "warren key id v1\x00" and the token. A server looks
	// it up and checks that token's MAC alone; an older server ignores
	// it and checks every token's, as it does for a client without it.
	KeyID []byte `json:"key_id,omitempty"`
	// Instance identifies one run of a client process, so that a client
	// reconnecting replaces its own stale session at once.
	Instance string `json:"instance"`
	// Group is shared by the parallel sessions of one client process
	// (client connections = N), each with its own Instance: the server lets
	// them serve the same routes together and spreads connections among
	// them. Empty for a client of one session.
	Group string `json:"group,omitempty"`
	// DrainNotice says the client reads a server's Drain (the server is
	// shutting down, and says when to come back); the server answers with
	// Welcome.DrainNotice. An older client would end the session over it.
	DrainNotice bool      `json:"drain_notice,omitempty"`
	Software    string    `json:"software,omitempty"`
	Services    []Service `json:"services"`
	// Private are services reachable only by visitors (Service.Name only):
	// no public port, no domain. They travel apart from Services so that
	// an older server, which ignores the field, can never make one public;
	// the client sees Welcome.Private unset and stops.
	Private []Service `json:"private,omitempty"`
	// Visitors are the other clients' private services this client
	// reaches through the server; apart from Services for the same reason.
	Visitors []Visitor `json:"visitors,omitempty"`
	// Dial says the client takes dial streams (Header.Target): the server
	// may ask it to dial an address, which its own policy checks.
	Dial bool `json:"dial,omitempty"`
	// Unavailable says the client treats the reject code
	// registry_unavailable as temporary (it retries). A server in a
	// cluster sends that code only to such a client, and limit to others:
	// an older client would give up on an unknown code.
	Unavailable bool `json:"unavailable,omitempty"`
}

// Visitor is a client's claim to reach another client's private service
// ("client/service") through the server.
type Visitor struct {
	Name    string `json:"name"`
	Service string `json:"service"`
	// Protocol is ProtoTCP ("", the default) or ProtoUDP: a UDP visitor,
	// whose flows reach a private UDP service. Only to a server that
	// announced Challenge.PrivateUDP.
	Protocol string `json:"protocol,omitempty"`
	// Error, in Welcome only, says why the server refuses the visitor
	// now: its connections are refused while it is set (each is checked
	// again as it comes, so a service that appears later is reached).
	Error string `json:"error,omitempty"`
}

// Service is a client's claim on the server: a public port and/or domains,
// served by the client's target.
type Service struct {
	Name string `json:"name"`
	// RemotePort is the public port; 0 with no domains asks the server to
	// pick a free port among those the token allows.
	RemotePort int      `json:"remote_port,omitempty"`
	Domains    []string `json:"domains,omitempty"`
	// Entry is where the domains are served: "http" (the default) or
	// "https".
	Entry string `json:"entry,omitempty"`
	// Shared lets other sessions serve the same port or domains; they must
	// all say so.
	Shared bool `json:"shared,omitempty"`
	// Protocol is ProtoTCP ("", the default) or ProtoUDP: a public UDP
	// port whose flows arrive on datagram streams (datagram.go). Only to a
	// server that announced Challenge.UDP.
	Protocol string `json:"protocol,omitempty"`
	// UDP are a UDP service's limits: in a claim, the service's wish to
	// lower the server's (0: the server's); in a grant, those in force.
	UDP *UDPLimits `json:"udp,omitempty"`
}

// Protocols of a Service.
const (
	ProtoTCP = "tcp"
	ProtoUDP = "udp"
)

// UDPLimits bound a UDP service's flows. A flow is one public source
// address; it ends after IdleMillis with no datagram either way.
type UDPLimits struct {
	IdleMillis  int64 `json:"idle_timeout_ms,omitempty"`
	MaxFlows    int   `json:"max_flows,omitempty"`
	MaxDatagram int   `json:"max_datagram,omitempty"`
}

// IsUDP reports whether s is a UDP service.
func (s Service) IsUDP() bool { return s.Protocol == ProtoUDP }

// Entry points a Service's domains may be served on (Service.Entry).
const (
	EntryHTTP  = "http"
	EntryHTTPS = "https"
)

// Welcome accepts a client.
type Welcome struct {
	// Client is the name the server knows this client by.
	Client string `json:"client"`
	// Session identifies this session in both sides' logs.
	Session string `json:"session"`
	// Services are the claims as granted, with the public ports bound.
	Services []Service `json:"services"`
	// Groups says the server lets the parallel sessions of one Auth.Group
	// serve together. A server without it would have each parallel session
	// replace the one before, so a client of several stops at once.
	Groups bool `json:"groups,omitempty"`
	// Lane: from this frame on, both sides send their control frames on
	// the control lane instead of the control stream. Only in answer to a
	// ClientHello.Lane.
	Lane bool `json:"lane,omitempty"`
	// DrainNotice: this server sends Drain when it shuts down. Only in
	// answer to an Auth.DrainNotice.
	DrainNotice bool `json:"drain_notice,omitempty"`
	// Private says the server knows private services, visitors and the
	// streams a client opens for them (Header.Service "client/service"),
	// and read Auth.Private and Auth.Visitors. A client that claimed
	// either and does not see it closes the session and stops.
	Private bool `json:"private,omitempty"`
	// PrivateServices are the private claims as granted.
	PrivateServices []Service `json:"private_services,omitempty"`
	// Visitors are the visitor claims, each with Error set if refused.
	Visitors []Visitor `json:"visitors,omitempty"`
}

// Reject refuses a client; the server closes the session after it.
type Reject struct {
	Code   string `json:"code"`
	Reason string `json:"reason"`
}

// Ping and Pong measure RTT and prove the peer alive.
type Ping struct {
	Seq uint64 `json:"seq"`
}

// Pong answers the Ping with the same Seq.
type Pong struct {
	Seq uint64 `json:"seq"`
}

// Drain says the sender takes no new connections, and its open streams
// carry on until they end or it says Goodbye.
//
// From the client (always allowed): the server routes no new public
// connection to it. From the server (only to a client whose Auth said
// DrainNotice, and announced in Welcome.DrainNotice): it is shutting
// down; it has stopped taking public connections, and the client should
// come back no sooner than ReturnAfter after the session ends. A client
// of several servers serves through the others meanwhile.
type Drain struct {
	// ReturnAfter is when, after the server's Goodbye, to reconnect, in
	// milliseconds; 0 from the client.
	ReturnAfter int64 `json:"return_after_ms,omitempty"`
}

// Update replaces, after Welcome, the services the client claims (a config
// reload): the whole new list, answered by Updated with the same Seq.
type Update struct {
	Seq      uint64    `json:"seq"`
	Services []Service `json:"services"`
}

// Updated answers Update: the services as now granted, or a rejection
// (Code set) that leaves the session's claims as they were.
type Updated struct {
	Seq      uint64    `json:"seq"`
	Services []Service `json:"services,omitempty"`
	Code     string    `json:"code,omitempty"`
	Reason   string    `json:"reason,omitempty"`
}

// Reset, sent on the control lane only, says the sender gave data stream
// Stream up (it sent, or could not send, an abort chunk with Reason). The
// abort chunk waits behind the stream's data; a relay stuck writing that
// data into a connection that does not read would never reach it, so the
// receiver kills the stream when its relay makes no progress for a moment
// after the Reset (ledger.go).
type Reset struct {
	Stream uint32 `json:"stream"`
	Reason string `json:"reason"`
}

// Goodbye tells the peer why the session ends; the sender closes after it.
type Goodbye struct {
	Code   string `json:"code"`
	Reason string `json:"reason"`
}

// writeFrame encodes msg as one control frame and writes it in one Write.
func writeFrame(w io.Writer, typ byte, msg any) error {
	buf, err := encodeFrame(typ, msg, 0)
	if err != nil {
		return err
	}
	_, err = w.Write(buf)
	return err
}

// encodeFrame returns msg as a control frame, after room for reserve bytes.
func encodeFrame(typ byte, msg any, reserve int) ([]byte, error) {
	payload, err := json.Marshal(msg)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, reserve+frameHeaderLen+len(payload))
	h := buf[reserve:]
	h[0] = frameLayout
	h[1] = typ
	binary.BigEndian.PutUint32(h[2:], uint32(len(payload)))
	copy(h[frameHeaderLen:], payload)
	return buf, nil
}

// readFrame reads one control frame whose payload is at most max bytes.
func readFrame(r io.Reader, max int) (typ byte, payload []byte, err error) {
	var hdr [frameHeaderLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	if hdr[0] != frameLayout {
		return hdr[1], nil, fmt.Errorf("%w: peer sent a control frame of layout %d; this build reads layout %d", ErrVersion, hdr[0], frameLayout)
	}
	n := binary.BigEndian.Uint32(hdr[2:])
	if n > uint32(max) {
		return hdr[1], nil, fmt.Errorf("%w: %s frame of %d bytes exceeds the %d-byte limit", ErrProtocol, typeName(hdr[1]), n, max)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return hdr[1], nil, err
	}
	return hdr[1], payload, nil
}

// decodeFrame unmarshals a payload of type typ into msg, which must be the
// message type that typ names.
func decodeFrame(typ byte, payload []byte, msg any) error {
	if err := json.Unmarshal(payload, msg); err != nil {
		return fmt.Errorf("%w: malformed %s frame: %v", ErrProtocol, typeName(typ), err)
	}
	return nil
}

func typeName(typ byte) string {
	if s, ok := typeNames[typ]; ok {
		return s
	}
	return fmt.Sprintf("unknown (type %d)", typ)
}
