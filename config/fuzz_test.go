package config

import "testing"

func FuzzParse(f *testing.F) {
	f.Add([]byte("listen: inet:127.0.0.1:8896\nactions:\n  spf_mailfrom:\n    fail: reject 550 5.7.23\n"))
	f.Add([]byte("trusted_networks: [10.0.0.0/8, \"::1\"]\ndns: {timeout: 1s}\n"))
	f.Add([]byte("callout: {ttl_exists: 31d}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse("fuzz.yaml", b)
		if err == nil && c.Validate() != nil {
			t.Fatalf("Parse accepted a config Validate rejects")
		}
	})
}
