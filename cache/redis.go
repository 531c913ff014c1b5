package cache

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/senderguard/senderguard/internal/smtpstatus"
)

// RedisOptions say how to reach the Redis several replicas share.
type RedisOptions struct {
	URL       string // redis://, rediss://, unix://; ?addr= more nodes (Cluster); ?master_set= (Sentinel)
	KeyPrefix string // every key starts with it, so two fleets can share one Redis
	// Timeout bounds every operation, well inside a stage budget.
	Timeout time.Duration
	// NearCacheBytes bounds the local copy of what was read (RESP3
	// client-side caching, kept honest by Redis's invalidations).
	NearCacheBytes int
	// NearCacheTTL bounds how long a local copy is trusted without an
	// invalidation (a safety net; Redis invalidates on every write).
	NearCacheTTL time.Duration
	Username     string
	Password     string
	CAFile       string // rediss: CA bundle; empty: the system's
	CertFile     string // rediss: client certificate
	KeyFile      string
}

// Redis is the Store several replicas share, with leases and fleet-wide
// limits (the callout verifier's fleet seam). Its reads go through a near-cache that Redis keeps
// honest (RESP3 client tracking), so a warm replica asks Redis nothing
// for keys it has seen.
type Redis struct {
	c       rueidis.Client
	prefix  string
	timeout time.Duration
	nearTTL time.Duration
	id      string // this replica, in leases and limiter slots
	// recent holds this replica's writes for a moment: Redis's
	// invalidation of the near-cache arrives asynchronously, and a replica
	// must read what it just wrote.
	recent   *TTL[string, Entry]
	deadline atomic.Pointer[opDeadline]
}

// recentFor is how long a replica trusts its own write over a miss from
// the near-cache; far more than an invalidation takes to arrive.
const recentFor = 2 * time.Second

// NewRedis connects to o.URL.
func NewRedis(o RedisOptions) (*Redis, error) {
	opt, err := rueidis.ParseURL(o.URL)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL, which may hold a password
		}
		return nil, fmt.Errorf("redis url: %w", err)
	}
	if o.Username != "" {
		opt.Username = o.Username
	}
	if o.Password != "" {
		opt.Password = o.Password
	}
	if opt.TLSConfig != nil {
		if err := tlsFiles(opt.TLSConfig, o); err != nil {
			return nil, err
		}
	} else if o.CAFile != "" || o.CertFile != "" {
		return nil, errors.New("redis: TLS files given for a URL that is not rediss://")
	}
	if o.Timeout <= 0 {
		o.Timeout = 50 * time.Millisecond
	}
	if o.NearCacheBytes <= 0 {
		o.NearCacheBytes = 64 << 20
	}
	if o.NearCacheTTL <= 0 {
		o.NearCacheTTL = time.Hour
	}
	opt.CacheSizeEachConn = o.NearCacheBytes
	// One pipelined connection per node: auto-pipelining carries our load,
	// and after an outage the health check's ping reconnects the very
	// connection the next command uses (with several, a stale one answered
	// the first write after recovery with EOF).
	opt.PipelineMultiplex = -1
	opt.Dialer.Timeout = max(o.Timeout, 200*time.Millisecond)
	opt.ConnWriteTimeout = max(o.Timeout, 200*time.Millisecond)
	// A dead Redis must not hold anyone: each call is bounded by its
	// context (rueidis retries only reads, within that bound).
	c, err := rueidis.NewClient(opt)
	if err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	b := make([]byte, 8)
	rand.Read(b)
	recent, _ := NewTTL[string, Entry](10000, nil, Hooks{})
	return &Redis{c: c, prefix: o.KeyPrefix, timeout: o.Timeout, nearTTL: o.NearCacheTTL, id: hex.EncodeToString(b), recent: recent}, nil
}

