package transport

// PushSegments calls f with the sequence number and data length of every
// data segment in datagram b (KCP's wire format, with or without FEC).
func PushSegments(b []byte, f func(sn, ln uint32)) {
	for s := range kcpSegments(b) {
		if s.cmd == kcpCmdPush {
			f(s.sn, s.ln)
		}
	}
}

// PaceBurst is the most data a paced session takes in at once.
const PaceBurst = paceBurst
