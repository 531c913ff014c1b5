package cache_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/senderguard/senderguard/cache"
	"github.com/senderguard/senderguard/internal/testredis"
)

// testCA makes a CA and a certificate it signs for 127.0.0.1, written as
// PEM files in dir; it returns the CA file and the leaf's cert and key.
func testCA(t *testing.T, dir, name string) (ca, cert, key string) {
	t.Helper()
	write := func(file, typ string, der []byte) string {
		p := filepath.Join(dir, name+"-"+file)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(leafKey)
	return write("ca.pem", "CERTIFICATE", caDER), write("cert.pem", "CERTIFICATE", leafDER), write("key.pem", "EC PRIVATE KEY", keyDER)
}

func TestRedisOverTLSWithClientCertificate(t *testing.T) {
	dir := t.TempDir()
	ca, cert, key := testCA(t, dir, "good")
	otherCA, _, _ := testCA(t, dir, "other")
	srv := testredis.StartTLS(t, cert, key, ca)
	ctx := context.Background()
	cases := []struct {
		name string
		opts cache.RedisOptions
		ok   bool
	}{
		{"CA and client certificate", cache.RedisOptions{CAFile: ca, CertFile: cert, KeyFile: key}, true},
		{"no client certificate", cache.RedisOptions{CAFile: ca}, false},
		{"another CA", cache.RedisOptions{CAFile: otherCA, CertFile: cert, KeyFile: key}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.opts
			o.URL, o.Timeout = srv.URL(), time.Second
			r, err := cache.NewRedis(o)
			if err == nil {
				defer r.Close()
				err = r.Set(ctx, "a:tls@x.test", cache.Entry{Kind: "exists"}, time.Minute)
			}
			if (err == nil) != tc.ok {
				t.Fatalf("err %v, want success=%v", err, tc.ok)
			}
			if tc.ok {
				if _, _, ok, err := r.Get(ctx, "a:tls@x.test"); !ok || err != nil {
					t.Fatalf("get over TLS: %v %v", ok, err)
				}
			}
		})
	}
}
