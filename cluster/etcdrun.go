package cluster

import (
	"context"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// etcdOwner is the life of a type that owns an etcd client and runs on it
// (Etcd, Tenants): Close ends Run, Run closes the client as it returns,
// and Close closes it when Run never started.
type etcdOwner struct {
	client *clientv3.Client
	once   sync.Once
	die    chan struct{}

	mu      sync.Mutex
	running bool
}

func newEtcdOwner(c *clientv3.Client) etcdOwner {
	return etcdOwner{client: c, die: make(chan struct{})}
}

// end is Close: idempotent.
func (o *etcdOwner) end() {
	o.once.Do(func() {
		close(o.die)
		o.mu.Lock()
		running := o.running
		o.mu.Unlock()
		if !running {
			o.client.Close()
		}
	})
}

// start begins Run: it returns a context that ends with ctx or at Close,
// and done, which Run defers (it closes the client). ok is false when
// Close came first: Run returns at once.
func (o *etcdOwner) start(ctx context.Context) (runCtx context.Context, done func(), ok bool) {
	o.mu.Lock()
	select {
	case <-o.die:
		o.mu.Unlock()
		return nil, nil, false
	default:
	}
	o.running = true
	o.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-o.die:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, func() {
		cancel()
		o.client.Close()
	}, true
}

// bounded gives ctx a deadline d from now when it has none: every call
// to etcd has one.
func bounded(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, d)
}

// watchPrefix keeps a view of the keys under prefix current until ctx
// ends: snapshot reads them and returns the revision it read at, apply
// gets every change after it, from a watch. After a watch error (etcd
// compacted the revision or lost its leader) it reads a snapshot again,
// at most once a second. setErr gets each error, and nil once a snapshot
// was read.
func watchPrefix(ctx context.Context, c *clientv3.Client, prefix string, snapshot func(context.Context) (int64, error), apply func([]*clientv3.Event), setErr func(error)) {
	backoff := time.NewTimer(0)
	defer backoff.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-backoff.C:
		}
		backoff.Reset(time.Second)
		rev, err := snapshot(ctx)
		if err != nil {
			if ctx.Err() == nil {
				setErr(err)
			}
			continue
		}
		setErr(nil)
		// The channel is closed when ctx ends, and (RequireLeader) when
		// etcd loses its leader.
		for wr := range c.Watch(clientv3.WithRequireLeader(ctx), prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
			if err := wr.Err(); err != nil {
				if ctx.Err() == nil {
					setErr(err)
				}
				break
			}
			apply(wr.Events)
		}
	}
}
