package etcdtest

import (
	"context"
	"testing"
	"time"
)

// TestStopStart: what was written survives a Stop and Start, and etcd is
// unreachable in between.
func TestStopStart(t *testing.T) {
	e := Start(t, nil)
	c := e.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	e.Stop()
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err := c.Get(short, "k")
	cancelShort()
	if err == nil {
		t.Fatal("Get succeeded while etcd was stopped")
	}
	e.Start()
	r, err := c.Get(ctx, "k")
	if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "v" {
		t.Fatalf("after restart: %v %v", r, err)
	}
}
