package httpapi

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func dashboardMux() *http.ServeMux {
	mux := http.NewServeMux()
	(&API{Status: &fakeStatus{}}).Register(mux)
	return mux
}

func serve(mux http.Handler, method, path string, hdr ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, req)
	return rec
}

func TestDashboardServing(t *testing.T) {
	mux := dashboardMux()
	tests := []struct {
		path, contentType, contains string
	}{
		{"/", "text/html; charset=utf-8", `<canvas id="chart" data-points="0"`},
		{"/assets/app.js", "text/javascript; charset=utf-8", "getReader()"},
		{"/assets/app.css", "text/css; charset=utf-8", "@media (max-width: 700px)"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			rec := serve(mux, "GET", tt.path)
			h := rec.Header()
			if rec.Code != 200 || h.Get("Content-Type") != tt.contentType || !strings.Contains(rec.Body.String(), tt.contains) {
				t.Fatalf("GET %s = %d %q, body has %q: %v", tt.path, rec.Code, h.Get("Content-Type"), tt.contains, strings.Contains(rec.Body.String(), tt.contains))
			}
			etag := h.Get("ETag")
			if !regexp.MustCompile(`^"[0-9a-f]{24}"$`).MatchString(etag) || h.Get("Cache-Control") != "no-cache" || h.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("caching headers: ETag %q, Cache-Control %q, nosniff %q", etag, h.Get("Cache-Control"), h.Get("X-Content-Type-Options"))
			}
			if again := serve(mux, "GET", tt.path, "If-None-Match", etag); again.Code != http.StatusNotModified || again.Body.Len() != 0 {
				t.Errorf("revalidation with the current ETag = %d (%d bytes), want 304 and no body", again.Code, again.Body.Len())
			}
			if stale := serve(mux, "GET", tt.path, "If-None-Match", `"0000"`); stale.Code != 200 {
				t.Errorf("revalidation with a stale ETag = %d, want 200", stale.Code)
			}
			if head := serve(mux, "HEAD", tt.path); head.Code != 200 || head.Body.Len() != 0 || head.Header().Get("ETag") != etag {
				t.Errorf("HEAD = %d, %d bytes, ETag %q", head.Code, head.Body.Len(), head.Header().Get("ETag"))
			}
		})
	}
	csp := serve(mux, "GET", "/").Header().Get("Content-Security-Policy")
	if !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "connect-src 'self'") || strings.Contains(csp, "unsafe-inline") {
		t.Errorf("page CSP = %q", csp)
	}
	for _, p := range []string{"/index.html", "/assets/index.html", "/assets/nope.js", "/nope", "/assets/", "/api/v1/nope"} {
		if rec := serve(mux, "GET", p); rec.Code != 404 {
			t.Errorf("GET %s = %d, want 404", p, rec.Code)
		}
	}
	if rec := serve(mux, "POST", "/"); rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST / = %d, want 405", rec.Code)
	}
}

// TestDashboardSize keeps the whole dashboard small enough for a slow
// uplink and a small device: page and assets under 200 KB.
func TestDashboardSize(t *testing.T) {
	const limit = 200_000
	total, files := 0, 0
	err := fs.WalkDir(webFS, "web", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := webFS.ReadFile(p)
		total += len(b)
		files++
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("dashboard: %d files, %d bytes", files, total)
	if files < 3 || total > limit {
		t.Fatalf("dashboard is %d files, %d bytes; want the page and its assets within %d bytes", files, total, limit)
	}
}

// TestDashboardReferences checks that every asset the page names is
// embedded, that every embedded file is used, and that the page pulls
// nothing from another origin (the gateway may be offline).
func TestDashboardReferences(t *testing.T) {
	page := string(dashboardAssets["index.html"].body)
	refs := regexp.MustCompile(`(?:src|href)="([^"]+)"`).FindAllStringSubmatch(page, -1)
	used := map[string]bool{"index.html": true}
	for _, m := range refs {
		ref := m[1]
		name, ok := strings.CutPrefix(ref, "/assets/")
		if !ok {
			t.Errorf("page references %q, outside /assets/", ref)
			continue
		}
		if dashboardAssets[name] == nil {
			t.Errorf("page references %q, which is not embedded", ref)
		}
		used[name] = true
	}
	for name := range dashboardAssets {
		if !used[name] {
			t.Errorf("embedded %s is not referenced by the page", name)
		}
	}
	for name, a := range dashboardAssets {
		if regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/`).Match(a.body) {
			t.Errorf("%s refers to another origin", name)
		}
	}
}
