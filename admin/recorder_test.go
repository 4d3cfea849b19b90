package admin_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/warren-tunnel/warren/admin"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func TestEventsCoalesce(t *testing.T) {
	r := admin.NewRecorder()
	refused := admin.Event{Kind: admin.EventRejected, Client: "laptop", Code: "port_in_use", Reason: "port 22 is held"}
	r.Event(at(refused, t0))
	r.Event(at(admin.Event{Kind: admin.EventSessionUp, Client: "nas"}, t0.Add(time.Second)))
	again := refused
	again.Reason, again.Remote = "port 22 is held by laptop", "192.0.2.9:1"
	r.Event(at(again, t0.Add(2*time.Second)))

	got := r.Events()
	if len(got) != 2 {
		t.Fatalf("events %+v: want the repeat counted in the first", got)
	}
	// The repeat moved the event to the newest place, with its latest
	// details.
	if got[1].Kind != admin.EventRejected || got[1].Count != 2 || got[1].Reason != again.Reason ||
		got[1].Remote != again.Remote || !got[1].Time.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("coalesced event %+v: want count 2, the latest reason, remote and time, newest", got[1])
	}
	// Later than the window, or of another client: a new line.
	r.Event(at(refused, t0.Add(2*time.Second+time.Minute)))
	other := refused
	other.Client = "nas"
	r.Event(at(other, t0.Add(3*time.Minute)))
	if got := r.Events(); len(got) != 4 || got[2].Count != 1 || got[3].Client != "nas" {
		t.Fatalf("events %+v: want new lines past the window and for another client", got)
	}
}

func TestEventsBounded(t *testing.T) {
	r := admin.NewRecorder()
	const n = 1000
	for i := range n {
		// Distinct routes: nothing coalesces.
		r.Event(at(admin.Event{Kind: admin.EventConnRefused, Route: fmt.Sprintf("port %d", i), Reason: strings.Repeat("é", 2000)}, t0.Add(time.Duration(i)*time.Millisecond)))
	}
	got := r.Events()
	if len(got) != 200 {
		t.Fatalf("%d events kept, want the newest 200", len(got))
	}
	for i, e := range got {
		if want := fmt.Sprintf("port %d", n-200+i); e.Route != want {
			t.Fatalf("event %d is %q, want %q (oldest first)", i, e.Route, want)
		}
		if len(e.Reason) > 512 || !utf8.ValidString(e.Reason) || !strings.HasSuffix(e.Reason, "…") {
			t.Fatalf("reason of %d bytes, valid UTF-8 %v: want at most 512, cut at a character and marked", len(e.Reason), utf8.ValidString(e.Reason))
		}
	}
}

func TestHistoryRates(t *testing.T) {
	r := admin.NewRecorder()
	r.AddBytes("laptop", "ssh", 1000, 4000)
	r.AddBytes("laptop", "ssh", 1000, 0)
	r.AddBytes("nas", "ssh", 0, 500) // another client's service of the same name
	r.AddBytes("nas", "web", 0, 0)   // nothing: no series
	rtt := []admin.RTT{{Client: "laptop", Session: "s1", RTT: admin.Duration(12 * time.Millisecond)}}
	start := r.History(0).Started
	r.Sample(start.Add(2*time.Second), rtt) // a 2 s interval: bytes per second are halved
	r.Sample(start.Add(3*time.Second), nil) // nothing moved
	r.AddBytes("laptop", "ssh", 300, 0)
	r.Sample(start.Add(4*time.Second), nil)

	h := r.History(0)
	if h.Interval.D() != time.Second || h.Kept != 600 || len(h.Samples) != 3 {
		t.Fatalf("history: interval %v, kept %d, %d samples; want 1s, 600, 3", h.Interval, h.Kept, len(h.Samples))
	}
	want := [][]admin.Rate{
		{{Client: "laptop", Service: "ssh", In: 1000, Out: 2000}, {Client: "nas", Service: "ssh", In: 0, Out: 250}},
		{},
		{{Client: "laptop", Service: "ssh", In: 300, Out: 0}},
	}
	for i, s := range h.Samples {
		if s.Seq != uint64(i+1) || !reflect.DeepEqual(s.Traffic, want[i]) {
			t.Errorf("sample %d: seq %d, traffic %+v; want seq %d, %+v", i, s.Seq, s.Traffic, i+1, want[i])
		}
	}
	if !reflect.DeepEqual(h.Samples[0].RTT, rtt) || len(h.Samples[1].RTT) != 0 {
		t.Errorf("round trips %+v, %+v: want %+v, then none", h.Samples[0].RTT, h.Samples[1].RTT, rtt)
	}
	if after := r.History(2); len(after.Samples) != 1 || after.Samples[0].Seq != 3 {
		t.Errorf("History(2) = %+v, want sample 3 only", after.Samples)
	}
	// JSON: empty lists are [], never null.
	b, err := json.Marshal(h.Samples[1])
	if err != nil || !strings.Contains(string(b), `"traffic":[]`) || !strings.Contains(string(b), `"rtt":[]`) {
		t.Errorf("sample JSON %s (%v): want empty lists", b, err)
	}
}

