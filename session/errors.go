package session

import (
	"errors"
	"fmt"
)

// Sentinel errors; match them with errors.Is.
var (
	// ErrProtocol means the peer broke the protocol: a malformed,
	// oversized or unexpected frame.
	ErrProtocol = errors.New("protocol error")
	// ErrVersion means the two sides share no protocol version.
	ErrVersion = errors.New("protocol version mismatch")
	// ErrConnLost means the transport connection failed or the peer hung
	// up without a Goodbye.
	ErrConnLost = errors.New("connection lost")
	// ErrHeartbeat means the peer stopped answering heartbeats.
	ErrHeartbeat = errors.New("heartbeat timeout")
	// ErrTruncated means a data stream ended with neither an end nor an
	// abort chunk: its peer or its session went away.
	ErrTruncated = errors.New("stream cut off before its end")
	// ErrClosed is returned by a Session or Stream used after Close.
	ErrClosed = errors.New("closed")
	// ErrNoUDP means the server did not announce UDP services
	// (Challenge.UDP), so the client claimed nothing: an older server
	// would have bound a TCP port for a UDP claim.
	ErrNoUDP = errors.New("the server does not serve UDP services (an older warren?): upgrade it, or remove the UDP services")
	// ErrNoPrivateUDP means the server did not announce private UDP
	// services and UDP visitors (Challenge.PrivateUDP), so the client
	// claimed nothing: an older server would read a private UDP service
	// as a TCP one.
	ErrNoPrivateUDP = errors.New("the server does not serve private UDP services or UDP visitors (an older warren?): upgrade it, or remove them")
)

// Codes of Reject and Goodbye frames.
const (
	CodeUnknownToken     = "unknown_token"
	CodePortNotAllowed   = "port_not_allowed"
	CodePortInUse        = "port_in_use"
	CodeDomainNotAllowed = "domain_not_allowed"
	CodeDomainInUse      = "domain_in_use"
	CodeBadRequest       = "bad_request"
	CodeVersion          = "version"
	CodeLimit            = "limit"
	CodeShuttingDown     = "shutting_down"
	CodeReplaced         = "replaced"
	CodeProtocol         = "protocol"
	CodeClosed           = "closed"
	// CodeUnavailable: a claim needs the cluster's registry, which the
	// server cannot reach now. Temporary; sent only to a client that said
	// Auth.Unavailable (others get CodeLimit, which they already retry).
	CodeUnavailable = "registry_unavailable"
)

// RejectError is the server's refusal of a client, as both sides report it.
type RejectError struct {
	Code   string
	Reason string
}

func (e *RejectError) Error() string {
	if e.Code == CodeUnknownToken {
		return "auth rejected: " + e.Reason
	}
	return "session rejected: " + e.Reason
}

// Temporary reports whether the same request may succeed later: the
// server was shutting down, at a limit, or could not reach its cluster's
// registry. Every other rejection needs a
// change of configuration on one side.
func (e *RejectError) Temporary() bool {
	return e.Code == CodeShuttingDown || e.Code == CodeLimit || e.Code == CodeUnavailable
}

// Rejectf returns a *RejectError with a formatted reason.
func Rejectf(code, format string, args ...any) *RejectError {
	return &RejectError{Code: code, Reason: fmt.Sprintf(format, args...)}
}

// GoodbyeError is how a session ends when the peer closed it and said why.
type GoodbyeError struct {
	Code   string
	Reason string
	// Peer is "server" or "client".
	Peer string
}

func (e *GoodbyeError) Error() string {
	return e.Peer + " closed session: " + e.Reason
}

// AbortError ends a data stream whose other end gave up on it, with the
// reason it gave (for example the target dial error).
type AbortError struct {
	Reason string
}

func (e *AbortError) Error() string { return "aborted by peer: " + e.Reason }
