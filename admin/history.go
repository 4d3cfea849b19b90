package admin

import (
	"cmp"
	"slices"
	"sync"
	"time"
)

// History is what GET /api/v1/history returns: the daemon's recent traffic
// and round trips, one sample a second for the last ten minutes, for the
// dashboard's charts.
type History struct {
	// Started identifies this run of the daemon's history: a page that
	// sees it change (the daemon restarted) drops what it had.
	Started time.Time `json:"started"`
	// Interval is the time between samples; Kept how many are kept.
	Interval Duration `json:"interval_seconds"`
	Kept     int      `json:"kept"`
	// Samples are oldest first; with ?after=SEQ only those after SEQ.
	Samples []Sample `json:"samples"`
}

// Sample is the traffic and round trips of one interval.
type Sample struct {
	// Seq numbers the samples of a run from 1.
	Seq uint64 `json:"seq"`
	// Time is when the interval ended.
	Time time.Time `json:"time"`
	// Traffic lists the services that relayed bytes in the interval, in
	// bytes per second. A service absent relayed none.
	Traffic []Rate `json:"traffic"`
	// RTT lists the sessions' last heartbeat round trips.
	RTT []RTT `json:"rtt"`
}

// Rate is one service's throughput in a sample. A connection's bytes are
// counted when it ends (as the metrics count them), so a long transfer
// shows in the second it finishes.
type Rate struct {
	// Client is the client's name (server: the client serving it;
	// client: the name the server knows it by). Service is the
	// service's name; OtherService counts the services beyond the cap.
	Client  string `json:"client,omitempty"`
	Service string `json:"service"`
	// In is bytes per second from the public peers, Out to them.
	In  int64 `json:"in"`
	Out int64 `json:"out"`
}

// RTT is a session's round trip in a sample.
type RTT struct {
	Client  string   `json:"client"`
	Session string   `json:"session"`
	RTT     Duration `json:"rtt_seconds"`
}

// Bounds of the history: 600 samples of at most 64 rates and 64 round
// trips each, about 3.4 MB at most (600 × 64 × (48 + 40) bytes; the
// names are shared with the counters), a few kB for a daemon with a few
// busy services.
const (
	sampleInterval = time.Second
	samplesKept    = 600
	// maxRates: the busiest services of a sample are listed, the rest
	// summed under OtherService.
	maxRates = 64
	// maxRTTs: round trips of the first sessions (by client name) only.
	maxRTTs = 64
	// maxSeries caps the distinct client/service pairs counted at once;
	// beyond it bytes count under OtherService.
	maxSeries = 4096
)

// OtherService is the service name that sums services beyond the caps.
// Valid service names start with a letter or digit, so it never clashes.
const OtherService = "_other"

type seriesKey struct{ client, service string }

// counter is one service's bytes since its series began, and at the last
// sample.
type counter struct {
	in, out         int64
	lastIn, lastOut int64
	idle            int // samples without a byte
}

// history counts bytes per service as the daemon reports them and turns
// them into a ring of samples. Its own lock guards it all.
type history struct {
	started time.Time

	mu     sync.Mutex
	series map[seriesKey]*counter
	last   time.Time // of the last sample
	seq    uint64
	ring   []Sample // oldest first once full: ring[next:] then ring[:next]
	next   int
}

func newHistory(now time.Time) *history {
	return &history{started: now, last: now, series: make(map[seriesKey]*counter)}
}

// add counts bytes relayed for a service.
func (h *history) add(client, service string, in, out int64) {
	if in <= 0 && out <= 0 {
		return
	}
	k := seriesKey{client, service}
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.series[k]
	if c == nil {
		if len(h.series) >= maxSeries {
			k = seriesKey{"", OtherService}
			c = h.series[k]
		}
		if c == nil {
			c = new(counter)
			h.series[k] = c
		}
	}
	c.in += max(in, 0)
	c.out += max(out, 0)
}

// sample closes the interval ending at now with the given round trips.
// Series idle for the whole ring are forgotten.
func (h *history) sample(now time.Time, rtts []RTT) {
	h.mu.Lock()
	defer h.mu.Unlock()
	secs := now.Sub(h.last).Seconds()
	if secs <= 0 {
		secs = sampleInterval.Seconds()
	}
	h.last = now
	var rates []Rate
	for k, c := range h.series {
		din, dout := c.in-c.lastIn, c.out-c.lastOut
		c.lastIn, c.lastOut = c.in, c.out
		if din == 0 && dout == 0 {
			if c.idle++; c.idle > samplesKept {
				delete(h.series, k)
			}
			continue
		}
		c.idle = 0
		rates = append(rates, Rate{Client: k.client, Service: k.service, In: perSecond(din, secs), Out: perSecond(dout, secs)})
	}
	slices.SortFunc(rates, func(a, b Rate) int {
		return cmp.Or(cmp.Compare(b.In+b.Out, a.In+a.Out), cmp.Compare(a.Client, b.Client), cmp.Compare(a.Service, b.Service))
	})
	if len(rates) > maxRates {
		other := Rate{Service: OtherService}
		for _, r := range rates[maxRates-1:] {
			other.In += r.In
			other.Out += r.Out
		}
		rates = append(rates[:maxRates-1], other)
	}
	slices.SortFunc(rtts, func(a, b RTT) int { return cmp.Or(cmp.Compare(a.Client, b.Client), cmp.Compare(a.Session, b.Session)) })
	if len(rtts) > maxRTTs {
		rtts = rtts[:maxRTTs]
	}
	h.seq++
	s := Sample{Seq: h.seq, Time: now, Traffic: rates, RTT: rtts}
	if s.Traffic == nil {
		s.Traffic = []Rate{}
	}
	if s.RTT == nil {
		s.RTT = []RTT{}
	}
	if len(h.ring) < samplesKept {
		h.ring = append(h.ring, s)
		return
	}
	h.ring[h.next] = s
	h.next = (h.next + 1) % samplesKept
}

func perSecond(n int64, secs float64) int64 { return int64(float64(n)/secs + 0.5) }

// since returns the history with the samples after seq (0: all).
func (h *history) since(seq uint64) History {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := History{Started: h.started, Interval: Duration(sampleInterval), Kept: samplesKept, Samples: []Sample{}}
	for _, part := range [][]Sample{h.ring[h.next:], h.ring[:h.next]} {
		for _, s := range part {
			if s.Seq > seq {
				out.Samples = append(out.Samples, s)
			}
		}
	}
	return out
}
