package admin

import (
	"sync"
	"time"
	"unicode/utf8"
)

// Kinds of Event.
const (
	// EventSessionUp: a session was authenticated (server: of a client;
	// client: to its server).
	EventSessionUp = "session_up"
	// EventSessionDown: a session ended; Reason says why.
	EventSessionDown = "session_down"
	// EventRejected: the server refused a client's handshake (unknown
	// token, a claim it may not make or that is taken); Code is the
	// rejection code, Reason the server's message.
	EventRejected = "rejected"
	// EventHandshakeFailed: a tunnel connection failed before it was
	// authenticated (TLS, timeout, protocol, version).
	EventHandshakeFailed = "handshake_failed"
	// EventUpdateRejected: a live session's new claims (after a client
	// reload) were refused; the old ones stay.
	EventUpdateRejected = "update_rejected"
	// EventConnRefused: a public connection no session took (the server
	// closed it, or answered 503 on the HTTP entry point).
	EventConnRefused = "connection_refused"
	// EventUnknownHost: a connection to an entry point named a host no
	// client serves.
	EventUnknownHost = "unknown_host"
	// EventConnectFailed: the client could not connect (dial, TLS,
	// handshake) or was refused; it retries unless Code says it cannot.
	EventConnectFailed = "connect_failed"
	// EventTargetFailed: the client could not reach a service's target.
	EventTargetFailed = "target_failed"
	// EventReload: the configuration was reloaded (Code "ok") or the
	// reload was refused (Code "failed", Reason why).
	EventReload = "reload"
)

// Event is one thing that happened, for the dashboard's recent-events list
// and the status API. Repeats of an event (same Kind, Client, Code and
// Route within coalesceWindow) are counted in the first instead of filling
// the list: a flood of refusals is one line with a count.
type Event struct {
	// Time is when it last happened.
	Time time.Time `json:"time"`
	// Kind is one of the Event* constants.
	Kind string `json:"kind"`
	// Client is the client's name, when known.
	Client string `json:"client,omitempty"`
	// Remote is the peer's address: the client's on the server, the
	// server's on the client, a public peer's for refused connections.
	Remote string `json:"remote,omitempty"`
	// Route is what it concerns: a route ("port 2222", "domain
	// www.example.com (http)") or a service name.
	Route string `json:"route,omitempty"`
	// Code is a short machine-readable reason: a rejection code
	// ("port_in_use"), a handshake failure reason ("tls").
	Code string `json:"code,omitempty"`
	// Reason is the message, as the logs say it. It may hold what a
	// peer sent (a claimed name, a Host header): show it as text.
	Reason string `json:"reason,omitempty"`
	// Count is how many times it happened (1 unless coalesced).
	Count int `json:"count"`
}

// Bounds of the event list. Events are kept in memory for the dashboard
// only; the log has them all.
const (
	// eventsKept is how many events the list keeps, the oldest dropped.
	eventsKept = 200
	// coalesceWindow: a repeat within this long of the last occurrence
	// counts in it.
	coalesceWindow = time.Minute
	// coalesceLookback is how many of the newest events a repeat is
	// looked for in.
	coalesceLookback = 16
	// maxReason and maxField cap the strings an event keeps (bytes; a
	// peer may send long ones).
	maxReason = 512
	maxField  = 256
)

// events is the bounded list of recent events, a ring under its own lock.
type events struct {
	mu   sync.Mutex
	ring []Event // oldest first once full: ring[next:] then ring[:next]
	next int
}

// add records e, or counts it in a recent repeat.
func (l *events) add(e Event) {
	e.Kind = clip(e.Kind, maxField)
	e.Client = clip(e.Client, maxField)
	e.Remote = clip(e.Remote, maxField)
	e.Route = clip(e.Route, maxField)
	e.Code = clip(e.Code, maxField)
	e.Reason = clip(e.Reason, maxReason)
	e.Count = 1
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(l.ring)
	newest := func(i int) *Event { return &l.ring[(l.next-1-i+n)%n] } // next is 0 until full
	for i := range min(n, coalesceLookback) {
		p := *newest(i)
		if p.Kind == e.Kind && p.Client == e.Client && p.Code == e.Code && p.Route == e.Route &&
			e.Time.Sub(p.Time) < coalesceWindow {
			p.Time, p.Remote, p.Reason = e.Time, e.Remote, e.Reason
			p.Count++
			// Newest again: the list stays in time order.
			for ; i > 0; i-- {
				*newest(i) = *newest(i - 1)
			}
			*newest(0) = p
			return
		}
	}
	if n < eventsKept {
		l.ring = append(l.ring, e)
		return
	}
	l.ring[l.next] = e
	l.next = (l.next + 1) % eventsKept
}

// list returns the events, oldest first.
func (l *events) list() []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Event, 0, len(l.ring))
	out = append(out, l.ring[l.next:]...)
	return append(out, l.ring[:l.next]...)
}

// clip cuts s to at most n bytes, at a character boundary, marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	n -= len("…")
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
