package config

import "reflect"

// restartOnly are the settings a reload cannot change: they shape
// listeners, connection bounds, caches and clients made at start. Each is
// named as in the config file.
var restartOnly = []struct {
	name string
	get  func(c *Config) any
}{
	{"listen", func(c *Config) any { return c.Listen }},
	{"listen_mode", func(c *Config) any { return c.ListenMode }},
	{"listen_group", func(c *Config) any { return c.ListenGroup }},
	{"metrics_listen", func(c *Config) any { return c.MetricsListen }},
	{"metrics_web_config", func(c *Config) any { return c.MetricsWebConfig }},
	{"milter_max_connections", func(c *Config) any { return c.MilterMaxConnections }},
	{"milter_idle_timeout", func(c *Config) any { return c.MilterIdleTimeout }},
	{"admin_listen", func(c *Config) any { return c.AdminListen }},
	{"log.format", func(c *Config) any { return c.Log.Format }},
	{"dns", func(c *Config) any { return c.DNS }},
	{"spf.void_limit", func(c *Config) any { return c.SPF.VoidLimit }},
	{"callout.cache_size", func(c *Config) any { return c.Callout.CacheSize }},
	// The prober, its limits, source addresses and blocklist watch are
	// built at start; a reload applies only enabled, probe_on and
	// skip_domains (the filter reads them).
	{"callout (prober settings)", func(c *Config) any {
		co := c.Callout
		co.Enabled, co.ProbeOn, co.SkipDomains, co.CacheSize = false, nil, nil, 0
		return co
	}},
	{"redis", func(c *Config) any { return c.Redis }},
}

// RestartNeeded names the settings that differ between old and new and
// take effect only on restart.
func RestartNeeded(old, new *Config) []string {
	var out []string
	for _, s := range restartOnly {
		if !reflect.DeepEqual(s.get(old), s.get(new)) {
			out = append(out, s.name)
		}
	}
	return out
}
