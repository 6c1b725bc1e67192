package httpapi

// The live dashboard: one HTML page, one stylesheet and one script,
// embedded in the binary (no build step, no framework, no CDN: a gateway
// is often offline). The page reads the same JSON API as everyone else;
// the server side is only static file serving.

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"time"
)

//go:embed web
var webFS embed.FS

// asset is one embedded file, ready to serve.
type asset struct {
	name        string
	contentType string
	etag        string // strong: a hash of the content
	body        []byte
}

// dashboardContentTypes maps the extensions the dashboard uses; a file with
// another extension in web/ is a build mistake (see loadAssets).
var dashboardContentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".svg":  "image/svg+xml",
}

// dashboardCSP allows only the gateway's own scripts, styles and API: no
// inline script, no third-party origin, no framing (clickjacking).
const dashboardCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"

// dashboardAssets is loaded once at start: the files never change while
// the binary runs, so their hashes are computed once.
var dashboardAssets = loadAssets()

func loadAssets() map[string]*asset {
	out := map[string]*asset{}
	err := fs.WalkDir(webFS, "web", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := webFS.ReadFile(p)
		if err != nil {
			return err
		}
		ct, ok := dashboardContentTypes[path.Ext(p)]
		if !ok {
			panic("BUG: dashboard asset " + p + " has no known content type")
		}
		sum := sha256.Sum256(b)
		name := p[len("web/"):]
		out[name] = &asset{name: name, contentType: ct, etag: `"` + hex.EncodeToString(sum[:12]) + `"`, body: b}
		return nil
	})
	if err != nil {
		panic("BUG: read embedded dashboard: " + err.Error())
	}
	if out["index.html"] == nil {
		panic("BUG: embedded dashboard lacks index.html")
	}
	return out
}

// registerDashboard serves the page at exactly "/" and its files under
// /assets/; every other unknown path stays 404.
func (a *API) registerDashboard(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		serveAsset(w, r, dashboardAssets["index.html"])
	})
	mux.HandleFunc("GET /assets/{name}", func(w http.ResponseWriter, r *http.Request) {
		as, ok := dashboardAssets[r.PathValue("name")]
		if !ok || as.name == "index.html" {
			http.NotFound(w, r)
			return
		}
		serveAsset(w, r, as)
	})
}

// serveAsset answers with the file, or 304 when the client's copy (its
// If-None-Match) is current. Cache-Control no-cache makes browsers
// revalidate every load: after an upgrade the page and its script never
// mismatch, and an unchanged file costs a 304 of a few bytes.
func serveAsset(w http.ResponseWriter, r *http.Request, as *asset) {
	h := w.Header()
	h.Set("Content-Type", as.contentType)
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", as.etag)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	if as.name == "index.html" {
		h.Set("Content-Security-Policy", dashboardCSP)
		h.Set("X-Frame-Options", "DENY")
	}
	// ServeContent handles If-None-Match against the ETag set above, HEAD
	// and ranges.
	http.ServeContent(w, r, as.name, time.Time{}, bytes.NewReader(as.body))
}
