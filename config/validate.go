package config

import (
	"encoding"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// FieldError is a validation problem at a dotted key path.
type FieldError struct {
	Path   string
	Reason string
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Reason }

func fieldErr(path, format string, args ...any) error {
	return &FieldError{Path: path, Reason: fmt.Sprintf(format, args...)}
}

// scalarYAML decodes a scalar through UnmarshalText and puts the line in
// any error (yaml.v3 drops it for TextUnmarshaler errors).
func scalarYAML(n *yaml.Node, t encoding.TextUnmarshaler) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a single value", n.Line)
	}
	if err := t.UnmarshalText([]byte(n.Value)); err != nil {
		return fmt.Errorf("line %d: %v", n.Line, err)
	}
	return nil
}

func (a *Action) UnmarshalYAML(n *yaml.Node) error   { return scalarYAML(n, a) }
func (d *Duration) UnmarshalYAML(n *yaml.Node) error { return scalarYAML(n, d) }
func (p *Prefix) UnmarshalYAML(n *yaml.Node) error   { return scalarYAML(n, p) }

func (a Action) MarshalYAML() (any, error)   { return a.String(), nil }
func (d Duration) MarshalYAML() (any, error) { return d.D().String(), nil }
func (p Prefix) MarshalYAML() (any, error)   { return p.String(), nil }

// Validate checks everything a type cannot check on its own.
func (c *Config) Validate() error {
	if err := validateSocket(c.Listen); err != nil {
		return fieldErr("listen", "%v", err)
	}
	if m, err := strconv.ParseUint(c.ListenMode, 8, 32); err != nil || m > 0o777 {
		return fieldErr("listen_mode", "%q: want octal permissions such as 0660", c.ListenMode)
	}
	if c.MetricsListen != "" && !strings.Contains(c.MetricsListen, ":") {
		return fieldErr("metrics_listen", "want HOST:PORT, or empty to disable")
	}
	if err := validRescue(c.SPFFailRescue); err != nil {
		return fieldErr("spf_fail_rescue", "%v", err)
	}
	for _, h := range c.HeaderFields {
		if h != HeaderAuthResults && h != HeaderReceivedSPF {
			return fieldErr("header_fields", "%q: want %s or %s", h, HeaderAuthResults, HeaderReceivedSPF)
		}
	}
	if err := c.SPF.validate(); err != nil {
		return err
	}
	switch c.DMARCQuarantine {
	case "quarantine", "header":
	default:
		return fieldErr("dmarc_quarantine", "must be quarantine or header, not %q", c.DMARCQuarantine)
	}
	for _, n := range c.TrustedForwarders.Names {
		if _, err := CanonicalDomain(n); err != nil {
			return fieldErr("trusted_forwarders.names", "%q: %v", n, err)
		}
	}
	switch c.RejectAt {
	case "rcpt", "mail":
	default:
		return fieldErr("reject_at", "must be rcpt or mail, not %q", c.RejectAt)
	}
	if c.StageBudget <= 0 || c.StageBudget.D() > time.Minute {
		// The MTA gives up on a silent milter: Sendmail's T=R defaults to
		// 10s, Postfix's milter_command_timeout to 30s.
		return fieldErr("stage_budget", "must be positive and at most 1m, below the MTA's milter timeouts")
	}
	if c.MilterMaxConnections < 1 {
		return fieldErr("milter_max_connections", "must be positive")
	}
	if c.MilterIdleTimeout.D() < 10*time.Minute {
		// An MTA may be silent on its milter connection while its client
		// is: Postfix's smtpd_timeout is 300s, and a slow DATA more.
		return fieldErr("milter_idle_timeout", "must be at least 10m, above the MTA's SMTP timeouts")
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return fieldErr("log.format", "must be text or json, not %q", c.Log.Format)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return fieldErr("log.level", "must be debug, info, warn or error, not %q", c.Log.Level)
	}
	if err := c.DNS.validate(); err != nil {
		return err
	}
	if err := c.validateRecipients(); err != nil {
		return err
	}
	if err := c.Callout.validate(); err != nil {
		return err
	}
	if err := c.Redis.validate(); err != nil {
		return err
	}
	if c.AdminListen != "" {
		host, _, err := net.SplitHostPort(c.AdminListen)
		ip, perr := netip.ParseAddr(host)
		if err != nil || (host != "localhost" && (perr != nil || !ip.IsLoopback())) {
			return fieldErr("admin_listen", "%q: want a loopback HOST:PORT (it can remove cache entries), or empty", c.AdminListen)
		}
	}
	for _, r := range c.AlwaysAcceptRecipients {
		if strings.ContainsAny(r, " \t\r\n") || r == "" {
			return fieldErr("always_accept_recipients", "%q is not a local part or address", r)
		}
	}
	return nil
}