func tlsFiles(cfg *tls.Config, o RedisOptions) error {
	cfg.MinVersion = tls.VersionTLS12
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return fmt.Errorf("redis CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("redis CA file %s: no certificate", o.CAFile)
		}
		cfg.RootCAs = pool
	}
	if o.CertFile != "" || o.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return fmt.Errorf("redis client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return nil
}

// Close ends the connections.
func (r *Redis) Close() { r.c.Close() }

// key is the Redis key of a store key. The braces make it a Cluster hash
// tag: an entry and its lease share a slot, and so do a limiter's two
// keys (concurrency and rate), so each script touches one slot.
func (r *Redis) key(k string) string { return r.prefix + "{" + k + "}" }

func (r *Redis) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.timeout)
}

// opDeadline is a context that many reads share: its deadline is between
// half the timeout and the timeout from now. A read served by the
// near-cache then costs no timer of its own (a third of a hit's time).
type opDeadline struct {
	ctx context.Context
	// cancel is never needed: the context ends at its deadline, within
	// the timeout, and in-flight reads may still be using it.
	cancel context.CancelFunc
	renew  int64 // unix nanoseconds after which a new one is made
}

// readCtx bounds a read by the shared deadline, or by its own when the
// caller's deadline comes sooner. A caller cancelled otherwise is noticed
// within the timeout.
func (r *Redis) readCtx(parent context.Context) (context.Context, context.CancelFunc) {
	now := time.Now()
	if dl, ok := parent.Deadline(); ok && dl.Before(now.Add(r.timeout)) {
		return context.WithTimeout(parent, r.timeout)
	}
	d := r.deadline.Load()
	if d == nil || now.UnixNano() > d.renew {
		ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
		d = &opDeadline{ctx: ctx, cancel: cancel, renew: now.Add(r.timeout / 2).UnixNano()}
		r.deadline.Store(d)
	}
	return d.ctx, func() {}
}

// ErrBadValue marks a value in Redis that is not ours: another program,
// an old version, a hostile writer. Callers treat it as a miss.
var ErrBadValue = errors.New("unparseable value in redis")

const maxValue = 256

// encodeEntry writes "1|kind|code|enhanced|stored", then "|rN" when the
// entry carries a rules version (older replicas read such values as not
// theirs, a miss, and probe again: harmless during a rolling upgrade).
func encodeEntry(e Entry) string {
	s := "1|" + e.Kind + "|" + strconv.Itoa(int(e.Code)) + "|" + e.Enhanced + "|" + strconv.FormatInt(e.Stored, 10)
	if e.Rules != 0 {
		s += "|r" + strconv.Itoa(int(e.Rules))
	}
	return s
}

func decodeEntry(s string) (Entry, error) {
	if len(s) > maxValue {
		return Entry{}, fmt.Errorf("%w: %d bytes", ErrBadValue, len(s))
	}
	var f [5]string
	rest := s
	for i := range 4 {
		var ok bool
		if f[i], rest, ok = strings.Cut(rest, "|"); !ok {
			return Entry{}, fmt.Errorf("%w: %q", ErrBadValue, s)
		}
	}
	var versioned bool
	f[4], rest, versioned = strings.Cut(rest, "|")
	var rules uint64
	if versioned {
		var err error
		if rules, err = strconv.ParseUint(strings.TrimPrefix(rest, "r"), 10, 8); err != nil || !strings.HasPrefix(rest, "r") || rules == 0 {
			return Entry{}, fmt.Errorf("%w: %q", ErrBadValue, s)
		}
	}
	if f[0] != "1" {
		return Entry{}, fmt.Errorf("%w: %q", ErrBadValue, s)
	}
	code, err1 := strconv.ParseUint(f[2], 10, 16)
	stored, err2 := strconv.ParseInt(f[4], 10, 64)
	if err1 != nil || err2 != nil || !validKind(f[1]) || !validEnhanced(f[3]) {
		return Entry{}, fmt.Errorf("%w: %q", ErrBadValue, s)
	}
	return Entry{Kind: f[1], Code: uint16(code), Enhanced: f[3], Stored: stored, Rules: uint8(rules)}, nil
}

