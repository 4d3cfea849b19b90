package admin

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"mime"
	"net/http"
	"path"
	"time"
)

// The dashboard is a static page and its script and style sheet, built
// into the binary: it loads nothing from elsewhere (no CDN, no font), so
// it works on a host without internet. It holds no data; its script reads
// the JSON API (with the token the user gives it, kept in the tab's
// sessionStorage) and writes every string it shows as text, never as
// HTML. The Content-Security-Policy below would stop an injected script
// anyway: only the page's own script runs, and it may talk only to this
// listener.
//
//go:embed dashboard
var dashboardFS embed.FS

// asset is one embedded file, ready to serve.
type asset struct {
	body  []byte
	ctype string
	etag  string
}

// assets are the files of dashboardFS by name; "index.html" is the page.
var assets = loadAssets()

func loadAssets() map[string]asset {
	entries, err := dashboardFS.ReadDir("dashboard")
	if err != nil {
		panic(err) // embedded at build time: cannot fail
	}
	out := make(map[string]asset, len(entries))
	for _, e := range entries {
		b, err := dashboardFS.ReadFile("dashboard/" + e.Name())
		if err != nil {
			panic(err)
		}
		sum := sha256.Sum256(b)
		out[e.Name()] = asset{body: b, ctype: mime.TypeByExtension(path.Ext(e.Name())), etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
	}
	return out
}

// dashboardCSP allows the page its own script, style and API and nothing
// else; no page may frame it (its buttons act).
const dashboardCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// isStatic reports whether r asks for the page or one of its files, which
// need no token.
func isStatic(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	if r.URL.Path == "/" {
		return true
	}
	dir, file := path.Split(r.URL.Path)
	_, ok := assets[file]
	return dir == "/assets/" && ok && file != "index.html"
}

func serveDashboard(w http.ResponseWriter, r *http.Request) { serveFile(w, r, "index.html") }

func serveAsset(w http.ResponseWriter, r *http.Request) {
	if f := r.PathValue("file"); f != "index.html" {
		serveFile(w, r, f)
		return
	}
	http.NotFound(w, r)
}

// serveFile answers an embedded file; revalidated on every load (cheap:
// a 304 when unchanged), so a new binary's page is never mixed with an
// old script.
func serveFile(w http.ResponseWriter, r *http.Request, name string) {
	a, ok := assets[name]
	if !ok {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", a.ctype)
	h.Set("ETag", a.etag)
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", dashboardCSP)
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(a.body))
}
