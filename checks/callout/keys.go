package callout

// The store keys of what the callout learns, in one place: the cached
// prober, the fleet's leases and limits, and "senderguard cache" all
// build them here, so a scan cannot drift from what is written.
const (
	kindBreaker = "breaker" // a host or domain that refused our probes
)

// addressKey is an address's entry (and its lease and singleflight
// key); key is CacheKey of the address.
func addressKey(key string) string { return "a:" + key }

// domainKey holds a domain's catch-all or breaker mark, and names its
// fleet-wide per-domain limits.
func domainKey(domain string) string { return "d:" + domain }

// hostKey holds a mail host's breaker mark.
func hostKey(host string) string { return "h:" + host }

// hostAddrKey names the fleet-wide limits of one mail host address.
func hostAddrKey(ip string) string { return "ip:" + ip }

// globalKey names the fleet-wide global probe rate.
const globalKey = "global"

// domainAddressesPattern matches, in a store scan, every address entry of
// a domain.
func domainAddressesPattern(domain string) string { return addressKey("*@" + domain) }
