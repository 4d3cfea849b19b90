package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Holding is one server's holding of one route for one client: the unit
// the registry records. A route is a public TCP port, a public UDP port or
// a domain on an entry point, named by the key the server's route table
// uses ("port:2222", "udp:53", "http:www.example.com",
// "https:*.example.com").
type Holding struct {
	Key    string `json:"key"`
	Shared bool   `json:"shared"`
	// Client is the client's configured name: its group, cluster-wide.
	// A client's sessions on different servers serve its routes together.
	Client string `json:"client"`
	// Server is the holding server's Config.ID.
	Server string `json:"server"`
}

// Member is a live server of the cluster.
type Member struct {
	ID string `json:"id"`
	// PeerAddress is where the other servers reach its peer listener.
	PeerAddress string `json:"peer_address"`
}

// ErrUnavailable is wrapped by the errors of registry operations that
// could not reach the store: the claim is refused for now (a temporary
// reason), and may succeed later.
var ErrUnavailable = errors.New("cluster registry unavailable")

// ConflictError refuses a claim: the route belongs to another client, or
// its holdings and the claim disagree on sharing.
type ConflictError struct {
	Key string
	// Holder is one existing holding of Key. Its Server is empty when the
	// route is only reserved for its client's return (grace).
	Holder Holding
	// Sharing: the conflict is over sharing (one shared, the other not),
	// not over the owner.
	Sharing bool
}

func (e *ConflictError) Error() string {
	where := "server " + e.Holder.Server
	if e.Holder.Server == "" {
		where = "reserved for its return"
	}
	if e.Sharing {
		return fmt.Sprintf("%s: shared=%v in the cluster (client %q, %s)", e.Key, e.Holder.Shared, e.Holder.Client, where)
	}
	return fmt.Sprintf("%s: held by client %q (%s)", e.Key, e.Holder.Client, where)
}

// Registry is the cluster's shared record of its members and of which
// server holds which route for which client, as one server sees it. The
// etcd implementation keeps it in etcd; clustertest.Store is its
// in-memory twin. Every method is safe for concurrent use.
//
// Claim records that this server holds h.Key for h.Client; h.Server must
// be this server's ID. It is atomic cluster-wide: it fails with a
// *ConflictError when the key belongs to another client (held by any
// server, or reserved for its client's return), and when the claim and
// the key's holdings disagree on sharing; several clients may hold a key
// only when all of them say shared. Of two conflicting claims made at
// once, on any servers, exactly one succeeds. Claiming a holding this
// server has already succeeds and changes nothing; it ends a reservation
// of the key for the same client. When the store cannot be reached before
// ctx ends, the error wraps ErrUnavailable and nothing is recorded. Once
// Claim returns nil the holding is in this server's view (Holders), and in
// the others' once their watches deliver it.
//
// Release removes this server's holding h. When it was the key's last
// holding in the cluster and grace > 0, the key stays reserved to
// h.Client for grace: other clients' claims are refused meanwhile, and
// h.Client's claim on any server takes the key back. Releasing a holding
// this server does not have is not an error. Errors wrap ErrUnavailable
// as for Claim; the holding still goes when this server's lease expires.
//
// A member that leaves without releasing (its process died; its lease
// expired) releases its holdings as Release does, with the grace given to
// the registry when it was made: the grace wins over the lease.
//
// Holders returns the key's holdings in the cluster, this server's
// included, from the in-memory view: it never waits on the store.
// Holdings of servers that are no longer members are not returned.
// Routes returns every holding in the view, sorted by key, then server,
// then client. Members returns the live members, this one included once
// registered, sorted by ID. Changed returns a channel that is closed at
// the next change of the view (holdings, members or Err); call it again
// for the change after that.
//
// Err is nil while the store is reachable and the view current; otherwise
// it says why (for /readyz) and the view is the last one known.
//
// Run registers this server as a member under a lease, keeps the lease
// alive and the view current until ctx ends or Close is called; then it
// removes the member, releasing its holdings as a member that leaves does
// (bounded by a short timeout), and returns with all its goroutines ended.
// Claim and Release before Run has registered fail with ErrUnavailable. Losing the store is not an error
// of Run: Err reports it, and when the store is back Run registers again,
// with this server's holdings. Run returns an error only when it cannot
// start (bad endpoints or TLS files), or when another live member already
// uses this server's ID. Close ends Run; it is idempotent.
type Registry interface {
	Claim(ctx context.Context, h Holding) error
	Release(ctx context.Context, h Holding, grace time.Duration) error
	Holders(key string) []Holding
	Routes() []Holding
	Members() []Member
	Changed() <-chan struct{}
	Err() error
	Run(ctx context.Context) error
	Close() error
}
