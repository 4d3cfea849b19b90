package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/xtaci/kcp-go/v5"
)

// kcpMetric is one field of kcp-go's Snmp as a metric.
type kcpMetric struct {
	desc  *prometheus.Desc
	typ   prometheus.ValueType
	value func(*kcp.Snmp) uint64
}

func kcpCounter(name, help string, value func(*kcp.Snmp) uint64) kcpMetric {
	return kcpMetric{
		desc:  prometheus.NewDesc("warren_kcp_"+name, help+" (process-wide: all KCP sessions).", nil, nil),
		typ:   prometheus.CounterValue,
		value: value,
	}
}

// kcpMetrics are the counters of kcp-go that say how a link is doing.
// kcp-go counts into one global, kcp.DefaultSnmp, for all its sessions:
// there is no per-session counter to read, so these are process-wide.
var kcpMetrics = []kcpMetric{
	kcpCounter("sent_segments_total", "KCP segments sent, retransmissions included",
		func(s *kcp.Snmp) uint64 { return s.OutSegs }),
	kcpCounter("received_segments_total", "KCP segments received",
		func(s *kcp.Snmp) uint64 { return s.InSegs }),
	kcpCounter("retransmitted_segments_total", "KCP segments sent again, for any reason",
		func(s *kcp.Snmp) uint64 { return s.RetransSegs }),
	kcpCounter("fast_retransmitted_segments_total", "KCP segments sent again because later ones were acknowledged",
		func(s *kcp.Snmp) uint64 { return s.FastRetransSegs }),
	kcpCounter("early_retransmitted_segments_total", "KCP segments sent again early, with nothing more to send",
		func(s *kcp.Snmp) uint64 { return s.EarlyRetransSegs }),
	kcpCounter("lost_segments_total", "KCP segments sent again because their retransmission timeout expired (inferred lost)",
		func(s *kcp.Snmp) uint64 { return s.LostSegs }),
	kcpCounter("duplicate_segments_total", "KCP segments received more than once",
		func(s *kcp.Snmp) uint64 { return s.RepeatSegs }),
	kcpCounter("fec_recovered_packets_total", "Packets rebuilt from FEC parity shards",
		func(s *kcp.Snmp) uint64 { return s.FECRecovered }),
	kcpCounter("fec_errors_total", "FEC recoveries that produced a bad packet",
		func(s *kcp.Snmp) uint64 { return s.FECErrs }),
	kcpCounter("fec_parity_shards_total", "FEC parity shards received",
		func(s *kcp.Snmp) uint64 { return s.FECParityShards }),
	kcpCounter("udp_sent_packets_total", "UDP packets sent by KCP",
		func(s *kcp.Snmp) uint64 { return s.OutPkts }),
	kcpCounter("udp_received_packets_total", "UDP packets received by KCP",
		func(s *kcp.Snmp) uint64 { return s.InPkts }),
	kcpCounter("udp_sent_bytes_total", "UDP payload bytes sent by KCP, headers, FEC and retransmissions included",
		func(s *kcp.Snmp) uint64 { return s.OutBytes }),
	kcpCounter("udp_received_bytes_total", "UDP payload bytes received by KCP",
		func(s *kcp.Snmp) uint64 { return s.InBytes }),
	kcpCounter("udp_read_errors_total", "Errors reading the UDP socket",
		func(s *kcp.Snmp) uint64 { return s.InErrs }),
	kcpCounter("checksum_errors_total", "Packets dropped for a bad CRC32",
		func(s *kcp.Snmp) uint64 { return s.InCsumErrors }),
	kcpCounter("input_errors_total", "Packets KCP could not parse",
		func(s *kcp.Snmp) uint64 { return s.KCPInErrors }),
	kcpCounter("active_opens_total", "KCP sessions dialed",
		func(s *kcp.Snmp) uint64 { return s.ActiveOpens }),
	kcpCounter("passive_opens_total", "KCP sessions accepted",
		func(s *kcp.Snmp) uint64 { return s.PassiveOpens }),
	{
		desc: prometheus.NewDesc("warren_kcp_sessions",
			"KCP sessions established now (process-wide: all KCP sessions).", nil, nil),
		typ:   prometheus.GaugeValue,
		value: func(s *kcp.Snmp) uint64 { return s.CurrEstab },
	},
}

// kcpCollector reads kcp.DefaultSnmp at each scrape. Several Registries in
// one process (tests) all report the same process-wide values.
type kcpCollector struct{}

func (kcpCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range kcpMetrics {
		ch <- m.desc
	}
}

func (kcpCollector) Collect(ch chan<- prometheus.Metric) {
	snmp := kcp.DefaultSnmp.Copy() // atomic field by field
	for _, m := range kcpMetrics {
		ch <- prometheus.MustNewConstMetric(m.desc, m.typ, float64(m.value(snmp)))
	}
}
