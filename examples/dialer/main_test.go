package main

import "testing"

// TestRun: the example fetches its page through the client.
func TestRun(t *testing.T) {
	if err := run(); err != nil {
		t.Fatal(err)
	}
}
