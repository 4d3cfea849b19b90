package transport

import (
	"crypto/tls"
	"fmt"
	"log/slog"

	"github.com/warren-tunnel/warren/internal/quote"
)

// Config is what New needs to build a transport.
type Config struct {
	// KCP tunes the "kcp" transport; the "tcp" transport ignores it.
	KCP KCPConfig
	// TCP tunes the "tcp" transport; the "kcp" transport ignores it.
	TCP TCPConfig
	// TLS secures connections. nil means plaintext, which callers allow
	// only when the user asked for it explicitly.
	TLS *tls.Config
	// Log gets what the transport has to say: which TCP congestion
	// control "auto" chose, and the KCP rate controllers' debug lines.
	// nil discards it.
	Log *slog.Logger
}

// KCPConfig is the [server.kcp] / [client.kcp] table.
//
// Mode, the windows and the MTU are per side and need not match the peer's;
// DataShards and ParityShards must be the same on both sides, because they
// change the packet format.
type KCPConfig struct {
	// Mode picks KCP's retransmission timing, as kcptun defines it:
	// "normal", "fast", "fast2" or "fast3" (faster reacts sooner to loss and
	// costs more packets).
	Mode string `toml:"mode"`
	// MTU is the largest UDP payload sent, in bytes.
	MTU int `toml:"mtu"`
	// SendWindow and RecvWindow are KCP's windows in packets. Together with
	// the MTU they cap one session's throughput at window*MTU per RTT.
	SendWindow int `toml:"send_window"`
	RecvWindow int `toml:"recv_window"`
	// DataShards and ParityShards enable Reed-Solomon FEC when both are
	// positive: every DataShards packets are followed by ParityShards
	// recovery packets.
	DataShards   int `toml:"data_shards"`
	ParityShards int `toml:"parity_shards"`
	// DSCP marks outgoing packets (0-63); 0 leaves the default.
	DSCP int `toml:"dscp"`
	// ReadBuffer and WriteBuffer size the UDP socket's kernel buffers in
	// bytes; 0 keeps the system default. The kernel caps them at
	// net.core.rmem_max / wmem_max.
	ReadBuffer  int `toml:"read_buffer"`
	WriteBuffer int `toml:"write_buffer"`
	// RateMbit paces the data a session sends. RateAuto ("auto", the
	// default) lets a controller find the path's rate as it goes (a
	// delivery-rate estimate in the spirit of BBR: ratectl.go, bbr.go;
	// 1.14-1.49 times unpaced on the emulated 50 ms / 100 Mbit/s link,
	// burst loss included: docs/benchmarks.md, "KCP pacing"). A number
	// paces the data, with its FEC parity, at that many Mbit/s; 0 sends
	// unpaced. KCP has no congestion control of its own: unpaced, it
	// sends its whole window at once and overflows the queue of a slower
	// bottleneck, which then drops a share of every window. Resends and
	// ACKs are never paced (they go out as soon as KCP decides to send
	// them). It is per session: a client with connections = N sends up to
	// N times a fixed rate.
	RateMbit Rate `toml:"rate_mbit"`
}

// KCP modes and the KCP nodelay parameters they stand for, as kcptun
// defines them: nodelay, interval (ms), fast-resend trigger, no congestion
// control.
var kcpModes = map[string][4]int{
	"normal": {0, 40, 2, 1},
	"fast":   {0, 30, 2, 1},
	"fast2":  {1, 20, 2, 1},
	"fast3":  {1, 10, 2, 1},
}

// Limits on KCP settings.
const (
	minMTU    = 576  // the smallest datagram every IPv4 path carries
	maxMTU    = 1500 // kcp-go's own limit
	maxWindow = 65535
	maxShards = 255
	maxDSCP   = 63
	// maxRateMbit keeps the rate in bytes a second within kcp-go's uint32.
	maxRateMbit = 34000
)

// DefaultConfig returns a plaintext configuration with default KCP tuning;
// callers set TLS.
func DefaultConfig() Config {
	return Config{KCP: DefaultKCPConfig(), TCP: DefaultTCPConfig()}
}

// DefaultKCPConfig returns KCP settings sized so that one session can carry
// well over 100 Mbit/s at 100 ms RTT: 2048 packets of 1350 bytes in flight
// is about 220 Mbit/s at that RTT (frp's client window of 128 caps it near
// 13 Mbit/s).
func DefaultKCPConfig() KCPConfig {
	return KCPConfig{
		Mode:        "fast2",
		MTU:         1350,
		SendWindow:  2048,
		RecvWindow:  2048,
		ReadBuffer:  4 << 20,
		WriteBuffer: 4 << 20,
		RateMbit:    RateAuto,
	}
}

// Validate reports the first invalid setting, naming its key.
func (c Config) Validate() error {
	if err := c.KCP.Validate(); err != nil {
		return fmt.Errorf("kcp.%w", err)
	}
	if err := c.TCP.Validate(); err != nil {
		return fmt.Errorf("tcp.%w", err)
	}
	return nil
}

// Validate reports the first invalid setting, naming its key.
func (c KCPConfig) Validate() error {
	if _, ok := kcpModes[c.Mode]; !ok {
		return fmt.Errorf(`mode: %s is not one of "normal", "fast", "fast2", "fast3"`, quote.Short(c.Mode))
	}
	if c.MTU < minMTU || c.MTU > maxMTU {
		return fmt.Errorf("mtu: %d is out of range %d-%d", c.MTU, minMTU, maxMTU)
	}
	if c.SendWindow < 1 || c.SendWindow > maxWindow {
		return fmt.Errorf("send_window: %d is out of range 1-%d", c.SendWindow, maxWindow)
	}
	if c.RecvWindow < 1 || c.RecvWindow > maxWindow {
		return fmt.Errorf("recv_window: %d is out of range 1-%d", c.RecvWindow, maxWindow)
	}
	if c.DataShards < 0 || c.DataShards > maxShards {
		return fmt.Errorf("data_shards: %d is out of range 0-%d", c.DataShards, maxShards)
	}
	if c.ParityShards < 0 || c.ParityShards > maxShards {
		return fmt.Errorf("parity_shards: %d is out of range 0-%d", c.ParityShards, maxShards)
	}
	if (c.DataShards == 0) != (c.ParityShards == 0) {
		return fmt.Errorf("data_shards and parity_shards: FEC needs both positive (or both 0 to turn it off), got %d and %d", c.DataShards, c.ParityShards)
	}
	if c.DSCP < 0 || c.DSCP > maxDSCP {
		return fmt.Errorf("dscp: %d is out of range 0-%d", c.DSCP, maxDSCP)
	}
	if c.ReadBuffer < 0 {
		return fmt.Errorf("read_buffer: %d is negative", c.ReadBuffer)
	}
	if c.WriteBuffer < 0 {
		return fmt.Errorf("write_buffer: %d is negative", c.WriteBuffer)
	}
	if c.RateMbit < RateAuto || c.RateMbit > maxRateMbit {
		return fmt.Errorf("rate_mbit: %d is out of range 0-%d, or \"auto\" (0 sends unpaced)", c.RateMbit, maxRateMbit)
	}
	return nil
}
