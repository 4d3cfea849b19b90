// Package cluster joins warren servers into one cluster: every server
// accepts public connections for every route, and a server that does not
// hold a route's client session forwards the connection one hop, over a
// peer link, to a server that does (docs/cluster.md).
//
// Two parts meet at this package's seams:
//
//   - the Registry (registry.go): who is a member and which server holds
//     which route for which client, shared by every server through etcd
//     (leases for liveness, transactions for claims, a watch for the
//     view); clustertest.Store is its in-memory twin;
//   - peer links: one authenticated TLS session per pair of servers, on
//     which forwarded public connections travel.
package cluster
