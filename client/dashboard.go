package client

import (
	"errors"
	"time"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/session"
)

// What the client tells the admin dashboard beyond its status: events as
// they happen and the bytes each service relayed (admin.Recorder).

// SetRecorder makes the client record events and traffic in rec; nil
// records none. Call it before Run.
func (c *Client) SetRecorder(rec *admin.Recorder) { c.rec = rec }

// recordEnd records how a connection attempt to server r ended: a
// session that was up (upFor > 0) went down, or the attempt failed or
// was refused.
func (c *Client) recordEnd(r *remote, upFor time.Duration, err error) {
	e := admin.Event{Kind: admin.EventConnectFailed, Remote: r.label, Reason: "ended"}
	if upFor > 0 {
		e.Kind = admin.EventSessionDown
	}
	if err != nil {
		e.Reason = err.Error()
	}
	var rej *session.RejectError
	if errors.As(err, &rej) {
		e.Code = rej.Code
	}
	c.rec.Event(e)
}
