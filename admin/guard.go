package admin

import (
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/warren-tunnel/warren/internal/quote"
)

// The admin API and web pages. A browser on the admin's machine can reach
// a loopback listener, and a page from anywhere can make it send requests
// there; these rules keep such a page from reading the API or acting on
// it. They hold together, here and nowhere else:
//
//   - Host: a listener without a token (only allowed on loopback) answers
//     only requests whose Host is "localhost" or a loopback address, with
//     or without a port. A page of attacker.example whose name the
//     attacker re-points at 127.0.0.1 (DNS rebinding) is same-origin with
//     the API as far as the browser knows, but still sends
//     "Host: attacker.example". With a token, the token is the guard: the
//     listener may be reached by any name.
//   - Origin: a request that carries an Origin whose host and port differ
//     from its own Host is refused: a page served by the listener itself,
//     also through "ssh -L", is same-origin; any other sent it.
//   - State-changing requests (POST) must be ones a browser does not send
//     cross-site without a CORS preflight, which this API never approves:
//     a JSON Content-Type, an Authorization header, or an X-Warren header.
//     A "simple" POST (text/plain, a form) from a page is refused before
//     it acts. With a token every POST needs Authorization anyway.

// guardHeader is the custom header that marks a POST as not simple, for
// callers that send no body: curl -X POST -H 'X-Warren: 1' ...
const guardHeader = "X-Warren"

// guard applies the rules above before next.
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if msg := s.refusal(r); msg != "" {
			s.log.Debug("admin API: request refused", "remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path, "reason", msg)
			text(w, http.StatusForbidden, "forbidden: "+msg)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// refusal returns why r breaks a rule, or "".
func (s *Server) refusal(r *http.Request) string {
	if s.cfg.Token == "" && !loopbackHost(r.Host) {
		return "Host " + quote.Short(r.Host) + " is not localhost or a loopback address (this listener has no token; reach it as 127.0.0.1 or localhost)"
	}
	if o := r.Header.Get("Origin"); o != "" && !sameOrigin(o, r.Host) {
		return "Origin " + quote.Short(o) + " is not this API's own: cross-site requests are refused"
	}
	// With a token, authenticate asks every POST for Authorization, which
	// is not simple; its 401 says more than a 403 would.
	if s.cfg.Token == "" && r.Method != http.MethodGet && r.Method != http.MethodHead && !notSimple(r) {
		return "a " + r.Method + " must have Content-Type: application/json, an Authorization header or an " + guardHeader + " header (so that no web page can send it without a CORS preflight)"
	}
	return ""
}

// loopbackHost reports whether a Host header names this machine over
// loopback: localhost or a loopback address, with or without a port.
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return host != "" && IsLoopback(host)
}

// sameOrigin reports whether origin (scheme://host[:port]) has the host and
// port of the Host header host, which has the admin API's scheme, http.
func sameOrigin(origin, host string) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return false // "null", a file: page, garbage
	}
	return hostPort(u.Host, u.Scheme) == hostPort(host, "http")
}

// hostPort writes host[:port] as "host:port", the port defaulting to the
// scheme's and the host lower-cased.
func hostPort(hp, scheme string) string {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		host, port = strings.Trim(hp, "[]"), ""
	}
	if port == "" {
		port = "80"
		if scheme == "https" {
			port = "443"
		}
	}
	return net.JoinHostPort(strings.ToLower(host), port)
}

// notSimple reports whether r is a request a browser preflights.
func notSimple(r *http.Request) bool {
	if r.Header.Get("Authorization") != "" || r.Header.Get(guardHeader) != "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && mt == "application/json"
}