func validKind(k string) bool {
	if k == "" || len(k) > 32 {
		return false
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; !(c >= 'a' && c <= 'z') && c != '-' {
			return false
		}
	}
	return true
}

func validEnhanced(s string) bool {
	_, ok := smtpstatus.Parse(s)
	return s == "" || ok
}

// Get reads key through the near-cache: a hit costs no round trip.
func (r *Redis) Get(ctx context.Context, key string) (Entry, time.Duration, bool, error) {
	ctx, cancel := r.readCtx(ctx)
	defer cancel()
	// GETRANGE, not GET: a hostile writer's 512-MB value costs us 257
	// bytes, and is then refused as too long.
	resp := r.c.DoCache(ctx, r.c.B().Getrange().Key(r.key(key)).Start(0).End(maxValue).Cache(), r.nearTTL)
	return r.entryOf(key, resp)
}

// GetFresh reads key from Redis itself, past the near-cache: the
// near-cache may still hold a miss whose invalidation is on its way, and
// a replica that has just taken an address's lease must see what the
// lease's previous holder stored before it released it.
func (r *Redis) GetFresh(ctx context.Context, key string) (Entry, time.Duration, bool, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	k := r.key(key)
	resps := r.c.DoMulti(ctx, r.c.B().Getrange().Key(k).Start(0).End(maxValue).Build(), r.c.B().Pttl().Key(k).Build())
	e, _, ok, err := r.entryOf(key, resps[0])
	if err != nil || !ok {
		return e, 0, ok, err
	}
	ms, err := resps[1].AsInt64()
	if err != nil {
		return Entry{}, 0, false, err
	}
	return e, time.Duration(ms) * time.Millisecond, true, nil
}

func (r *Redis) entryOf(key string, resp rueidis.RedisResult) (Entry, time.Duration, bool, error) {
	s, err := resp.ToString()
	if err == nil && s == "" {
		err = rueidis.Nil // GETRANGE of a missing key is ""
	}
	if rueidis.IsRedisNil(err) {
		if e, left, ok := r.recent.Get(key); ok {
			return e, left, true, nil
		}
		return Entry{}, 0, false, nil
	}
	if err != nil {
		return Entry{}, 0, false, err
	}
	e, err := decodeEntry(s)
	if err != nil {
		return Entry{}, 0, false, err
	}
	left := time.Duration(resp.CachePTTL()) * time.Millisecond
	if left <= 0 {
		left = time.Duration(resp.CacheTTL()) * time.Second
	}
	return e, left, true, nil
}

// Set writes key with its own expiry, held by Redis.
func (r *Redis) Set(ctx context.Context, key string, e Entry, ttl time.Duration) error {
	if ttl <= 0 {
		return nil
	}
	if !validKind(e.Kind) || !validEnhanced(e.Enhanced) {
		return fmt.Errorf("cache: bad entry %+v", e)
	}
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	if err := r.c.Do(ctx, r.c.B().Set().Key(r.key(key)).Value(encodeEntry(e)).Px(ttl).Build()).Error(); err != nil {
		return err
	}
	r.recent.Add(key, e, min(ttl, recentFor))
	return nil
}

// Delete removes keys, fleet-wide.
func (r *Redis) Delete(ctx context.Context, keys ...string) (int, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	n := 0
	for _, k := range keys { // one key a command: keys of different slots
		r.recent.Remove(k)
		v, err := r.c.Do(ctx, r.c.B().Del().Key(r.key(k)).Build()).AsInt64()
		if err != nil {
			return n, err
		}
		n += int(v)
	}
	return n, nil
}

// Ping checks that Redis answers.
func (r *Redis) Ping(ctx context.Context) error {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	return r.c.Do(ctx, r.c.B().Ping().Build()).Error()
}

