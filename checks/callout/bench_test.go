package callout_test

import (
	"context"
	"testing"

	"github.com/senderguard/senderguard/cache"
	"github.com/senderguard/senderguard/checks/callout"
	"github.com/senderguard/senderguard/checks/resolver"
	"github.com/senderguard/senderguard/internal/testdns"
)

// BenchmarkVerifyCacheHit is the milter's MAIL FROM path when the sender
// is cached: validate, build the key, one cache look-up (target < 2µs).
func BenchmarkVerifyCacheHit(b *testing.B) {
	store, err := cache.NewMemory(1000, nil, cache.Hooks{})
	if err != nil {
		b.Fatal(err)
	}
	v := callout.NewVerifier(&callout.Prober{}, store, callout.VerifierConfig{GlobalConcurrency: 1, PerDomainConcurrency: 1, PerDomainRatePerMinute: 1}, callout.Hooks{}, nil)
	defer v.Close()
	ctx := context.Background()
	store.Set(ctx, "a:alice@example.com", cache.Entry{Kind: string(callout.Exists), Code: 250, Enhanced: "2.1.5", Stored: 1 << 40}, 1<<50)
	if r := v.Verify(ctx, "alice@example.com"); !r.Cached || r.Class != callout.Exists {
		b.Fatalf("not a cache hit: %+v", r)
	}
	b.ReportAllocs()
	for b.Loop() {
		v.Verify(ctx, "alice@example.com")
	}
}

// BenchmarkMailFromPathCacheHit is what the milter does at MAIL FROM for a
// known sender: the null-MX check (a DNS cache hit) and the verifier's
// cache hit.
func BenchmarkMailFromPathCacheHit(b *testing.B) {
	srv := testdns.Start(b, "example.com. 300 IN MX 10 mx.example.com.")
	q, err := resolver.NewCached(&resolver.Stub{Servers: []string{srv.Addr}}, resolver.CacheConfig{}, nil, cache.Hooks{})
	if err != nil {
		b.Fatal(err)
	}
	store, _ := cache.NewMemory(1000, nil, cache.Hooks{})
	v := callout.NewVerifier(&callout.Prober{Resolver: q}, store, callout.VerifierConfig{GlobalConcurrency: 1, PerDomainConcurrency: 1, PerDomainRatePerMinute: 1}, callout.Hooks{}, nil)
	defer v.Close()
	ctx := context.Background()
	store.Set(ctx, "a:alice@example.com", cache.Entry{Kind: string(callout.Exists), Code: 250, Enhanced: "2.1.5", Stored: 1 << 40}, 1<<50)
	if null, known := v.NullMX(ctx, "example.com"); null || !known {
		b.Fatal("null MX check failed")
	}
	b.ReportAllocs()
	for b.Loop() {
		v.NullMX(ctx, "example.com")
		v.Verify(ctx, "alice@example.com")
	}
}
