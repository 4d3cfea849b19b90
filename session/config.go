package session

import (
	"fmt"
	"time"

	"github.com/warren-tunnel/warren/clock"
	"github.com/xtaci/smux"
)

// Config tunes the multiplexer and the control protocol of a session.
type Config struct {
	Mux Mux
	// HandshakeTimeout bounds everything before authentication: the TLS
	// handshake, the hello, the proof and the answer.
	HandshakeTimeout time.Duration
	// HeartbeatInterval is how often each side pings the other on the
	// control stream; HeartbeatMisses unanswered pings in a row end the
	// session.
	HeartbeatInterval time.Duration
	HeartbeatMisses   int
	// MaxControlFrame caps a control frame's payload, in bytes.
	MaxControlFrame int
	// StallTimeout ends a relay that moved nothing in either direction for
	// this long while it had data to write (its peer kept data queued);
	// 0 never does.
	StallTimeout time.Duration
	// Clock drives the session's timers: heartbeats, the Goodbye wait and
	// the ledger's checks (nil: the system clock). Deadlines set on
	// connections stay on real time.
	Clock clock.Clock
}

// Mux is the [server.mux] / [client.mux] table: smux's windows and frame
// size. The two sides need not agree.
type Mux struct {
	// StreamWindow is how many bytes one stream may have in flight unread
	// before its sender waits (smux v2 per-stream window). One stream's
	// throughput is capped at StreamWindow per RTT, and on a lossy path
	// the RTT includes the wait for resends: 4 MiB carries about
	// 330 Mbit/s at 100 ms, and 100 Mbit/s at 50 ms with 5% loss (2 MiB
	// carried 55 there).
	StreamWindow int `toml:"stream_window"`
	// SessionWindow caps the bytes buffered unread across all streams of a
	// session. When it fills, the whole session waits, so it is many times
	// StreamWindow: that many streams with stuck readers (16 by default)
	// are needed to stall the others. It is a cap, not an allocation.
	SessionWindow int `toml:"session_window"`
	// FrameSize is the largest smux frame, and so the largest relay chunk.
	// The default, the largest smux allows, is four TLS records, written
	// in one system call (transport.Batcher): each frame costs smux two
	// goroutine hand-offs and the relay a read and a write, so fewer,
	// larger frames cost less CPU per byte (issue 19, docs/benchmarks.md).
	FrameSize int `toml:"frame_size"`
}

// DefaultMux returns the multiplexer defaults.
func DefaultMux() Mux {
	return Mux{
		StreamWindow:  4 << 20,
		SessionWindow: 64 << 20,
		FrameSize:     maxFrameSize,
	}
}

// DefaultConfig returns the defaults documented in config.example.toml.
func DefaultConfig() Config {
	return Config{
		Mux:               DefaultMux(),
		HandshakeTimeout:  10 * time.Second,
		HeartbeatInterval: 5 * time.Second,
		HeartbeatMisses:   3,
		MaxControlFrame:   64 << 10,
		StallTimeout:      2 * time.Minute,
	}
}

// Limits of the settings.
const (
	minFrameSize       = 1 << 10
	maxFrameSize       = 65535 // smux's frame length is 16 bits
	minControlFrame    = 1 << 10
	maxControlFrame    = 16 << 20
	minHeartbeat       = 10 * time.Millisecond
	minStallTimeout    = 100 * time.Millisecond
	maxSessionWindow   = 1<<31 - 1
	maxHeartbeatMisses = 1000
)

// FieldError names the setting that failed validation, by its key in the
// session's own terms ("mux.frame_size", "heartbeat_interval", ...), so
// that callers can place it in their config file's layout.
type FieldError struct {
	Key string
	Err error
}

func (e *FieldError) Error() string { return e.Key + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

func fieldErr(key, format string, args ...any) error {
	return &FieldError{Key: key, Err: fmt.Errorf(format, args...)}
}

// Validate reports the first invalid setting as a *FieldError.
func (c Mux) Validate() error {
	switch {
	case c.FrameSize < minFrameSize || c.FrameSize > maxFrameSize:
		return fieldErr("mux.frame_size", "%d is out of range %d-%d", c.FrameSize, minFrameSize, maxFrameSize)
	case c.StreamWindow < c.FrameSize:
		return fieldErr("mux.stream_window", "%d is smaller than frame_size %d", c.StreamWindow, c.FrameSize)
	case c.SessionWindow < c.StreamWindow || c.SessionWindow > maxSessionWindow:
		return fieldErr("mux.session_window", "%d is out of range stream_window (%d) to %d", c.SessionWindow, c.StreamWindow, maxSessionWindow)
	}
	return nil
}

// Validate reports the first invalid setting as a *FieldError.
func (c Config) Validate() error {
	if err := c.Mux.Validate(); err != nil {
		return err
	}
	switch {
	case c.HandshakeTimeout <= 0:
		return fieldErr("handshake_timeout", "must be positive")
	case c.HeartbeatInterval < minHeartbeat:
		return fieldErr("heartbeat_interval", `%v is shorter than %v (durations are strings such as "5s")`, c.HeartbeatInterval, minHeartbeat)
	case c.HeartbeatMisses < 1 || c.HeartbeatMisses > maxHeartbeatMisses:
		return fieldErr("heartbeat_misses", "%d is out of range 1-%d", c.HeartbeatMisses, maxHeartbeatMisses)
	case c.MaxControlFrame < minControlFrame || c.MaxControlFrame > maxControlFrame:
		return fieldErr("max_control_frame", "%d is out of range %d-%d", c.MaxControlFrame, minControlFrame, maxControlFrame)
	case c.StallTimeout < 0 || c.StallTimeout > 0 && c.StallTimeout < minStallTimeout:
		return fieldErr("stall_timeout", `%v: want 0 (off) or at least %v (durations are strings such as "2m")`, c.StallTimeout, minStallTimeout)
	}
	return nil
}

// smux returns the multiplexer configuration. smux's own keepalive is off:
// warren's heartbeats on the control stream already detect dead peers, and
// they also measure RTT and say why a session ended.
func (c Config) smux() *smux.Config {
	return &smux.Config{
		Version:           2,
		KeepAliveDisabled: true,
		MaxFrameSize:      c.Mux.FrameSize,
		MaxReceiveBuffer:  c.Mux.SessionWindow,
		MaxStreamBuffer:   c.Mux.StreamWindow,
	}
}