func TestHistoryBounded(t *testing.T) {
	r := admin.NewRecorder()
	start := r.History(0).Started
	now := start
	tick := func() {
		now = now.Add(time.Second)
		r.Sample(now, nil)
	}
	// 100 services busy at once: the 63 busiest are listed, the rest
	// summed.
	for i := range 100 {
		r.AddBytes("c", fmt.Sprintf("svc%03d", i), int64(1000+i), 0)
	}
	tick()
	s := r.History(0).Samples[0]
	if len(s.Traffic) != 64 || s.Traffic[0].Service != "svc099" || s.Traffic[63].Service != admin.OtherService {
		t.Fatalf("%d rates, first %+v, last %+v: want 64, the busiest first, the rest as %s", len(s.Traffic), s.Traffic[0], s.Traffic[63], admin.OtherService)
	}
	var sum int64
	for _, r := range s.Traffic {
		sum += r.In
	}
	if want := int64(100*1000 + 99*100/2); sum != want {
		t.Fatalf("rates sum to %d B/s, want %d: nothing lost in the cap", sum, want)
	}
	// The ring keeps 600 samples, the newest.
	for range 700 {
		tick()
	}
	h := r.History(0)
	if len(h.Samples) != 600 || h.Samples[0].Seq != 102 || h.Samples[599].Seq != 701 {
		t.Fatalf("%d samples, %d to %d: want the newest 600, 102 to 701", len(h.Samples), h.Samples[0].Seq, h.Samples[len(h.Samples)-1].Seq)
	}
}

// TestRecorderNil: a daemon without an admin listener records into a nil
// Recorder, which does nothing.
func TestRecorderNil(t *testing.T) {
	var r *admin.Recorder
	r.Event(admin.Event{Kind: admin.EventSessionUp})
	r.AddBytes("c", "s", 1, 1)
	r.Sample(time.Now(), nil)
	if len(r.Events()) != 0 || len(r.History(0).Samples) != 0 {
		t.Fatal("a nil Recorder has something")
	}
	var s *admin.Server
	if s.Recorder() != nil {
		t.Fatal("a nil Server has a Recorder")
	}
}

// TestStatusEvents: the events the daemon records show in the status.
// (The sampler's work shows on the dashboard's charts: e2e.)
func TestStatusEvents(t *testing.T) {
	s, c := start(t, loopback(), newSource(), nil)
	s.Recorder().Event(admin.Event{Kind: admin.EventRejected, Client: "laptop", Reason: xssReason})
	_, body := do(t, c, "GET", url(s, "/api/v1/status"), "")
	var st admin.Status
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Events) != 1 || st.Events[0].Reason != xssReason || st.Events[0].Count != 1 {
		t.Fatalf("status events %+v: want the one recorded, its reason as it was", st.Events)
	}
}

const xssReason = `service name "<img src=x onerror=alert(1)>": not valid`

// TestDashboardHeaders: the page is served with a policy that runs only
// its own script and cannot be framed, and revalidates cheaply.
func TestDashboardHeaders(t *testing.T) {
	s, c := start(t, loopback(), newSource(), nil)
	for _, path := range []string{"/", "/assets/app.js", "/assets/style.css", "/assets/icon.svg"} {
		resp, err := c.Get(url(s, path))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		h := resp.Header
		if resp.StatusCode != 200 || !strings.Contains(h.Get("Content-Security-Policy"), "script-src 'self'") ||
			h.Get("X-Frame-Options") != "DENY" || h.Get("X-Content-Type-Options") != "nosniff" || h.Get("ETag") == "" {
			t.Errorf("GET %s: %d, headers %v: want 200 with CSP, X-Frame-Options DENY, nosniff and an ETag", path, resp.StatusCode, h)
		}
		req, _ := http.NewRequest("GET", url(s, path), nil)
		req.Header.Set("If-None-Match", h.Get("ETag"))
		resp, err = c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotModified {
			t.Errorf("GET %s with its ETag: %d, want 304", path, resp.StatusCode)
		}
	}
	resp, err := c.Get(url(s, "/"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("page Content-Type %q", ct)
	}
}

func at(e admin.Event, t time.Time) admin.Event {
	e.Time = t
	return e
}
