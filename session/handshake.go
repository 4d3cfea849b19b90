package session

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/xtaci/smux"

	"github.com/warren-tunnel/warren/clock"
	"github.com/warren-tunnel/warren/internal/version"
	"github.com/warren-tunnel/warren/transport"
)

// Pending is a server-side session whose client has sent its Auth and
// waits for the answer: Welcome to accept it, Reject or Close to refuse it.
// The handshake deadline keeps running until Welcome.
type Pending struct {
	// Request is the client's Auth; see Request.Match.
	Request *Request

	cfg      Config
	log      *slog.Logger
	conn     net.Conn
	budget   *budgetConn
	lc       *laneConn
	mux      *smux.Session
	ctrl     *smux.Stream
	deadline time.Time
}

// Accept runs the server side of the handshake on a freshly accepted
// transport connection, up to the client's Auth. Everything it reads is
// capped in size (each frame, and all bytes together until Welcome) and the
// whole of it, TLS handshake included, must finish within
// cfg.HandshakeTimeout. On error conn is closed.
func Accept(conn net.Conn, cfg Config, log *slog.Logger) (*Pending, error) {
	return AcceptBy(time.Now().Add(cfg.HandshakeTimeout), conn, cfg, log)
}

// AcceptBy is Accept with the handshake ending by deadline instead: the
// server's one deadline for the TLS handshake, which it may have run
// already, and the auth together.
func AcceptBy(deadline time.Time, conn net.Conn, cfg Config, log *slog.Logger) (*Pending, error) {
	if err := cfg.Validate(); err != nil {
		conn.Close()
		return nil, err
	}
	conn.SetDeadline(deadline)
	binding, err := transport.ExportBinding(conn)
	if err != nil {
		conn.Close()
		return nil, err
	}
	budget := newBudgetConn(conn, preAuthBudget(cfg), clock.Or(cfg.Clock))
	lc := newLaneConn(budget, cfg)
	mux, err := smux.Server(lc, cfg.smux())
	if err != nil {
		conn.Close()
		return nil, err
	}
	mux.SetDeadline(deadline)
	ctrl, err := mux.AcceptStream()
	if err != nil {
		mux.Close()
		return nil, fmt.Errorf("waiting for the control stream: %w", err)
	}
	lc.track.Store(true) // every stream after this one is a data stream
	ctrl.SetDeadline(deadline)
	p := &Pending{cfg: cfg, log: log, conn: conn, budget: budget, lc: lc, mux: mux, ctrl: ctrl, deadline: deadline}

	var ch ClientHello
	if err := p.read(typeClientHello, &ch); err != nil {
		return nil, err
	}
	if ch.Lane {
		lc.accept.Store(true) // the client may send on the lane once welcomed
	}
	v := min(MaxVersion, ch.MaxVersion)
	if v < max(MinVersion, ch.MinVersion) {
		rej := Rejectf(CodeVersion, "version mismatch: client speaks protocol %d-%d, server %d-%d", ch.MinVersion, ch.MaxVersion, MinVersion, MaxVersion)
		p.Reject(rej)
		return nil, rej
	}
	nonce, err := newNonce()
	if err != nil {
		mux.Close()
		return nil, err
	}
	if err := writeFrame(ctrl, typeChallenge, Challenge{Version: v, Nonce: nonce, UDP: true, PrivateUDP: true}); err != nil {
		mux.Close()
		return nil, fmt.Errorf("sending challenge: %w", err)
	}
	var auth Auth
	if err := p.read(typeAuth, &auth); err != nil {
		return nil, err
	}
	p.Request = &Request{Auth: auth, Remote: conn.RemoteAddr(), nonce: nonce, binding: binding}
	return p, nil
}

// read reads the client's next frame into msg, which must be of type want.
// On error the connection is closed: with a Reject when the client broke
// the protocol, silently when it went away or gave up.
func (p *Pending) read(want byte, msg any) error {
	typ, payload, err := readFrame(drained{p.ctrl}, p.cfg.MaxControlFrame)
	if err == nil && typ == typeGoodbye {
		var g Goodbye
		decodeFrame(typ, payload, &g)
		p.mux.Close()
		return &GoodbyeError{Code: g.Code, Reason: g.Reason, Peer: "client"}
	}
	if err == nil && typ != want {
		err = fmt.Errorf("%w: got a %s frame, want %s", ErrProtocol, typeName(typ), typeName(want))
	}
	if err == nil {
		err = decodeFrame(typ, payload, msg)
	}
	if err == nil {
		return nil
	}
	if errors.Is(err, ErrVersion) || errors.Is(err, ErrProtocol) {
		p.Reject(&RejectError{Code: codeFor(err), Reason: err.Error()})
	} else {
		p.mux.Close()
	}
	return fmt.Errorf("waiting for %s: %w", typeName(want), err)
}

func codeFor(err error) string {
	if errors.Is(err, ErrVersion) {
		return CodeVersion
	}
	return CodeProtocol
}

