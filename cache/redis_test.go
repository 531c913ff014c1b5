package cache_test

import (
	"context"
	"fmt"
	"os/exec"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/senderguard/senderguard/cache"
	"github.com/senderguard/senderguard/internal/testredis"
)

func newRedis(t *testing.T, url string) *cache.Redis {
	t.Helper()
	r, err := cache.NewRedis(cache.RedisOptions{URL: url, KeyPrefix: "sgtest:", Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// TestStoreContract runs the same checks on every Store.
func TestStoreContract(t *testing.T) {
	srv := testredis.Start(t)
	stores := map[string]func(t *testing.T) cache.Store{
		"memory": func(t *testing.T) cache.Store { m, _ := cache.NewMemory(100, nil, cache.Hooks{}); return m },
		"redis":  func(t *testing.T) cache.Store { return newRedis(t, srv.URL()) },
		"shared": func(t *testing.T) cache.Store {
			m, _ := cache.NewMemory(100, nil, cache.Hooks{})
			s := cache.NewShared(func() (*cache.Redis, error) { return newRedis(t, srv.URL()), nil }, m, cache.SharedHooks{}, nil)
			t.Cleanup(s.Close)
			return s
		},
	}
	for name, mk := range stores {
		t.Run(name, func(t *testing.T) {
			s := mk(t)
			ctx := context.Background()
			key := "a:contract-" + name + "@example.test"
			e := cache.Entry{Kind: "not-exists", Code: 550, Enhanced: "5.1.1", Stored: 1700000000, Rules: 3}
			if _, _, ok, err := s.Get(ctx, key); ok || err != nil {
				t.Fatalf("before Set: ok=%v err=%v", ok, err)
			}
			if err := s.Set(ctx, key, e, 300*time.Millisecond); err != nil {
				t.Fatal(err)
			}
			got, left, ok, err := s.Get(ctx, key)
			if err != nil || !ok || got != e || left <= 0 || left > 300*time.Millisecond {
				t.Fatalf("after Set: %+v left=%v ok=%v err=%v", got, left, ok, err)
			}
			time.Sleep(450 * time.Millisecond)
			if _, _, ok, _ := s.Get(ctx, key); ok {
				t.Fatal("entry outlived its TTL")
			}
			s.Set(ctx, key, e, time.Hour)
			if n, err := s.Delete(ctx, key, key+".absent"); n != 1 || err != nil {
				t.Fatalf("Delete: %d %v, want 1", n, err)
			}
			if _, _, ok, _ := s.Get(ctx, key); ok {
				t.Fatal("entry outlived Delete")
			}
		})
	}
}

func TestRedisInvalidationReachesAnotherReplica(t *testing.T) {
	srv := testredis.Start(t)
	a, b := newRedis(t, srv.URL()), newRedis(t, srv.URL())
	ctx := context.Background()
	if _, _, ok, _ := a.Get(ctx, "a:x@inv.test"); ok { // a now holds a cached miss
		t.Fatal("hit before any write")
	}
	b.Set(ctx, "a:x@inv.test", cache.Entry{Kind: "exists", Code: 250}, time.Hour)
	deadline := time.Now().Add(time.Second)
	for {
		if e, _, ok, _ := a.Get(ctx, "a:x@inv.test"); ok && e.Kind == "exists" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("a fact written by one replica not seen by the other within 1s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSharedTreatsForeignValuesAsMisses(t *testing.T) {
	srv := testredis.Start(t)
	raw, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{srv.Addr}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	kinds := map[string]int{}
	var mu sync.Mutex
	m, _ := cache.NewMemory(100, nil, cache.Hooks{})
	s := cache.NewShared(func() (*cache.Redis, error) { return newRedis(t, srv.URL()), nil }, m,
		cache.SharedHooks{Error: func(k string) { mu.Lock(); kinds[k]++; mu.Unlock() }}, nil)
	defer s.Close()
	ctx := context.Background()
	for i, v := range []string{"garbage", "1|exists|250|2.1.5", "1|EXISTS|250||0", "2|exists|250||0", "1|exists|99999||0", string(make([]byte, 4096)),
		"1|exists|250||0|", "1|exists|250||0|r0", "1|exists|250||0|r1|r2", "1|exists|250||0|x1", "1|exists|250||0|r300"} {
		key := fmt.Sprintf("a:bad%d@x.test", i)
		raw.Do(ctx, raw.B().Set().Key("sgtest:{"+key+"}").Value(v).Build())
		if _, _, ok, err := s.Get(ctx, key); ok || err != nil {
			t.Errorf("value %.20q: ok=%v err=%v, want a plain miss", v, ok, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if kinds["bad_value"] != 11 || !s.Up() {
		t.Errorf("errors %v, up=%v; want 11 bad_value and still up", kinds, s.Up())
	}
}

func TestRedisLeaseExpiresWhenItsHolderDies(t *testing.T) {
	srv := testredis.Start(t)
	a, b := newRedis(t, srv.URL()), newRedis(t, srv.URL())
	ctx := context.Background()
	if _, ok, err := a.Lease(ctx, "a:l@x.test", 300*time.Millisecond); !ok || err != nil {
		t.Fatalf("first lease: %v %v", ok, err)
	}
	if _, ok, _ := b.Lease(ctx, "a:l@x.test", time.Second); ok {
		t.Fatal("second replica got a held lease")
	}
	// a "dies" without releasing: b gets it once it expires.
	time.Sleep(400 * time.Millisecond)
	release, ok, err := b.Lease(ctx, "a:l@x.test", time.Second)
	if !ok || err != nil {
		t.Fatalf("lease after expiry: %v %v", ok, err)
	}
	release()
	if _, ok, _ := a.Lease(ctx, "a:l@x.test", time.Second); !ok {
		t.Fatal("released lease not free")
	}
}

func TestRedisFleetLimits(t *testing.T) {
	srv := testredis.Start(t)
	a, b := newRedis(t, srv.URL()), newRedis(t, srv.URL())
	ctx := context.Background()
	relA, refused, err := a.Acquire(ctx, "d:lim.test", 1, 3, time.Minute)
	if err != nil || refused != "" {
		t.Fatalf("first: %q %v", refused, err)
	}
	if _, refused, _ := b.Acquire(ctx, "d:lim.test", 1, 3, time.Minute); refused != "concurrency" {
		t.Fatalf("second replica, slot held: %q, want concurrency", refused)
	}
	relA()
	relB, refused, _ := b.Acquire(ctx, "d:lim.test", 1, 3, time.Minute)
	if refused != "" {
		t.Fatalf("after release: %q", refused)
	}
	relB()
	if _, refused, _ := a.Acquire(ctx, "d:lim.test", 1, 3, time.Minute); refused != "" {
		t.Fatalf("third of 3 a minute: %q", refused)
	}
	if _, refused, _ := b.Acquire(ctx, "d:lim.test", 0, 3, time.Minute); refused != "rate" {
		t.Fatalf("fourth of 3 a minute: %q, want rate", refused)
	}
	// A dead replica's slot frees itself after hold.
	if _, refused, _ := a.Acquire(ctx, "d:hold.test", 1, 100, 200*time.Millisecond); refused != "" {
		t.Fatal(refused)
	}
	time.Sleep(300 * time.Millisecond)
	if _, refused, _ := b.Acquire(ctx, "d:hold.test", 1, 100, time.Minute); refused != "" {
		t.Fatalf("slot of a dead holder: %q", refused)
	}
}

// TestSharedRidesOutARedisOutage: Redis killed and restarted; nothing
// fails for the caller, it falls back and resumes sharing by itself.
func TestSharedRidesOutARedisOutage(t *testing.T) {
	srv := testredis.Start(t)
	var mu sync.Mutex
	var ups []bool
	m, _ := cache.NewMemory(100, nil, cache.Hooks{})
	s := cache.NewShared(func() (*cache.Redis, error) { return newRedis(t, srv.URL()), nil }, m,
		cache.SharedHooks{Up: func(up bool) { mu.Lock(); ups = append(ups, up); mu.Unlock() }}, nil)
	defer s.Close()
	ctx := context.Background()
	s.Set(ctx, "a:before@x.test", cache.Entry{Kind: "exists"}, time.Hour)
	srv.Stop()
	for i := range 20 {
		start := time.Now()
		if err := s.Set(ctx, fmt.Sprintf("a:during%d@x.test", i), cache.Entry{Kind: "exists"}, time.Hour); err != nil {
			t.Fatalf("Set during the outage: %v", err)
		}
		if _, _, ok, err := s.Get(ctx, "a:before@x.test"); !ok || err != nil {
			t.Fatalf("Get during the outage: ok=%v err=%v (the local copy must answer)", ok, err)
		}
		if d := time.Since(start); d > 500*time.Millisecond {
			t.Fatalf("a call took %v during the outage", d)
		}
	}
	if s.Up() {
		t.Fatal("still up with Redis dead")
	}
	srv.Restart()
	deadline := time.Now().Add(3 * time.Second)
	for !s.Up() {
		if time.Now().After(deadline) {
			t.Fatal("sharing did not resume within 3s of Redis coming back")
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.Set(ctx, "a:after@x.test", cache.Entry{Kind: "exists"}, time.Hour)
	if !s.Up() {
		t.Fatalf("down again after a write following recovery; transitions %v", ups)
	}
	other := newRedis(t, srv.URL())
	if _, _, ok, err := other.Get(ctx, "a:after@x.test"); !ok || err != nil {
		t.Fatalf("write after recovery not shared: %v %v", ok, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(ups) != "[true false true]" {
		t.Errorf("health transitions %v, want [true false true]", ups)
	}
}

func TestSharedStartsWithRedisDown(t *testing.T) {
	srv := testredis.Start(t)
	srv.Stop()
	m, _ := cache.NewMemory(100, nil, cache.Hooks{})
	s := cache.NewShared(func() (*cache.Redis, error) {
		return cache.NewRedis(cache.RedisOptions{URL: srv.URL(), Timeout: 100 * time.Millisecond})
	}, m, cache.SharedHooks{}, nil)
	defer s.Close()
	if s.Up() {
		t.Fatal("up without Redis")
	}
	if err := s.Set(context.Background(), "a:x@y.test", cache.Entry{Kind: "exists"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	srv.Restart()
	deadline := time.Now().Add(3 * time.Second)
	for !s.Up() {
		if time.Now().After(deadline) {
			t.Fatal("did not connect once Redis started")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// BenchmarkNearCacheMemory reports what the near-cache holds per entry:
// 100,000 callout entries read once each (the bound is near_cache_bytes).
func BenchmarkNearCacheMemory(b *testing.B) {
	srv := testredis.Start(b)
	r, err := cache.NewRedis(cache.RedisOptions{URL: srv.URL(), Timeout: time.Second, NearCacheBytes: 256 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	ctx := context.Background()
	const n = 100000
	raw, _ := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{srv.Addr}, DisableCache: true})
	defer raw.Close()
	for i := 0; i < n; i += 1000 {
		var cmds rueidis.Commands
		for j := i; j < i+1000; j++ {
			cmds = append(cmds, raw.B().Set().Key(fmt.Sprintf("{a:user%07d@mail%d.example.com}", j, j%5000)).Value("1|exists|250|2.1.5|1700000000").Ex(time.Hour).Build())
		}
		raw.DoMulti(ctx, cmds...)
	}
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for j := range n {
			if _, _, ok, err := r.Get(ctx, fmt.Sprintf("a:user%07d@mail%d.example.com", j, j%5000)); !ok || err != nil {
				b.Fatalf("get %d: %v %v", j, ok, err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/n, "B/entry")
	}
}

// TestRedisCluster runs the store, leases, limits and scans on a
// three-node Redis Cluster on loopback: every key of one address, limit
// or lease lands in one hash slot.
func TestRedisCluster(t *testing.T) {
	var nodes []*testredis.Server
	for range 3 {
		nodes = append(nodes, testredis.Start(t, "--cluster-enabled", "yes", "--cluster-node-timeout", "2000",
			"--cluster-config-file", fmt.Sprintf("nodes-%d.conf", time.Now().UnixNano())))
	}
	args := []string{"--cluster", "create"}
	for _, n := range nodes {
		args = append(args, n.Addr)
	}
	args = append(args, "--cluster-yes")
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	url := "redis://" + nodes[0].Addr + "?addr=" + nodes[1].Addr + "&addr=" + nodes[2].Addr
	var r *cache.Redis
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		if r, err = cache.NewRedis(cache.RedisOptions{URL: url, KeyPrefix: "c:", Timeout: time.Second}); err == nil {
			if err = r.Set(context.Background(), "a:probe@c.test", cache.Entry{Kind: "exists"}, time.Minute); err == nil {
				break
			}
			r.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster not ready: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	defer r.Close()
	ctx := context.Background()
	for i := range 50 { // spread over the slots of all three nodes
		if err := r.Set(ctx, fmt.Sprintf("a:u%d@spread.test", i), cache.Entry{Kind: "exists", Code: 250}, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	keys, err := r.Scan(ctx, "a:*@spread.test", 1000)
	if err != nil || len(keys) != 50 {
		t.Fatalf("scan over the cluster: %d keys, %v", len(keys), err)
	}
	for i := range 50 {
		if _, _, ok, err := r.Get(ctx, fmt.Sprintf("a:u%d@spread.test", i)); !ok || err != nil {
			t.Fatalf("get %d: %v %v", i, ok, err)
		}
	}
	if _, ok, err := r.Lease(ctx, "a:l@c.test", time.Minute); !ok || err != nil {
		t.Fatalf("lease: %v %v", ok, err)
	}
	release, refused, err := r.Acquire(ctx, "d:c.test", 1, 10, time.Minute) // a two-key script in one slot
	if err != nil || refused != "" {
		t.Fatalf("acquire: %q %v", refused, err)
	}
	if _, refused, _ := r.Acquire(ctx, "d:c.test", 1, 10, time.Minute); refused != "concurrency" {
		t.Fatalf("second acquire: %q", refused)
	}
	release()
	if n, err := r.Delete(ctx, "a:u1@spread.test", "a:u2@spread.test"); n != 2 || err != nil {
		t.Fatalf("delete across slots: %d %v", n, err)
	}
}

// TestSharedFallsBackWhenRedisIsSlow: a Redis that stops answering (DEBUG
// SLEEP) costs a caller at most the operation timeout, once.
func TestSharedFallsBackWhenRedisIsSlow(t *testing.T) {
	srv := testredis.Start(t, "--enable-debug-command", "yes")
	m, _ := cache.NewMemory(100, nil, cache.Hooks{})
	s := cache.NewShared(func() (*cache.Redis, error) {
		return cache.NewRedis(cache.RedisOptions{URL: srv.URL(), Timeout: 50 * time.Millisecond})
	}, m, cache.SharedHooks{}, nil)
	defer s.Close()
	ctx := context.Background()
	s.Set(ctx, "a:known@slow.test", cache.Entry{Kind: "exists"}, time.Hour)
	raw, _ := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{srv.Addr}, DisableCache: true})
	defer raw.Close()
	go raw.Do(ctx, raw.B().Arbitrary("DEBUG", "SLEEP").Args("1").Build())
	time.Sleep(50 * time.Millisecond)
	for i := range 5 {
		start := time.Now()
		_, _, _, err := s.Get(ctx, fmt.Sprintf("a:new%d@slow.test", i))
		if d := time.Since(start); err != nil || d > 200*time.Millisecond {
			t.Fatalf("get %d with Redis asleep: %v after %v", i, err, d)
		}
	}
	if _, _, ok, _ := s.Get(ctx, "a:known@slow.test"); !ok || s.Up() {
		t.Fatalf("while Redis sleeps: known=%v up=%v; want the local copy and up=false", ok, s.Up())
	}
}

func TestRedisACLUser(t *testing.T) {
	srv := testredis.Start(t, "--user", "default", "off", "--user", "senderguard", "on", ">fleet-pw", "~*", "&*", "+@all")
	ok, err := cache.NewRedis(cache.RedisOptions{URL: srv.URL(), Username: "senderguard", Password: "fleet-pw", Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer ok.Close()
	if err := ok.Set(context.Background(), "a:acl@x.test", cache.Entry{Kind: "exists"}, time.Minute); err != nil {
		t.Fatalf("ACL user: %v", err)
	}
	if bad, err := cache.NewRedis(cache.RedisOptions{URL: srv.URL(), Username: "senderguard", Password: "wrong", Timeout: time.Second}); err == nil {
		defer bad.Close()
		if err := bad.Set(context.Background(), "a:acl@x.test", cache.Entry{Kind: "exists"}, time.Minute); err == nil {
			t.Fatal("wrong password accepted")
		}
	}
}
