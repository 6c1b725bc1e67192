package ingest

import (
	"fmt"
	"testing"
)

// TestUDPAllowSources checks the source allow-list: a datagram from a peer
// outside it is dropped and counted; one from inside is stored.
func TestUDPAllowSources(t *testing.T) {
	for _, tc := range []struct {
		allow  []string
		stored bool
	}{
		{[]string{"10.0.0.0/8", "192.0.2.7"}, false},
		{[]string{"10.0.0.0/8", "127.0.0.0/8"}, true},
		{[]string{"127.0.0.1"}, true},
	} {
		t.Run(fmt.Sprint(tc.allow), func(t *testing.T) {
			app := openTestWAL(t)
			cfg := udpTestConfig()
			cfg.AllowSources = tc.allow
			sink := new(rejectBox)
			u, st := startUDP(t, cfg, app, sink)
			c := dialUDP(t, u.Addr())
			// The second datagram is bad: when denied, it must not reach
			// the dead-letter log either.
			for _, d := range []string{"m,device=d v=1 1700000000000000000\n", "bad line\n"} {
				if _, err := c.Write([]byte(d)); err != nil {
					t.Fatal(err)
				}
			}
			if tc.stored {
				awaitCond(t, func() string { return fmt.Sprint(st.Readings[ListenerUDP].Load()) },
					func() bool { return st.Readings[ListenerUDP].Load() == 1 })
				return
			}
			awaitCond(t, func() string { return fmt.Sprint(st.Dropped[ListenerUDP][DropSourceDenied].Load()) },
				func() bool { return st.Dropped[ListenerUDP][DropSourceDenied].Load() == 2 })
			if n := st.Messages[ListenerUDP].Load() + st.Readings[ListenerUDP].Load(); n != 0 {
				t.Errorf("denied datagrams counted as messages or readings: %d", n)
			}
			if r := sink.list(); len(r) != 0 {
				t.Errorf("denied datagrams kept as dead letters: %+v", r)
			}
		})
	}
}

func TestUDPAllowSourcesValidate(t *testing.T) {
	c := udpTestConfig()
	c.AllowSources = []string{"10.0.0.0/8", "::1", "10.0.0.0/33", "host"}
	checkConfigKeys(t, c.Validate(), []string{"allow_sources[2]", "allow_sources[3]"})
}
