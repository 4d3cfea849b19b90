package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/warren-tunnel/warren/internal/quote"
)

// Client talks to a daemon's admin API: the warren status and health
// commands use it, and so can tests and scripts. The zero value needs
// Addr. Each call has its own connection (no keep-alive), bounded by its
// context.
type Client struct {
	// Addr is the API's host:port. A wildcard host, as in a listen
	// address (empty, 0.0.0.0, ::), means this machine over loopback.
	Addr string
	// Token is sent as "Authorization: Bearer TOKEN" when set.
	Token string
}

// maxBody caps what the client reads of an answer.
const maxBody = 64 << 20

// APIError is an answer of the API other than 200 OK: its status and
// body. 401 means a missing or wrong token; /readyz answers 503 with the
// reason the daemon is not ready.
type APIError struct {
	Addr       string
	Status     int    // 401, 503, ...
	StatusText string // "503 Service Unavailable"
	Body       string // trimmed
}

func (e *APIError) Error() string {
	return fmt.Sprintf("admin API at %s: %s: %s", e.Addr, e.StatusText, e.Body)
}

// DialAddress turns a listen address into one to dial: a wildcard host
// (empty, 0.0.0.0, ::) means this machine, reached over loopback. It
// fails on an address that is not host:port with a port from 1 to 65535.
func DialAddress(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("admin address %s: want host:port", quote.Short(addr))
	}
	if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
		return "", fmt.Errorf("admin address %s: want a port from 1 to 65535", quote.Short(addr))
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port), nil
}

// Status fetches the daemon's status, and the JSON as it came.
func (c Client) Status(ctx context.Context) (Status, []byte, error) {
	body, err := c.Get(ctx, "/api/v1/status")
	if err != nil {
		return Status{}, nil, err
	}
	var st Status
	if err := json.Unmarshal(body, &st); err != nil {
		return Status{}, body, fmt.Errorf("admin API at %s: bad status JSON: %w", c.Addr, err)
	}
	return st, body, nil
}

// Ready returns nil when the daemon says it is ready (GET /readyz), an
// *APIError with status 503 and the reason when it says it is not.
func (c Client) Ready(ctx context.Context) error {
	_, err := c.Get(ctx, "/readyz")
	return err
}

// Live returns nil when the daemon's process answers (GET /healthz,
// which needs no token).
func (c Client) Live(ctx context.Context) error {
	_, err := c.Get(ctx, "/healthz")
	return err
}

// Reload makes the daemon reload its config file (POST /api/v1/reload).
func (c Client) Reload(ctx context.Context) error {
	_, err := c.do(ctx, http.MethodPost, "/api/v1/reload")
	return err
}

// Disconnect makes a server close every session of the client named
// name (POST /api/v1/clients/{name}/disconnect).
func (c Client) Disconnect(ctx context.Context, name string) error {
	_, err := c.do(ctx, http.MethodPost, "/api/v1/clients/"+url.PathEscape(name)+"/disconnect")
	return err
}

// Get fetches path and returns the body of a 200 OK; any other answer is
// an *APIError.
func (c Client) Get(ctx context.Context, path string) ([]byte, error) {
	return c.do(ctx, http.MethodGet, path)
}

func (c Client) do(ctx context.Context, method, path string) ([]byte, error) {
	addr, err := DialAddress(c.Addr)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, nil)
	if err != nil {
		return nil, err
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("admin API at %s: no answer in time", addr)
		}
		if ue := (*url.Error)(nil); errors.As(err, &ue) {
			err = ue.Err // without the URL, which names addr again
		}
		return nil, fmt.Errorf("admin API at %s: %w", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, fmt.Errorf("admin API at %s: %w", addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &APIError{Addr: addr, Status: resp.StatusCode, StatusText: resp.Status, Body: strings.TrimSpace(string(body))}
	}
	return body, nil
}
