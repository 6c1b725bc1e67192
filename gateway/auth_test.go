package gateway

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns
// their paths and a pool that trusts the certificate.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "runnel test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	kb, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestTokenAuthAndTLS runs the gateway with API tokens over HTTPS: probes
// and the write endpoint stay open, everything else needs a token.
func TestTokenAuthAndTLS(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t)
	cfg := testConfig(t)
	cfg.HTTP.Tokens = []string{"s3cret-token", "other-token"}
	cfg.HTTP.TLSCertFile, cfg.HTTP.TLSKeyFile = certFile, keyFile
	g, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	<-g.Ready()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	base := "https://" + g.Addr()
	do := func(method, path, auth, body string) int {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		method, path, auth string
		want               int
	}{
		{"GET", "/healthz", "", 200},
		{"GET", "/readyz", "", 200},
		{"GET", "/api/v1/series", "", 401},
		{"GET", "/api/v1/series", "Bearer s3cret-token", 200},
		{"GET", "/api/v1/series", "Token other-token", 200},
		{"GET", "/api/v1/series", "Bearer wrong-token", 401},
		{"GET", "/api/v1/series", "Basic czNjcmV0LXRva2Vu", 401},
		{"GET", "/metrics", "", 401},
		{"GET", "/metrics", "Bearer s3cret-token", 200},
		// http_write.tokens is empty: the http tokens guard the write
		// endpoint too, never left open by setting http.tokens alone.
		{"POST", "/api/v2/write", "", 401},
		{"POST", "/api/v2/write", "Token s3cret-token", 204},
	} {
		body := ""
		if tc.method == "POST" {
			body = "env,device=a temp=1\n"
		}
		if got := do(tc.method, tc.path, tc.auth, body); got != tc.want {
			t.Errorf("%s %s with %q: %d, want %d", tc.method, tc.path, tc.auth, got, tc.want)
		}
	}
	// Plain HTTP is refused on the TLS listener.
	if resp, err := http.Get("http://" + g.Addr() + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Error("plain HTTP served on the TLS listener")
		}
	}
}

func TestHTTPAuthConfigErrors(t *testing.T) {
	c := DefaultConfig()
	c.Gateway.ID = "x"
	c.HTTP.Tokens = []string{"short"}
	c.HTTP.TLSCertFile = "cert.pem"
	err := c.Validate()
	for _, want := range []string{"http.tokens[0]: must be at least 8 characters", "http.tls_cert_file: tls_cert_file and tls_key_file must be set together"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "short") {
		t.Error("the error shows the token")
	}
}
