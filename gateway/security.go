package gateway

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// SecurityConfig is the `security` section: what may be reached from the
// network without credentials.
//
// Secure by default, as mosquitto 2.0: a listener that nothing protects
// binds to loopback only, whatever address is configured, and the log says
// so in one line with the way to open it. A listener is protected by:
//
//   - MQTT (addr, websocket_addr, tls.addr): mqtt.users with anonymous
//     access off (mqtt.allow_anonymous unset or false); the TLS listener
//     also by mqtt.tls.client_ca_file (client certificates);
//   - HTTP (http.addr; API, dashboard data and the write endpoint):
//     http.tokens (the write endpoint takes http_write.tokens, or
//     http.tokens when those are unset, so it is never left open by
//     setting http.tokens alone);
//   - UDP (udp.addr, off by default): udp.allow_sources, the peers whose
//     datagrams are taken (UDP carries no credentials).
type SecurityConfig struct {
	// AllowAnonymousNetwork lets unprotected listeners bind the address
	// configured (all interfaces by default): anyone who can reach the
	// gateway may then read the API and write readings. For closed test
	// networks only.
	AllowAnonymousNetwork bool `yaml:"allow_anonymous_network"`
	// RequireCredentials refuses to start unless mqtt.users (or TLS client
	// certificates) and http.tokens are configured. The Raspberry Pi and
	// industrial profiles set it.
	RequireCredentials bool `yaml:"require_credentials"`
}

// Validate has nothing to check within the section; the cross-section rule
// of require_credentials is in Config.crossCheck.
func (c SecurityConfig) Validate() error { return nil }

// mqttProtected reports whether MQTT clients must authenticate.
func (c Config) mqttProtected() bool {
	return len(c.MQTT.Users) > 0 && !c.MQTT.Anonymous()
}

// httpProtected reports whether the HTTP API and write endpoint need a token.
func (c Config) httpProtected() bool { return len(c.HTTP.Tokens) > 0 }

// credentialErrors is the require_credentials rule.
func (c Config) credentialErrors() []error {
	if !c.Security.RequireCredentials {
		return nil
	}
	var missing []string
	if !c.mqttProtected() && c.MQTT.TLS.ClientCAFile == "" {
		missing = append(missing, "mqtt.users (with mqtt.allow_anonymous unset or false)")
	}
	if !c.httpProtected() {
		missing = append(missing, "http.tokens")
	}
	if len(missing) == 0 {
		return nil
	}
	return []error{&ConfigError{Key: "security.require_credentials",
		Msg: "this profile starts only with credentials: set " + strings.Join(missing, " and ") +
			" (runnel init writes them; runnel passwd hashes a password)"}}
}

// bindChange is one listener address moved to loopback.
type bindChange struct {
	key, from, to string
}

// secureBinds returns c with every unprotected listener moved to loopback
// (see SecurityConfig), and what it moved. Addresses already on loopback
// and protected listeners are kept.
func (c Config) secureBinds() (Config, []bindChange) {
	if c.Security.AllowAnonymousNetwork {
		return c, nil
	}
	var changes []bindChange
	move := func(key string, addr *string, protected bool) {
		if protected || *addr == "" || isLoopbackAddr(*addr) {
			return
		}
		to := loopbackAddr(*addr)
		changes = append(changes, bindChange{key: key, from: *addr, to: to})
		*addr = to
	}
	mqtt := c.mqttProtected()
	move("mqtt.addr", &c.MQTT.Addr, mqtt)
	move("mqtt.websocket_addr", &c.MQTT.WebSocketAddr, mqtt)
	if c.MQTT.TLS.CertFile != "" {
		move("mqtt.tls.addr", &c.MQTT.TLS.Addr, mqtt || c.MQTT.TLS.ClientCAFile != "")
	}
	move("http.addr", &c.HTTP.Addr, c.httpProtected())
	move("udp.addr", &c.UDP.Addr, len(c.UDP.AllowSources) > 0)
	return c, changes
}

// secureBindsLog is the one line that says what secureBinds moved and how
// to open the listeners; "" when nothing moved.
func secureBindsLog(changes []bindChange) string {
	if len(changes) == 0 {
		return ""
	}
	var moved []string
	for _, ch := range changes {
		moved = append(moved, fmt.Sprintf("%s %s -> %s", ch.key, ch.from, ch.to))
	}
	return "listeners without credentials bound to loopback only (" + strings.Join(moved, ", ") +
		"): to accept network clients configure mqtt.users and http.tokens (runnel init writes them) and udp.allow_sources," +
		" or set security.allow_anonymous_network: true (RUNNEL_SECURITY_ALLOW_ANONYMOUS_NETWORK=true) to listen on all interfaces without authentication"
}

// udpExposureWarning warns when UDP takes readings from the network with
// no source filter while the other listeners demand credentials: it is
// then the unauthenticated way in.
func (c Config) udpExposureWarning() string {
	if c.UDP.Addr == "" || isLoopbackAddr(c.UDP.Addr) || len(c.UDP.AllowSources) > 0 {
		return ""
	}
	if !c.mqttProtected() && !c.httpProtected() {
		return ""
	}
	return "udp takes readings from any source with no authentication while mqtt or http require credentials: set udp.allow_sources or turn udp off (udp.addr empty)"
}

// isLoopbackAddr reports whether a listen address binds loopback only.
func isLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// loopbackAddr is addr with its host replaced by 127.0.0.1.
func loopbackAddr(addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr // invalid: Validate reports it
	}
	return net.JoinHostPort("127.0.0.1", port)
}
