package cache_test

import (
	"context"
	"testing"
	"time"

	"github.com/senderguard/senderguard/cache"
	"github.com/senderguard/senderguard/internal/testcert"
	"github.com/senderguard/senderguard/internal/testredis"
)

func TestRedisOverTLSWithClientCertificate(t *testing.T) {
	dir := t.TempDir()
	good := testcert.New(t, dir, "good", "127.0.0.1")
	ca, cert, key := good.CAFile, good.CertFile, good.KeyFile
	otherCA := testcert.New(t, dir, "other", "127.0.0.1").CAFile
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
