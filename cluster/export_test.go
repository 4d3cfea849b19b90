package cluster

// Abandon ends r's Run as a killed process would end: nothing is released
// or revoked; its leases expire in etcd.
func Abandon(r Registry) { r.(*Etcd).abandon() }

// HoldKey is the etcd key of h's holding under prefix.
func HoldKey(prefix string, h Holding) string { return (&Etcd{prefix: prefix}).holdKey(h) }
