package ingest

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// TestCertUsername checks mqtt.tls.username_from_cn and mqtt.tls.only:
// the plain listener is off, the certificate's CN is the username whatever
// CONNECT claims (no password), and its ACL applies.
func TestCertUsername(t *testing.T) {
	caFile, certFile, keyFile, clientCert, clientKey := writeTestPKI(t)
	pool := x509.NewCertPool()
	caPEM, _ := os.ReadFile(caFile)
	pool.AppendCertsFromPEM(caPEM)
	cert, err := tls.LoadX509KeyPair(clientCert, clientKey)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testBrokerConfig() // addr 127.0.0.1:0: turned off by tls.only
	cfg.TLS = BrokerTLSConfig{Addr: "127.0.0.1:0", CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile,
		UsernameFromCN: true, Only: true}
	cfg.Users = []BrokerUser{{Username: "client", Publish: []string{"telemetry/%u/+"}}} // the CN; no password
	app := openTestWAL(t)
	b := startBroker(t, cfg, app)
	if a := b.Addr("tcp"); a != nil {
		t.Errorf("plain listener on %s with tls.only", a)
	}
	o := paho.NewClientOptions().AddBroker("ssl://" + b.addr).SetClientID("cn-1").
		SetUsername("admin").SetPassword("guess"). // ignored: the certificate names the user
		SetTLSConfig(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}).
		SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect with a certificate: %v", tok.Error())
	}
	defer c.Disconnect(50)
	publishWait(t, c, "telemetry/client/env", 1, `{"temp":1}`)
	if n := len(walReadings(t, app.log)); n != 1 {
		t.Errorf("%d readings stored, want 1", n)
	}
	tok := c.Publish("telemetry/admin/env", 1, false, `{"temp":2}`) // another device's topic
	acked := tok.WaitTimeout(3*time.Second) && tok.Error() == nil
	if acked && c.IsConnectionOpen() {
		t.Error("a publish outside the CN user's ACL was acknowledged")
	}
}
