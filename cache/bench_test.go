package cache

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"
)

// BenchmarkMillionEntries fills a Memory store with 1,000,000 callout
// entries of realistic key length and reports the heap they take
// (target: under 256 MiB).
func BenchmarkMillionEntries(b *testing.B) {
	const n = 1_000_000
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		m, err := NewMemory(n, nil, Hooks{})
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		for i := 0; i < n; i++ {
			m.Set(ctx, fmt.Sprintf("a:user.%07d@mail.example-%d.com", i, i%5000), Entry{Kind: "exists", Code: 250, Enhanced: "2.1.5", Stored: int64(i)}, time.Hour)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if m.Len() != n {
			b.Fatalf("holds %d", m.Len())
		}
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "MiB")
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "B/entry")
		runtime.KeepAlive(m)
	}
}

func TestTTLExpiresAndBounds(t *testing.T) {
	clock := &stepClock{now: time.Unix(1e9, 0)}
	evicted := 0
	c, err := NewTTL[string, int](2, clock, Hooks{Evicted: func(string) { evicted++ }})
	if err != nil {
		t.Fatal(err)
	}
	c.Add("a", 1, time.Minute)
	if v, left, ok := c.Get("a"); !ok || v != 1 || left != time.Minute {
		t.Fatalf("got %v %v %v", v, left, ok)
	}
	clock.now = clock.now.Add(time.Minute)
	if _, _, ok := c.Get("a"); ok {
		t.Fatal("entry outlived its TTL")
	}
	c.Add("b", 2, time.Hour)
	c.Add("c", 3, time.Hour)
	c.Add("d", 4, time.Hour)
	if c.Len() != 2 || evicted != 2 {
		t.Errorf("len %d evicted %d, want 2 and 2", c.Len(), evicted)
	}
	c.Add("e", 5, 0)
	if _, _, ok := c.Get("e"); ok {
		t.Error("zero TTL stored")
	}
}

type stepClock struct{ now time.Time }

func (c *stepClock) Now() time.Time { return c.now }

func TestMemoryStoreRoundTrip(t *testing.T) {
	m, err := NewMemory(10, nil, Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	in := []Entry{
		{Kind: "exists", Code: 250, Enhanced: "2.1.5", Stored: 42},
		{Kind: "not-exists", Code: 550, Stored: 7},
		{Kind: "breaker"},
	}
	for i, e := range in {
		if err := m.Set(ctx, fmt.Sprint("k", i), e, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	for i, want := range in {
		got, left, ok, err := m.Get(ctx, fmt.Sprint("k", i))
		if err != nil || !ok || got != want || left <= 0 {
			t.Errorf("%d: got %+v %v %v %v, want %+v", i, got, left, ok, err, want)
		}
	}
	if _, _, ok, _ := m.Get(ctx, "k9"); ok {
		t.Error("hit on a key never set")
	}
	if err := m.Set(ctx, "bad", Entry{Kind: "x", Enhanced: "5.1"}, time.Hour); err == nil {
		t.Error("bad enhanced code accepted")
	}
}