func (d DNS) validate() error {
	for _, s := range d.Servers {
		if !strings.Contains(s, ":") {
			return fieldErr("dns.servers", "%q: want HOST:PORT", s)
		}
	}
	if d.Timeout <= 0 || d.Attempts < 1 || d.CacheSize < 1 {
		return fieldErr("dns", "timeout, attempts and cache_size must be positive")
	}
	if d.CacheMaxBytes < 1<<20 {
		return fieldErr("dns.cache_max_bytes", "must be at least 1048576 (1 MiB): one answer can be 64 KiB")
	}
	if d.MaxTTL > 0 && d.MinTTL > d.MaxTTL {
		return fieldErr("dns.min_ttl", "is above max_ttl")
	}
	return nil
}

func (co Callout) validate() error {
	if err := validProbeOn(co.ProbeOn); err != nil {
		return fieldErr("callout.probe_on", "%v", err)
	}
	for _, d := range co.SkipDomains {
		if _, err := CanonicalDomain(d); err != nil {
			return fieldErr("callout.skip_domains", "%q: %v", d, err)
		}
	}
	if co.Port < 1 || co.Port > 65535 {
		return fieldErr("callout.port", "must be 1-65535")
	}
	if co.StepTimeout <= 0 || co.ProbeTimeout <= 0 || co.CacheSize < 1 {
		return fieldErr("callout", "step_timeout, probe_timeout and cache_size must be positive")
	}
	if co.GlobalConcurrency < 1 || co.PerDomainConcurrency < 1 || co.PerDomainRatePerMinute < 1 ||
		co.PerHostConcurrency < 1 || co.PerHostRatePerMinute < 1 || co.BannerPatience <= 0 {
		return fieldErr("callout", "concurrency and rate limits and banner_patience must be positive")
	}
	if co.TTLExists <= 0 || co.TTLNotExists <= 0 || co.TTLUnknown <= 0 {
		return fieldErr("callout", "cache TTLs must be positive")
	}
	switch co.TLS {
	case "may", "verify", "off":
	default:
		return fieldErr("callout.tls", "must be may, verify or off, not %q", co.TLS)
	}
	if co.GlobalRatePerMinute < 1 {
		return fieldErr("callout.global_rate_per_minute", "must be positive")
	}
	return co.validateSources()
}

