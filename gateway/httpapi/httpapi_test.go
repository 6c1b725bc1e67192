package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/runnel-iot/runnel/ingest"
	"github.com/runnel-iot/runnel/internal/testutil"
)

// TestRejects runs the handler against a real dead-letter log on disk.
func TestRejects(t *testing.T) {
	dl, err := ingest.OpenDeadLetters(t.TempDir(), ingest.DefaultDeadLetterConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dl.Close()
	now := time.Now()
	for i, r := range []ingest.Reject{
		{Listener: "mqtt", Source: "dev-1", Topic: "telemetry/dev-1/env", Reason: "syntax", Error: "line 1, column 9: bad", Raw: []byte("{oops")},
		{Listener: "http", Source: "10.0.0.7:5000", Topic: "/api/v2/write", Reason: "future_timestamp", Error: "line 2, column 30: too far ahead"},
		{Listener: "mqtt", Source: "dev-2", Topic: "telemetry/dev-2/env", Reason: "syntax", Error: "line 1, column 1: bad"},
	} {
		r.TimeNs = now.Add(time.Duration(i) * time.Millisecond).UnixNano()
		dl.Add(r)
	}
	api := &API{Rejects: dl, Late: dl}
	mux := http.NewServeMux()
	api.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	get := func(path string) (int, []byte) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		buf := make([]byte, 4096)
		for {
			n, err := resp.Body.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Fatalf("%s: content type %q", path, ct)
		}
		return resp.StatusCode, []byte(b.String())
	}
	// The log is written by its own goroutine: wait until all three are there.
	var body rejectsResponse
	testutil.WaitFor(t, 10*time.Second, func() (bool, string) {
		code, b := get("/api/v1/rejects")
		if code != 200 {
			t.Fatalf("status %d: %s", code, b)
		}
		body = rejectsResponse{}
		if err := json.Unmarshal(b, &body); err != nil {
			t.Fatal(err)
		}
		return len(body.Rejects) == 3, fmt.Sprintf("%d rejects", len(body.Rejects))
	})
	if len(body.Rejects) != 3 || body.Total != 3 || body.Rejects[0].Source != "dev-2" || string(body.Rejects[2].Raw) != "{oops" {
		t.Fatalf("got %+v; want 3 rejects, newest first, raw kept", body)
	}
	for _, tc := range []struct {
		query string
		want  []string // sources, newest first
	}{
		{"?listener=mqtt", []string{"dev-2", "dev-1"}},
		{"?reason=future_timestamp", []string{"10.0.0.7:5000"}},
		{"?source=dev-1", []string{"dev-1"}},
		{"?limit=1", []string{"dev-2"}},
		{"?since=1h", []string{"dev-2", "10.0.0.7:5000", "dev-1"}},
		{"?since=" + now.Add(time.Hour).Format(time.RFC3339), nil},
	} {
		code, b := get("/api/v1/rejects" + tc.query)
		var got rejectsResponse
		if code != 200 || json.Unmarshal(b, &got) != nil {
			t.Fatalf("%s: %d %s", tc.query, code, b)
		}
		var sources []string
		for _, r := range got.Rejects {
			sources = append(sources, r.Source)
		}
		if strings.Join(sources, ",") != strings.Join(tc.want, ",") {
			t.Errorf("%s: sources %v, want %v", tc.query, sources, tc.want)
		}
	}
	for _, tc := range []struct{ query, want string }{
		{"?limt=5", `unknown query parameter limt; allowed: limit, listener, reason, source, since`},
		{"?limit=0", `limit: "0" is not a whole number from 1 to 1000`},
		{"?listener=coap", `listener: "coap" is not one of mqtt, udp, http`},
		{"?since=yesterday", `since: "yesterday" is neither an RFC 3339 time nor a duration like 15m`},
		{"/late?listener=mqtt", `unknown query parameter listener; allowed: limit, source, since`},
	} {
		path := "/api/v1/rejects" + tc.query
		if strings.HasPrefix(tc.query, "/") {
			path = "/api/v1" + tc.query
		}
		code, b := get(path)
		var e errorBody
		if code != http.StatusBadRequest || json.Unmarshal(b, &e) != nil || e.Error != tc.want {
			t.Errorf("%s: %d %s, want 400 %q", tc.query, code, b, tc.want)
		}
	}
}
