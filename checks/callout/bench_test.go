package callout_test

import (
	"context"
	"testing"

	"github.com/senderguard/senderguard/cache"
	"github.com/senderguard/senderguard/checks/callout"
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