// validateSources checks the probes' source addresses (each of its
// family, and one this host has: bound once and let go), the public
// address, the blocklist zones and the skip patterns.
func (co Callout) validateSources() error {
	for _, s := range []struct {
		path, value string
		v4          bool
	}{{"callout.source_ipv4", co.SourceIPv4, true}, {"callout.source_ipv6", co.SourceIPv6, false}} {
		if s.value == "" {
			continue
		}
		ip, err := netip.ParseAddr(s.value)
		if err != nil || ip.Zone() != "" {
			return fieldErr(s.path, "%q is not an IP address", s.value)
		}
		if ip.Is4() != s.v4 || ip.Is4In6() {
			return fieldErr(s.path, "%s is not an IPv%s address", ip, map[bool]string{true: "4", false: "6"}[s.v4])
		}
		if ip.IsUnspecified() || ip.IsMulticast() {
			return fieldErr(s.path, "%s cannot be a source address", ip)
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
		if err != nil {
			return fieldErr(s.path, "%s is not an address of this host (%v): add it to an interface first", ip, err)
		}
		ln.Close()
	}
	if co.PublicAddress != "" {
		if ip, err := netip.ParseAddr(co.PublicAddress); err != nil || ip.Zone() != "" {
			return fieldErr("callout.public_address", "%q is not an IP address", co.PublicAddress)
		}
	}
	for _, z := range co.Blocklists {
		if canon, err := CanonicalDomain(z); err != nil || !strings.Contains(canon, ".") {
			return fieldErr("callout.blocklists", "%q is not a DNS zone", z)
		}
	}
	if len(co.Blocklists) > 0 && co.BlocklistInterval.D() < time.Minute {
		return fieldErr("callout.blocklist_interval", "must be at least 1m (lists ask for restraint)")
	}
	for _, p := range co.SkipMXHosts {
		name, _ := strings.CutPrefix(p, "*.")
		if canon, err := CanonicalDomain(name); err != nil || canon == "" || strings.Contains(canon, "*") {
			return fieldErr("callout.skip_mx_hosts", "%q: want a host name or *.domain", p)
		}
	}
	return nil
}

func (r Redis) validate() error {
	if r.URL == "" {
		return nil
	}
	u, err := url.Parse(string(r.URL))
	if err != nil {
		return fieldErr("redis.url", "%s", strings.ReplaceAll(err.Error(), string(r.URL), RedactURL(string(r.URL))))
	}
	switch u.Scheme {
	case "redis", "rediss", "unix":
	default:
		return fieldErr("redis.url", "scheme %q: want redis://, rediss:// or unix://", u.Scheme)
	}
	if (r.TLSCAFile != "" || r.TLSCertFile != "") && u.Scheme != "rediss" {
		return fieldErr("redis.url", "TLS files given but the URL is not rediss://")
	}
	if (r.TLSCertFile == "") != (r.TLSKeyFile == "") {
		return fieldErr("redis.tls_cert_file", "a client certificate needs its key and the key its certificate")
	}
	if r.Timeout <= 0 || r.Timeout.D() > 2*time.Second {
		return fieldErr("redis.timeout", "must be positive and at most 2s, well inside the stage budget")
	}
	if r.NearCacheBytes < 1<<20 {
		return fieldErr("redis.near_cache_bytes", "must be at least 1048576")
	}
	for _, f := range []string{r.PasswordFile, r.TLSCAFile, r.TLSCertFile, r.TLSKeyFile} {
		if f != "" {
			if _, err := os.Stat(f); err != nil {
				return fieldErr("redis", "%v", err)
			}
		}
	}
	return nil
}

func validateSocket(s string) error {
	switch {
	case strings.HasPrefix(s, "unix:") && len(s) > 5:
		return nil
	case strings.HasPrefix(s, "inet:") && strings.Contains(s[5:], ":"):
		return nil
	case strings.HasPrefix(s, "inet6:") && strings.Contains(s[6:], ":"):
		return nil
	}
	return fmt.Errorf("%q: want inet:HOST:PORT or unix:PATH", s)
}

// SocketAddr splits a milter socket spec into a Go network and address.
func SocketAddr(s string) (network, address string) {
	switch {
	case strings.HasPrefix(s, "unix:"):
		return "unix", s[5:]
	case strings.HasPrefix(s, "inet6:"):
		return "tcp", s[6:]
	}
	return "tcp", strings.TrimPrefix(s, "inet:")
}

func (s SPF) validate() error {
	if s.VoidLimit < 1 {
		return fieldErr("spf.void_limit", "must be at least 1 (RFC 7208 §4.6.4 says 2)")
	}
	if err := validDomains("spf.reject_not_pass_domains", s.RejectNotPassDomains); err != nil {
		return err
	}
	for path, list := range map[string][]string{"spf.whitelist.verified_helo_names": s.Whitelist.VerifiedHeloNames,
		"spf.whitelist.spf_domains": s.Whitelist.SPFDomains, "spf.whitelist.ptr_domains": s.Whitelist.PTRDomains} {
		if err := validDomains(path, list); err != nil {
			return err
		}
	}
	for _, r := range s.ReasonMessage + s.ReasonURL {
		if r < 0x20 || r > 0x7e {
			return fieldErr("spf.reason_message", "reply text must be printable ASCII")
		}
	}
	return nil
}

// validDomains checks a list of domain names.
func validDomains(path string, list []string) error {
	for _, d := range list {
		if canon, err := CanonicalDomain(d); err != nil || canon == "" || strings.ContainsAny(canon, "*/ ") {
			return fieldErr(path, "%q is not a domain name", d)
		}
	}
	return nil
}

// validRescue checks an spf_fail_rescue value.
func validRescue(v string) error {
	switch v {
	case "dkim", "dmarc", "none":
		return nil
	}
	return fmt.Errorf("must be dkim, dmarc or none, not %q", v)
}
