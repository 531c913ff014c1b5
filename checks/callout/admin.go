package callout

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/senderguard/senderguard/cache"
)

// Shown is one cached fact that applies to a query of "cache show".
type Shown struct {
	Key   string        `json:"key"`
	Entry cache.Entry   `json:"entry"`
	Left  time.Duration `json:"left"`
}

// String is one line: key, kind, decisive reply, age and time left.
func (s Shown) String() string {
	reply := "-"
	if s.Entry.Code != 0 {
		reply = fmt.Sprint(s.Entry.Code)
		if s.Entry.Enhanced != "" {
			reply += " " + s.Entry.Enhanced
		}
	}
	age := "-"
	if s.Entry.Stored > 0 {
		age = time.Since(time.Unix(s.Entry.Stored, 0)).Round(time.Second).String()
	}
	return fmt.Sprintf("%s\t%s\t%s\tage %s\tleft %s", s.Key, s.Entry.Kind, reply, age, s.Left.Round(time.Second))
}

// scanner is a store that can list its keys (Redis); the in-memory store
// keeps only hashes of its keys.
type scanner interface {
	Scan(ctx context.Context, match string, limit int) ([]string, error)
}

// keysFor are the store keys that apply to q, an address or a domain (or
// mail host name): the address entry and its domain's; for a domain, its
// entry, a mail host breaker of that name and, where the store can list
// them, the domain's address entries.
func keysFor(ctx context.Context, store cache.Store, q string) ([]string, error) {
	if strings.Contains(q, "@") {
		a, err := ParseAddress(q)
		if err != nil {
			return nil, err
		}
		return []string{addressKey(CacheKey(a)), domainKey(a.Domain)}, nil
	}
	a, err := ParseAddress("postmaster@" + strings.TrimSuffix(q, "."))
	if err != nil {
		return nil, fmt.Errorf("%q is neither an address nor a domain", q)
	}
	keys := []string{domainKey(a.Domain), hostKey(a.Domain)}
	if s, ok := store.(scanner); ok {
		more, err := s.Scan(ctx, domainAddressesPattern(a.Domain), 10000)
		if err != nil {
			return nil, err
		}
		keys = append(keys, more...)
	}
	return keys, nil
}

// Lookup lists the live entries of store that apply to q.
func Lookup(ctx context.Context, store cache.Store, q string) ([]Shown, error) {
	keys, err := keysFor(ctx, store, q)
	if err != nil {
		return nil, err
	}
	var out []Shown
	for _, k := range keys {
		e, left, ok, err := store.Get(ctx, k)
		if err != nil {
			return out, err
		}
		if ok {
			out = append(out, Shown{Key: k, Entry: e, Left: left})
		}
	}
	return out, nil
}

// Forget removes the entries that apply to q, so the next message probes
// again; it returns how many there were.
func Forget(ctx context.Context, store cache.Store, q string) (int, error) {
	keys, err := keysFor(ctx, store, q)
	if err != nil {
		return 0, err
	}
	return store.Delete(ctx, keys...)
}

// Store is the verifier's store, for cache show and forget.
func (v *Verifier) Store() cache.Store { return v.store }
