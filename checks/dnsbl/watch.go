package dnsbl

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/senderguard/senderguard/cache"
	"github.com/senderguard/senderguard/checks/resolver"
)

// WatchConfig says what a Watch looks up and how often.
type WatchConfig struct {
	Zones    []string
	Interval time.Duration // 0 means 10m
	// Addresses lists the addresses to watch at each round: the probes'
	// configured sources, the public address, or the ones recent probe
	// connections used. A listed address is watched until it is clean,
	// whether or not it is still in this list.
	Addresses func() []netip.Addr
	// Pause: while any address is listed, Paused says so.
	Pause bool
	// LookupTimeout bounds one lookup (0 means 5s).
	LookupTimeout time.Duration
}

// WatchHooks report the state for metrics; nil fields report nowhere.
type WatchHooks struct {
	// Listed is called after each round for every address and zone whose
	// state is known: listed or not.
	Listed func(addr, zone string, listed bool)
	// Paused is called after each round with the pause state.
	Paused func(paused bool)
}

// Watch looks the prober's addresses up on the blocklists at start and
// every interval, and pauses the probes while one is listed. It keeps
// what it learned in a store: with a store the fleet shares, a lookup
// younger than the interval made by any replica serves all of them.
type Watch struct {
	q     resolver.Querier
	store cache.Store
	cfg   WatchConfig
	hooks WatchHooks
	log   *slog.Logger
	now   func() time.Time

	mu     sync.Mutex
	state  map[key]Result // the last known result of each address and zone
	listed []Result       // the listings, sorted; non-empty pauses
	paused bool
}

type key struct {
	addr netip.Addr
	zone string
}

// NewWatch returns a watch; Run starts it.
func NewWatch(q resolver.Querier, store cache.Store, cfg WatchConfig, hooks WatchHooks, log *slog.Logger) *Watch {
	if cfg.Interval <= 0 {
		cfg.Interval = 10 * time.Minute
	}
	if cfg.LookupTimeout <= 0 {
		cfg.LookupTimeout = 5 * time.Second
	}
	if hooks.Listed == nil {
		hooks.Listed = func(string, string, bool) {}
	}
	if hooks.Paused == nil {
		hooks.Paused = func(bool) {}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Watch{q: q, store: store, cfg: cfg, hooks: hooks, log: log, now: time.Now, state: map[key]Result{}}
}

// Run checks every interval until ctx ends; the check at start is the
// caller's (Check), so that no probe leaves before it.
func (w *Watch) Run(ctx context.Context) {
	t := time.NewTicker(w.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		w.Check(ctx)
	}
}

// Paused says whether probes must wait, and why (the listings).
func (w *Watch) Paused() (string, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.paused {
		return "", false
	}
	why := make([]string, len(w.listed))
	for i, r := range w.listed {
		why[i] = r.Address.String() + " listed on " + r.Zone
	}
	return strings.Join(why, ", "), true
}

// Listings returns the current listings.
func (w *Watch) Listings() []Result {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.listed)
}

// Check runs one round: every watched address on every zone, each from
// the store when a replica looked it up within the interval, else by a
// lookup whose result it stores.
func (w *Watch) Check(ctx context.Context) {
	addrs := w.watched()
	results := make([]Result, 0, len(addrs)*len(w.cfg.Zones))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, a := range addrs {
		for _, z := range w.cfg.Zones {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := w.one(ctx, a, z)
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	w.update(results)
}

// watched is the configured addresses and every address still listed.
func (w *Watch) watched() []netip.Addr {
	var addrs []netip.Addr
	if w.cfg.Addresses != nil {
		addrs = w.cfg.Addresses()
	}
	w.mu.Lock()
	for _, r := range w.listed {
		addrs = append(addrs, r.Address)
	}
	w.mu.Unlock()
	slices.SortFunc(addrs, func(x, y netip.Addr) int { return x.Compare(y) })
	return slices.Compact(addrs)
}

// storeKey names a result in the (possibly shared) store.
func storeKey(a netip.Addr, zone string) string { return "bl:" + zone + ":" + a.String() }

// one is the result for a on zone: a replica's recent lookup from the
// store, else a lookup of our own.
func (w *Watch) one(ctx context.Context, a netip.Addr, zone string) Result {
	k := storeKey(a, zone)
	if e, _, ok, err := w.store.Get(ctx, k); err == nil && ok && w.now().Unix()-e.Stored < int64(w.cfg.Interval*9/10/time.Second) {
		switch st := Status(e.Kind); st {
		case Clean, Listed, Refused, Odd:
			return Result{Address: a, Zone: zone, Status: st}
		}
	}
	lctx, cancel := context.WithTimeout(ctx, w.cfg.LookupTimeout)
	defer cancel()
	r := Lookup(lctx, w.q, a, zone)
	if r.Status != Failed {
		sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer scancel()
		if err := w.store.Set(sctx, k, cache.Entry{Kind: string(r.Status), Stored: w.now().Unix()}, 2*w.cfg.Interval); err != nil {
			w.log.Warn("blocklist watch: store write failed", "key", k, "err", err)
		}
	}
	return r
}

// update takes in a round's results: a failed lookup keeps what was
// known; a change of pause state is one warning.
func (w *Watch) update(results []Result) {
	w.mu.Lock()
	defer w.mu.Unlock()
	// The state is this round's: an address no longer watched (and not
	// listed) is forgotten; a failed lookup keeps what was known.
	state := make(map[key]Result, len(results))
	for _, r := range results {
		k := key{r.Address, r.Zone}
		prev, known := w.state[k]
		switch r.Status {
		case Failed:
			w.log.Warn("blocklist watch: lookup failed; keeping the last known state", "address", r.Address.String(), "list", r.Zone, "err", r.Err)
			if known {
				state[k] = prev
			}
			continue
		case Refused:
			w.log.Warn("blocklist watch: the list refused our query (a public or shared resolver, or over its free quota): not a listing; use a resolver of your own for this list",
				"address", r.Address.String(), "list", r.Zone, "answer", r.Reason())
		case Odd:
			w.log.Warn("blocklist watch: answer outside 127.0.0.0/8 (a resolver that rewrites NXDOMAIN?): not a listing",
				"address", r.Address.String(), "list", r.Zone, "answer", r.Reason())
		case Listed:
			if !known || prev.Status != Listed {
				w.log.Warn("blocklist watch: probe address listed", "address", r.Address.String(), "list", r.Zone, "answer", r.Reason())
			}
		case Clean:
			if known && prev.Status == Listed {
				w.log.Info("blocklist watch: probe address no longer listed", "address", r.Address.String(), "list", r.Zone)
			}
		}
		state[k] = r
	}
	w.state = state
	w.listed = w.listed[:0]
	for _, r := range w.state {
		if r.Status == Listed {
			w.listed = append(w.listed, r)
		}
		w.hooks.Listed(r.Address.String(), r.Zone, r.Status == Listed)
	}
	slices.SortFunc(w.listed, func(x, y Result) int {
		if c := x.Address.Compare(y.Address); c != 0 {
			return c
		}
		return strings.Compare(x.Zone, y.Zone)
	})
	paused := w.cfg.Pause && len(w.listed) > 0
	if paused != w.paused {
		if paused {
			w.log.Warn("callout: probes paused while a probe address is listed", "listings", len(w.listed))
		} else {
			w.log.Warn("callout: probes resumed: no probe address is listed")
		}
	}
	w.paused = paused
	w.hooks.Paused(paused)
}
