package ingest

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// wsListener is MQTT over WebSocket, in place of mochi's listener, which
// holds a socket that never sends CONNECT for its 60s server timeouts and
// then none (gorilla clears the deadlines on upgrade), accepts any Origin,
// and cannot be counted. Here:
//
//   - sockets are counted by the broker's connTracker (pending CONNECT,
//     per source) from accept on, as TCP ones are;
//   - the upgrade request must arrive within connect_timeout, and the
//     CONNECT within connect_timeout after the upgrade;
//   - a browser's cross-origin request is refused (403) unless its Origin
//     is in mqtt.websocket_origins: a page on another site cannot use a
//     visitor's network position to reach the broker. Requests without an
//     Origin header (devices, not browsers) are accepted;
//   - with mqtt.websocket_tls, it serves wss with the mqtt.tls
//     certificate and client-certificate settings.
type wsListener struct {
	id, addr       string
	tls            *tls.Config
	connectTimeout time.Duration
	origins        []string
	conns          *connTracker
	onBound        func(id string, a net.Addr)
	logger         *slog.Logger

	srv       *http.Server
	ln        net.Listener
	establish listeners.EstablishFn
	upgrader  websocket.Upgrader
	closeOnce sync.Once

	mu     sync.Mutex
	closed bool
	active map[*wsConn]struct{} // upgraded connections handed to mochi
	wg     sync.WaitGroup       // handlers in mochi's EstablishConnection
}

func (l *wsListener) ID() string      { return l.id }
func (l *wsListener) Address() string { return l.addr }
func (l *wsListener) Protocol() string {
	if l.tls != nil {
		return "wss"
	}
	return "ws"
}

func (l *wsListener) Init(*slog.Logger) error {
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		return err
	}
	l.ln = &trackedListener{Listener: ln, conns: l.conns}
	l.onBound(l.id, ln.Addr())
	l.active = map[*wsConn]struct{}{}
	l.upgrader = websocket.Upgrader{Subprotocols: []string{"mqtt"}, CheckOrigin: l.checkOrigin}
	l.srv = &http.Server{
		Handler:           http.HandlerFunc(l.handle),
		ReadHeaderTimeout: l.connectTimeout,
		IdleTimeout:       l.connectTimeout,
		MaxHeaderBytes:    16 << 10,
		TLSConfig:         l.tls,
		ErrorLog:          slog.NewLogLogger(l.logger.Handler(), slog.LevelDebug),
	}
	return nil
}

// checkOrigin accepts requests without an Origin header, same-origin
// requests, and the configured origins.
func (l *wsListener) checkOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	if slices.Contains(l.origins, origin) {
		return true
	}
	u, err := url.Parse(origin)
	return err == nil && strings.EqualFold(u.Host, r.Host)
}

func (l *wsListener) handle(w http.ResponseWriter, r *http.Request) {
	c, err := l.upgrader.Upgrade(w, r, nil) // answers 403 for a refused origin
	if err != nil {
		return
	}
	defer c.Close()
	conn := &wsConn{Conn: c.UnderlyingConn(), c: c}
	_ = conn.SetDeadline(time.Now().Add(l.connectTimeout)) // mochi sets the keep-alive one after CONNECT
	// As the TCP listener: no establish after Close began, and Close waits
	// for those running (mochi's Server.Close must not Wait for its
	// clients while one is being added).
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.active[conn] = struct{}{}
	l.wg.Add(1)
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		delete(l.active, conn)
		l.mu.Unlock()
		l.wg.Done()
	}()
	_ = l.establish(l.id, conn) // mochi logs and counts its own failures
}

func (l *wsListener) Serve(establish listeners.EstablishFn) {
	l.establish = establish
	var err error
	if l.tls != nil {
		err = l.srv.ServeTLS(l.ln, "", "")
	} else {
		err = l.srv.Serve(l.ln)
	}
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		l.logger.Error("mqtt websocket listener ended", "listener", l.id, "err", err)
	}
}

// Close stops accepting, disconnects every client of the listener
// (connections still before CONNECT included) and waits for their
// handlers.
func (l *wsListener) Close(closeClients listeners.CloseFn) {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		active := make([]*wsConn, 0, len(l.active))
		for c := range l.active {
			active = append(active, c)
		}
		l.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = l.srv.Shutdown(ctx) // stops accepting; upgraded connections are not its
		closeClients(l.id)
		for _, c := range active {
			c.Close()
		}
		l.wg.Wait()
		_ = l.ln.Close()
	})
}

// trackedListener counts accepted sockets with a connTracker, closing
// those past its pending bound at once.
type trackedListener struct {
	net.Listener
	conns *connTracker
}

func (t *trackedListener) Accept() (net.Conn, error) {
	for {
		c, err := t.Listener.Accept()
		if err != nil {
			return nil, err // net/http retries temporary errors itself
		}
		if tc := t.conns.accept(c); tc != nil {
			return tc, nil
		}
		c.Close()
	}
}

// wsConn is a WebSocket connection as the net.Conn mochi reads MQTT
// packets from: binary messages, read as one stream.
type wsConn struct {
	net.Conn // the underlying socket: addresses, deadlines, Close
	c        *websocket.Conn
	r        io.Reader // the current message, nil between messages
}

var errWSText = errors.New("websocket: MQTT needs binary messages")

func (ws *wsConn) Read(p []byte) (int, error) {
	for {
		if ws.r == nil {
			op, r, err := ws.c.NextReader()
			if err != nil {
				return 0, err
			}
			if op != websocket.BinaryMessage {
				return 0, errWSText
			}
			ws.r = r
		}
		n, err := ws.r.Read(p)
		if errors.Is(err, io.EOF) {
			ws.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

func (ws *wsConn) Write(p []byte) (int, error) {
	if err := ws.c.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}