// Reject sends rej to the client, waits briefly for it to hang up, and
// closes the connection.
func (p *Pending) Reject(rej *RejectError) {
	deadline := earliest(p.deadline, time.Now().Add(goodbyeTimeout))
	p.ctrl.SetDeadline(deadline)
	if writeFrame(p.ctrl, typeReject, Reject{Code: rej.Code, Reason: rej.Reason}) == nil {
		waitHangUp(p.ctrl, deadline)
	}
	p.mux.Close()
}

// Close drops the connection without an answer.
func (p *Pending) Close() { p.mux.Close() }

// Welcome accepts the client: it sends w, clears the handshake deadlines
// and returns the running session (call its Run). It sets w.Lane and
// w.DrainNotice itself, when the client offered the lane and announced
// it reads the notice.
func (p *Pending) Welcome(w Welcome) (*Session, error) {
	w.Lane = p.lc.accept.Load()
	w.DrainNotice = p.Request.DrainNotice
	if err := writeFrame(p.ctrl, typeWelcome, w); err != nil {
		p.mux.Close()
		return nil, fmt.Errorf("sending welcome: %w", err)
	}
	// Authenticated: from here on heartbeats bound the session instead.
	p.budget.lift()
	p.conn.SetDeadline(time.Time{})
	p.mux.SetDeadline(time.Time{})
	p.ctrl.SetDeadline(time.Time{})
	info := Info{
		Client:          w.Client,
		ID:              w.Session,
		Instance:        p.Request.Instance,
		Remote:          p.conn.RemoteAddr(),
		Services:        w.Services,
		Groups:          w.Groups,
		DrainNotice:     w.DrainNotice,
		Started:         clock.Or(p.cfg.Clock).Now(),
		Private:         w.Private,
		PrivateServices: w.PrivateServices,
		Visitors:        w.Visitors,
		Dial:            p.Request.Dial,
	}
	return newSession(p.cfg, p.log, p.budget, p.lc, w.Lane, p.mux, p.ctrl, "client", info), nil
}

// Connect runs the client side of the handshake on a transport connection
// fresh from Dial: it proves token, claims services and returns the running
// session (call its Run) with the server's Welcome in its Info. A refusal is
// a *RejectError. On error conn is closed.
func Connect(conn net.Conn, cfg Config, log *slog.Logger, token []byte, instance string, services []Service) (*Session, error) {
	return ConnectBy(time.Time{}, conn, cfg, log, token, instance, "", services)
}

// ConnectBy is Connect with the handshake ending by hsDeadline at the
// latest (the client's one deadline for dial, TLS and auth together);
// the session keeps cfg.HandshakeTimeout for what it bounds later (stream
// headers, updates), and with group naming the set of parallel sessions
// this one belongs to ("" for none; see Auth.Group).
func ConnectBy(hsDeadline time.Time, conn net.Conn, cfg Config, log *slog.Logger, token []byte, instance, group string, services []Service) (*Session, error) {
	return ConnectWith(hsDeadline, conn, cfg, log, token, instance, group, Claims{Services: services})
}

// Claims is what a client asks of the server in its Auth.
type Claims struct {
	Services []Service
	// Private and Visitors need a server that answers Welcome.Private:
	// with one that does not, ConnectWith closes the session and fails
	// with ErrNoPrivate.
	Private  []Service
	Visitors []Visitor
	// Dial: the client takes dial streams.
	Dial bool
}

// ErrNoPrivate: the server does not know private services and visitors
// (it did not answer Welcome.Private), so it ignored them.
var ErrNoPrivate = errors.New("the server does not support private services and visitors: upgrade the server")