// Lease takes key for ttl if no replica holds it: the one probe of an
// address per fleet. A replica that dies holding it blocks the address
// for ttl at most.
func (r *Redis) Lease(ctx context.Context, key string, ttl time.Duration) (func(), bool, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	k := r.key(key) + ":lease"
	err := r.c.Do(ctx, r.c.B().Set().Key(k).Value(r.id).Nx().Px(ttl).Build()).Error()
	if rueidis.IsRedisNil(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	release := func() {
		ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
		defer cancel()
		releaseLease.Exec(ctx, r.c, []string{k}, []string{r.id})
	}
	return release, true, nil
}

// releaseLease deletes a lease only if we still hold it.
var releaseLease = rueidis.NewLuaScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`)

// acquireScript takes a concurrency slot (a sorted set of holders whose
// scores are their expiry) and one unit of a GCRA rate (KEYS[2] holds the
// theoretical arrival time), both or neither. Returns 0, or 1 when the
// concurrency bound refused, 2 when the rate did.
// ARGV: now (ms), hold (ms), concurrency (0: none), rate per minute, holder.
var acquireScript = rueidis.NewLuaScript(`
local now, hold, conc, rate = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  if redis.call('ZCARD', KEYS[1]) >= conc then return 1 end
end
local interval = 60000 / rate
local tat = tonumber(redis.call('GET', KEYS[2]) or '0')
if tat < now then tat = now end
local new = tat + interval
if new - now > 60000 then return 2 end
redis.call('SET', KEYS[2], tostring(new), 'PX', math.ceil(new - now))
if conc > 0 then
  redis.call('ZADD', KEYS[1], now + hold, ARGV[5])
  redis.call('PEXPIRE', KEYS[1], hold)
end
return 0`)

var releaseScript = rueidis.NewLuaScript(`return redis.call('ZREM', KEYS[1], ARGV[1])`)

// Acquire takes, fleet-wide, one of concurrency slots of key (held at most
// hold, so a dead replica's slot frees itself; 0: no concurrency bound)
// and one unit of rate per minute (GCRA: at most rate in any minute).
// refused is "concurrency" or "rate" when a bound refused.
func (r *Redis) Acquire(ctx context.Context, key string, concurrency, rate int, hold time.Duration) (release func(), refused string, err error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	base := r.key("lim:" + key)
	holder := r.id + ":" + strconv.FormatInt(time.Now().UnixNano(), 36)
	now := time.Now().UnixMilli()
	v, err := acquireScript.Exec(ctx, r.c, []string{base + ":c", base + ":r"},
		[]string{strconv.FormatInt(now, 10), strconv.FormatInt(hold.Milliseconds(), 10), strconv.Itoa(concurrency), strconv.Itoa(max(rate, 1)), holder}).AsInt64()
	if err != nil {
		return nil, "", err
	}
	switch v {
	case 1:
		return nil, "concurrency", nil
	case 2:
		return nil, "rate", nil
	}
	return func() {
		if concurrency <= 0 {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
		defer cancel()
		releaseScript.Exec(ctx, r.c, []string{base + ":c"}, []string{holder})
	}, "", nil
}

// Scan lists the store keys that start with prefix (cache show and forget
// of a domain's addresses); at most limit.
func (r *Redis) Scan(ctx context.Context, match string, limit int) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*r.timeout+time.Second)
	defer cancel()
	var out []string
	pattern := r.prefix + "{" + match + "}"
	for _, node := range r.c.Nodes() {
		var cursor uint64
		for {
			e, err := node.Do(ctx, node.B().Scan().Cursor(cursor).Match(pattern).Count(1000).Build()).AsScanEntry()
			if err != nil {
				return out, err
			}
			for _, k := range e.Elements {
				if !strings.HasSuffix(k, "}") {
					continue // leases and limiter keys
				}
				out = append(out, strings.TrimSuffix(strings.TrimPrefix(k, r.prefix+"{"), "}"))
				if len(out) >= limit {
					return out, nil
				}
			}
			if cursor = e.Cursor; cursor == 0 {
				break
			}
		}
	}
	return out, nil
}
