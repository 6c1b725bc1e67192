package ingest

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"net"
	"runtime"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/crypto/bcrypt"
)

// Authentication bounds, each with its reason.
const (
	// authWait is how long a CONNECT may wait for a bcrypt slot before it
	// is refused: a login storm must not queue without end.
	authWait = 5 * time.Second
	// freeFailures, backoffBase and backoffMax: after freeFailures failed
	// logins from one source (a mistyped password, a misconfigured device
	// beside legitimate ones on the same host), each further failure n
	// makes its next attempts refused without a check for
	// backoffBase × 2^(n-1), at most backoffMax; a success clears it.
	freeFailures = 5
	backoffBase  = 200 * time.Millisecond
	backoffMax   = 30 * time.Second
	// maxBackoffSources bounds the sources tracked (memory); past it, the
	// expired ones are dropped, and then new sources go untracked.
	maxBackoffSources = 4096
)

// authGuard makes password checks cost the same for every username, bounds
// how many run at once, and backs off sources that keep failing.
type authGuard struct {
	dummy []byte        // a bcrypt hash of a random password, of the users' cost
	slots chan struct{} // concurrent bcrypt checks
	stats *Stats

	mu      sync.Mutex
	sources map[string]*backoff
}

type backoff struct {
	failures int
	until    time.Time
}

func newAuthGuard(users []BrokerUser, stats *Stats) *authGuard {
	g := &authGuard{slots: make(chan struct{}, max(1, runtime.GOMAXPROCS(0))), stats: stats, sources: map[string]*backoff{}}
	if len(users) == 0 {
		return g
	}
	cost := bcrypt.DefaultCost
	if c, err := bcrypt.Cost([]byte(users[0].PasswordHash)); err == nil {
		cost = c
	}
	pw := make([]byte, 18)
	_, _ = rand.Read(pw)
	g.dummy, _ = bcrypt.GenerateFromPassword(pw, cost) // validated cost: cannot fail
	return g
}

// throttled reports whether src is backing off now.
func (g *authGuard) throttled(src string, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	b := g.sources[src]
	return b != nil && now.Before(b.until)
}

// failed records a failure from src and extends its back-off.
func (g *authGuard) failed(src string, now time.Time) {
	g.stats.AuthFailures.Add(1)
	g.mu.Lock()
	defer g.mu.Unlock()
	b := g.sources[src]
	if b == nil {
		if len(g.sources) >= maxBackoffSources {
			for k, v := range g.sources {
				if now.After(v.until.Add(backoffMax)) {
					delete(g.sources, k)
				}
			}
			if len(g.sources) >= maxBackoffSources {
				return
			}
		}
		b = &backoff{}
		g.sources[src] = b
	}
	b.failures++
	n := b.failures - freeFailures
	if n <= 0 {
		return
	}
	d := backoffMax
	if n < 20 {
		d = min(backoffBase<<(n-1), backoffMax)
	}
	b.until = now.Add(d)
}

// succeeded clears src's back-off.
func (g *authGuard) succeeded(src string) {
	g.mu.Lock()
	delete(g.sources, src)
	g.mu.Unlock()
}

// check runs one bcrypt comparison within the concurrency bound; false
// when it does not match or no slot came free within authWait.
func (g *authGuard) check(hash, password []byte) bool {
	t := time.NewTimer(authWait)
	defer t.Stop()
	select {
	case g.slots <- struct{}{}:
	case <-t.C:
		return false
	}
	defer func() { <-g.slots }()
	return bcrypt.CompareHashAndPassword(hash, password) == nil
}

// certUser returns the Common Name of the client's verified certificate
// when mqtt.tls.username_from_cn is on, else "".
func (h *ingestHook) certUser(cl *mqtt.Client) string {
	if !h.cfg.TLS.UsernameFromCN {
		return ""
	}
	conn := cl.Net.Conn
	if ws, ok := conn.(*wsConn); ok {
		conn = ws.Conn
	}
	tc, ok := conn.(*tls.Conn)
	if !ok {
		return ""
	}
	st := tc.ConnectionState()
	if len(st.VerifiedChains) == 0 || len(st.PeerCertificates) == 0 {
		return ""
	}
	return st.PeerCertificates[0].Subject.CommonName
}

// sourceOf is the host of a client's remote address: back-off is per host,
// not per connection.
func sourceOf(cl *mqtt.Client) string {
	if host, _, err := net.SplitHostPort(cl.Net.Remote); err == nil {
		return host
	}
	return cl.Net.Remote
}

// OnConnectAuthenticate checks the username and bcrypt password. An
// unknown username costs the same bcrypt work as a known one (a dummy
// hash), so timing does not tell which usernames exist; checks run at most
// GOMAXPROCS at once; a source that keeps failing is refused without a
// check for a growing back-off (counted in Stats.AuthThrottled).
func (h *ingestHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	if cn := h.certUser(cl); cn != "" {
		if h.users[cn] == nil {
			h.deny("connect refused: certificate CN names no user", "cn", cn, "client", cl.ID)
			h.releaseClaim(cl)
			return false
		}
		return true // the verified certificate is the credential
	}
	user := string(pk.Connect.Username)
	if user == "" {
		if !h.anonymous {
			h.deny("connect refused: no username and anonymous access is off", "client", cl.ID, "remote", cl.Net.Remote)
			h.releaseClaim(cl)
		}
		return h.anonymous
	}
	src, now := sourceOf(cl), time.Now()
	if h.auth.throttled(src, now) {
		h.stats.AuthThrottled.Add(1)
		h.deny("connect refused: source backing off after failed logins", "remote", src)
		h.releaseClaim(cl)
		return false
	}
	u, known := h.users[user]
	key := sha256.Sum256(append(append([]byte(user), 0), pk.Connect.Password...))
	if known {
		if _, ok := h.authCache.Load(key); ok {
			return true
		}
	}
	hash := h.auth.dummy
	if known {
		hash = []byte(u.PasswordHash)
	}
	ok := hash != nil && h.auth.check(hash, pk.Connect.Password) && known
	if !ok {
		h.auth.failed(src, now)
		// One cause for unknown users and wrong passwords: the log must not
		// tell them apart either.
		h.deny("connect refused: bad username or password", "user", user, "client", cl.ID, "remote", cl.Net.Remote)
		h.releaseClaim(cl)
		return false
	}
	h.auth.succeeded(src)
	h.mu.Lock()
	if h.authN < 1024 { // bounded: beyond it, bcrypt every time
		h.authCache.Store(key, struct{}{})
		h.authN++
	}
	h.mu.Unlock()
	return true
}