// ConnectWith is ConnectBy with every kind of claim.
func ConnectWith(hsDeadline time.Time, conn net.Conn, cfg Config, log *slog.Logger, token []byte, instance, group string, claims Claims) (*Session, error) {
	services := claims.Services
	if err := cfg.Validate(); err != nil {
		conn.Close()
		return nil, err
	}
	deadline := time.Now().Add(cfg.HandshakeTimeout)
	if !hsDeadline.IsZero() && hsDeadline.Before(deadline) {
		deadline = hsDeadline
	}
	conn.SetDeadline(deadline)
	binding, err := transport.ExportBinding(conn)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("TLS with the server: %w", err)
	}
	budget := newBudgetConn(conn, preAuthBudget(cfg), clock.Or(cfg.Clock)) // the server is not trusted yet either
	lc := newLaneConn(budget, cfg)
	lc.accept.Store(offerLane) // offered in the ClientHello
	mux, err := smux.Client(lc, cfg.smux())
	if err != nil {
		conn.Close()
		return nil, err
	}
	ctrl, err := mux.OpenStream()
	if err != nil {
		mux.Close()
		return nil, fmt.Errorf("opening the control stream: %w", err)
	}
	lc.track.Store(true) // every stream after this one is a data stream
	ctrl.SetDeadline(deadline)
	fail := func(err error) (*Session, error) {
		mux.Close()
		return nil, err
	}

	ch := ClientHello{MinVersion: MinVersion, MaxVersion: MaxVersion, Software: version.Software(), Lane: offerLane}
	if err := writeFrame(ctrl, typeClientHello, ch); err != nil {
		return fail(fmt.Errorf("sending client hello: %w", err))
	}
	var c Challenge
	if err := readAnswer(ctrl, cfg, typeChallenge, &c); err != nil {
		return fail(answerErr("waiting for the server's challenge", err))
	}
	if c.Version < MinVersion || c.Version > MaxVersion {
		return fail(fmt.Errorf("%w: server chose protocol %d, which this client (%d-%d) did not offer", ErrProtocol, c.Version, MinVersion, MaxVersion))
	}
	if len(c.Nonce) != nonceLen {
		return fail(fmt.Errorf("%w: challenge nonce of %d bytes, want %d", ErrProtocol, len(c.Nonce), nonceLen))
	}
	for _, svc := range services {
		if svc.IsUDP() && !c.UDP {
			return fail(fmt.Errorf("%w: service %q has protocol = \"udp\"", ErrNoUDP, svc.Name))
		}
	}
	if !c.PrivateUDP {
		for _, svc := range claims.Private {
			if svc.IsUDP() {
				return fail(fmt.Errorf("%w: private service %q has protocol = \"udp\"", ErrNoPrivateUDP, svc.Name))
			}
		}
		for _, v := range claims.Visitors {
			if v.Protocol == ProtoUDP {
				return fail(fmt.Errorf("%w: visitor %q has protocol = \"udp\"", ErrNoPrivateUDP, v.Name))
			}
		}
	}
	auth := Auth{
		MAC:         proof(token, c.Nonce, binding),
		KeyID:       keyID(token),
		Instance:    instance,
		Group:       group,
		DrainNotice: true, // Run's Handlers.Draining gets it, or it is ignored
		Software:    version.Software(),
		Services:    services,
		Private:     claims.Private,
		Visitors:    claims.Visitors,
		Dial:        claims.Dial,
		Unavailable: true, // RejectError.Temporary knows registry_unavailable
	}
	if err := writeFrame(ctrl, typeAuth, auth); err != nil {
		return fail(fmt.Errorf("sending auth: %w", err))
	}
	var w Welcome
	if err := readAnswer(ctrl, cfg, typeWelcome, &w); err != nil {
		return fail(answerErr("waiting for the server's welcome", err))
	}
	budget.lift()
	conn.SetDeadline(time.Time{})
	ctrl.SetDeadline(time.Time{})
	info := Info{
		Client:          w.Client,
		ID:              w.Session,
		Instance:        instance,
		Remote:          conn.RemoteAddr(),
		Services:        w.Services,
		Groups:          w.Groups,
		UDP:             c.UDP,
		PrivateUDP:      c.PrivateUDP,
		DrainNotice:     w.DrainNotice && auth.DrainNotice,
		Started:         clock.Or(cfg.Clock).Now(),
		Private:         w.Private,
		PrivateServices: w.PrivateServices,
		Visitors:        w.Visitors,
	}
	sess := newSession(cfg, log, budget, lc, w.Lane, mux, ctrl, "server", info)
	if !w.Private && (len(claims.Private) > 0 || len(claims.Visitors) > 0) {
		// An older server ignored them: nothing private was made public,
		// but nothing the client asked for works either.
		sess.Close(CodeClosed, "this server does not support private services and visitors")
		return nil, ErrNoPrivate
	}
	return sess, nil
}

// answerErr says what failed while waiting for the server's answer. A
// Reject or Goodbye speaks for itself; a hang-up is named as one, not "EOF".
func answerErr(stage string, err error) error {
	var rej *RejectError
	var bye *GoodbyeError
	switch {
	case errors.As(err, &rej), errors.As(err, &bye):
		return err
	case err == io.EOF, errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.ErrClosedPipe):
		return fmt.Errorf("%s: %w: server hung up", stage, ErrConnLost)
	}
	return fmt.Errorf("%s: %w", stage, err)
}

// readAnswer reads the server's next frame into msg when it has type want;
// a Reject becomes a *RejectError, a Goodbye a *GoodbyeError.
func readAnswer(ctrl *smux.Stream, cfg Config, want byte, msg any) error {
	typ, payload, err := readFrame(drained{ctrl}, cfg.MaxControlFrame)
	if err != nil {
		return err
	}
	switch typ {
	case want:
		return decodeFrame(typ, payload, msg)
	case typeReject:
		var r Reject
		if err := decodeFrame(typ, payload, &r); err != nil {
			return err
		}
		return &RejectError{Code: r.Code, Reason: r.Reason}
	case typeGoodbye:
		var g Goodbye
		if err := decodeFrame(typ, payload, &g); err != nil {
			return err
		}
		return &GoodbyeError{Code: g.Code, Reason: g.Reason, Peer: "server"}
	}
	return fmt.Errorf("%w: got a %s frame, want %s", ErrProtocol, typeName(typ), typeName(want))
}

// NewID returns a random identifier for sessions and client instances.
func NewID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
