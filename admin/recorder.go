package admin

import (
	"context"
	"sync"
	"time"
)

// Recorder keeps what the dashboard shows beyond a status snapshot: the
// recent events (sessions up and down, refusals and their reasons) and
// the bytes each service relayed, sampled once a second into a ring of
// ten minutes. The daemon calls Event and AddBytes as things happen; the
// admin Server that made it samples it and serves both. Its methods are
// safe for concurrent use and quick (one short lock), and do nothing on
// a nil *Recorder, so that a daemon without an admin listener calls them
// unchecked, as it does its metrics.
type Recorder struct {
	events  events
	history *history

	mu      sync.Mutex
	changed chan struct{} // closed at the next record; nil while nobody waits
}

// NewRecorder returns an empty recorder whose history starts now.
func NewRecorder() *Recorder { return &Recorder{history: newHistory(time.Now())} }

// Event records e; a zero Time is now.
func (r *Recorder) Event(e Event) {
	if r == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	r.events.add(e)
	r.notify()
}

// AddBytes counts bytes relayed for a client's service: in from the
// public peers, out to them.
func (r *Recorder) AddBytes(client, service string, in, out int64) {
	if r == nil {
		return
	}
	r.history.add(client, service, in, out)
	r.notify()
}

func (r *Recorder) notify() {
	r.mu.Lock()
	if r.changed != nil {
		close(r.changed)
		r.changed = nil
	}
	r.mu.Unlock()
}

// Events returns the recent events, oldest first.
func (r *Recorder) Events() []Event {
	if r == nil {
		return []Event{}
	}
	return r.events.list()
}

// Changed returns a channel that is closed at the next Event or AddBytes
// (never, on a nil Recorder).
func (r *Recorder) Changed() <-chan struct{} {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.changed == nil {
		r.changed = make(chan struct{})
	}
	return r.changed
}

// History returns the samples after seq (0: all of them).
func (r *Recorder) History(after uint64) History {
	if r == nil {
		return History{Samples: []Sample{}}
	}
	return r.history.since(after)
}

// Sample closes the current interval at now with the sessions' round
// trips. The admin Server calls it every second; tests call it directly.
func (r *Recorder) Sample(now time.Time, rtts []RTT) {
	if r == nil {
		return
	}
	r.history.sample(now, rtts)
}

// sampleEvery samples every interval, with the round trips of src's
// sessions, until ctx is done.
func (r *Recorder) sampleEvery(ctx context.Context, interval time.Duration, src Source) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			r.Sample(now, rtts(src.Status()))
		}
	}
}

// rtts lists the round trips of st's sessions.
func rtts(st Status) []RTT {
	var out []RTT
	add := func(s SessionStatus) {
		if s.RTT > 0 {
			out = append(out, RTT{Client: s.Client, Session: s.ID, RTT: s.RTT})
		}
	}
	for _, c := range st.Clients {
		for _, s := range c.Sessions {
			add(s)
		}
	}
	for _, srv := range st.Servers {
		for _, s := range srv.Sessions {
			add(s)
		}
	}
	if st.Session != nil && len(st.Servers) == 0 {
		add(*st.Session)
	}
	return out
}
