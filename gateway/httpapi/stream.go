package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/runnel-iot/runnel/windows"
)

// Event is one message of the live stream: a closed window now (alerts
// later), already encoded as JSON.
type Event struct {
	Type   string // SSE event name: "window"
	Series string // for filtering
	Field  string
	Kind   string // tumbling, sliding, group
	Data   []byte // JSON
}

// Hub fans events out to the live-stream clients. Publish never blocks:
// each client has a bounded buffer, and a client whose buffer is full is
// dropped (its stream ends; it may reconnect), so a slow client never
// slows the gateway. Safe for concurrent use.
type Hub struct {
	// MaxClients bounds the stream clients at once (0: no bound); a client
	// past it is answered 503 with Retry-After. Set it before use.
	MaxClients int

	buf     int
	mu      sync.Mutex
	subs    map[*subscriber]struct{}
	nsubs   atomic.Int64 // len(subs), read without mu by PublishEmission
	closed  bool
	dropped atomic.Uint64
	sent    atomic.Uint64
}

type subscriber struct {
	ch     chan Event
	filter streamFilter
	gone   chan struct{} // closed when the hub dropped it
}

type streamFilter struct {
	prefix, field string
	kinds         map[string]bool
}

func (f streamFilter) match(e Event) bool {
	return strings.HasPrefix(e.Series, f.prefix) && (f.field == "" || f.field == e.Field) &&
		(len(f.kinds) == 0 || f.kinds[e.Kind])
}

// NewHub returns a hub with a per-client buffer of buf events.
func NewHub(buf int) *Hub { return &Hub{buf: buf, subs: map[*subscriber]struct{}{}} }

// Publish hands e to every matching client without blocking.
func (h *Hub) Publish(e Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		if !s.filter.match(e) {
			continue
		}
		select {
		case s.ch <- e:
			h.sent.Add(1)
		default:
			delete(h.subs, s)
			h.nsubs.Store(int64(len(h.subs)))
			close(s.gone)
			h.dropped.Add(1)
		}
	}
}

// Clients returns the number of connected stream clients; Dropped the
// clients dropped for being slow.
func (h *Hub) Clients() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// Dropped returns how many clients were dropped for being too slow.
func (h *Hub) Dropped() uint64 { return h.dropped.Load() }

// subscribe adds a client, or returns nil when MaxClients are connected.
func (h *Hub) subscribe(f streamFilter) *subscriber {
	s := &subscriber{ch: make(chan Event, h.buf), filter: f, gone: make(chan struct{})}
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.closed:
		close(s.gone)
	case h.MaxClients > 0 && len(h.subs) >= h.MaxClients:
		return nil
	default:
		h.subs[s] = struct{}{}
		h.nsubs.Store(int64(len(h.subs)))
	}
	return s
}

// Close ends every stream and refuses new ones (they end at once): the
// server's graceful shutdown waits for open requests, and a stream would
// otherwise hold it until its deadline.
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for s := range h.subs {
		delete(h.subs, s)
		close(s.gone)
	}
	h.nsubs.Store(0)
}

func (h *Hub) unsubscribe(s *subscriber) {
	h.mu.Lock()
	delete(h.subs, s)
	h.nsubs.Store(int64(len(h.subs)))
	h.mu.Unlock()
}

// streamHeartbeat keeps idle connections (and proxies) alive.
const streamHeartbeat = 15 * time.Second

// handleStream serves GET /api/v1/stream?prefix=&field=&kind=: Server-Sent
// Events, one `event: window` per closed window and one `event: alert` per
// alert event (kind: tumbling, sliding, group, alert; comma-separated). The stream ends when the client goes, or when
// it fell behind by more than its buffer.
func (a *API) handleStream(w http.ResponseWriter, r *http.Request) {
	q, err := query(r, "prefix", "field", "kind")
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	f := streamFilter{prefix: q.Get("prefix"), field: q.Get("field")}
	if k := q.Get("kind"); k != "" {
		f.kinds = map[string]bool{}
		for _, kind := range strings.Split(k, ",") {
			if kind != "tumbling" && kind != "sliding" && kind != "group" && kind != "alert" {
				writeError(w, http.StatusBadRequest, fmt.Errorf("kind: %q is not one of tumbling, sliding, group, alert", kind))
				return
			}
			f.kinds[kind] = true
		}
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, fmt.Errorf("streaming unsupported by this connection"))
		return
	}
	s := a.Stream.subscribe(f)
	if s == nil {
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, fmt.Errorf("%d live stream clients are connected, the most allowed (http.max_stream_clients)", a.Stream.MaxClients))
		return
	}
	defer a.Stream.unsubscribe(s)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, ": runnel live stream\n\n")
	fl.Flush()
	hb := time.NewTicker(streamHeartbeat)
	defer hb.Stop()
	for {
		select {
		case e := <-s.ch:
			fmt.Fprintf(w, "event: %s\ndata: %s\n\n", e.Type, e.Data)
			// Write what else is queued before flushing once.
			for more := true; more; {
				select {
				case e := <-s.ch:
					fmt.Fprintf(w, "event: %s\ndata: %s\n\n", e.Type, e.Data)
				default:
					more = false
				}
			}
			fl.Flush()
		case <-hb.C:
			fmt.Fprint(w, ": keep-alive\n\n")
			fl.Flush()
		case <-s.gone:
			fmt.Fprint(w, "event: dropped\ndata: {\"error\":\"client too slow; reconnect\"}\n\n")
			fl.Flush()
			return
		case <-r.Context().Done():
			return
		}
	}
}

// WindowEvent encodes a closed window for the stream.
func WindowEvent(series, field, kind string, v any) Event {
	b, err := json.Marshal(v)
	if err != nil {
		panic("BUG: marshal stream event: " + err.Error())
	}
	return Event{Type: "window", Series: series, Field: field, Kind: kind, Data: b}
}

// PublishEmission sends a closed window to the stream, in the JSON shape of
// GET /api/v1/windows (group windows in that of /api/v1/sketches/*).
// With no client connected it returns at once: the JSON is for nobody
// (a window closing per reading under load).
func (h *Hub) PublishEmission(e windows.Emission) {
	if h.nsubs.Load() == 0 {
		return
	}
	switch e.Kind {
	case windows.KindGroup:
		g := e.Group
		d := g.Distinct
		h.Publish(WindowEvent(g.Key, "", "group", struct {
			groupJSON
			Kind string `json:"kind"`
		}{groupJSON{Group: g.Group, Key: g.Key, Start: rfc3339(g.StartNs), End: rfc3339(g.EndNs), Readings: g.Readings, Distinct: &d, TopK: topKJSON(g.TopK)}, "group"}))
	default:
		w := e.Window
		h.Publish(WindowEvent(w.Series, w.Field, e.Kind.String(), struct {
			Series string `json:"series"`
			Field  string `json:"field"`
			windowJSON
		}{w.Series, w.Field, toWindowJSON(w)}))
	}
}
