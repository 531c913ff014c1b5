package main

import (
	"fmt"
	"time"

	"github.com/senderguard/senderguard/cache"
	"github.com/senderguard/senderguard/checks/resolver"
	"github.com/senderguard/senderguard/config"
)

func defaultDNS() config.DNS { return config.Default().DNS }

// newQuerier builds the cached stub resolver over servers (or
// /etc/resolv.conf).
func newQuerier(servers []string, c config.DNS, m *dnsHooks) (*resolver.Cached, error) {
	if len(servers) == 0 {
		servers = c.Servers
	}
	if len(servers) == 0 {
		s, err := resolver.ServersFromResolvConf("/etc/resolv.conf")
		if err != nil {
			return nil, fmt.Errorf("no -dns servers given and %v", err)
		}
		servers = s
	}
	stub := &resolver.Stub{Servers: servers, Timeout: c.Timeout.D(), Attempts: c.Attempts}
	var hooks cache.Hooks
	if m != nil {
		stub.OnQuery = m.onQuery
		hooks = m.cache
	}
	return resolver.NewCached(stub, resolver.CacheConfig{
		Size: c.CacheSize, MinTTL: c.MinTTL.D(), MaxTTL: c.MaxTTL.D(), NegativeTTL: c.NegativeTTL.D(),
	}, nil, hooks)
}

// dnsHooks feed resolver events to metrics.
type dnsHooks struct {
	onQuery func(qtype uint16, outcome string, d time.Duration)
	cache   cache.Hooks
}
