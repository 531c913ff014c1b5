// Package config holds senderguard's settings: embedded defaults, a YAML
// file (unknown keys are errors, errors carry file and line) and flag
// overrides, validated once at load.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the whole effective configuration.
type Config struct {
	Listen string `yaml:"listen"`
	// ListenMode and ListenGroup set a unix milter socket's permissions:
	// only the MTA's group should reach it.
	ListenMode    string `yaml:"listen_mode"`
	ListenGroup   string `yaml:"listen_group"`
	MetricsListen string `yaml:"metrics_listen"`
	// MetricsWebConfig is a Prometheus exporter web configuration file
	// (TLS certificate and key, client CA, basic-auth users with bcrypt
	// hashes) for /metrics, /healthz and /readyz; empty: plain HTTP.
	MetricsWebConfig string   `yaml:"metrics_web_config"`
	DryRun           bool     `yaml:"dry_run"`
	TrustedNetworks  Networks `yaml:"trusted_networks"`
	// Hostname names us in headers (receiver=, authserv-id) and in our
	// callout EHLO; empty means the machine's host name.
	Hostname                string `yaml:"hostname"`
	AuthservID              string `yaml:"authserv_id"`
	RemoveForgedAuthResults bool   `yaml:"remove_forged_authentication_results"`
	// HeaderFields are the result fields added at end of message:
	// authentication-results, received-spf (both by default); empty:
	// none.
	HeaderFields []string `yaml:"header_fields"`
	// HideReceiver writes "<UNKNOWN>" for our name in Received-SPF.
	HideReceiver           bool     `yaml:"hide_receiver"`
	RejectAt               string   `yaml:"reject_at"`
	AlwaysAcceptRecipients []string `yaml:"always_accept_recipients"`
	// SPFFailRescue: "dkim" holds a MAIL FROM SPF fail whose action is a
	// rejection until end of message, where a valid DKIM signature
	// aligned with the sender's domain rescues it (forwarded mail);
	// "dmarc" holds it too and lets the DMARC policy of the header From's
	// domain decide (RFC 7489), falling back to dkim's rule where there is
	// none; "none" refuses at once.
	SPFFailRescue string `yaml:"spf_fail_rescue"`
	// DMARCQuarantine is what a DMARC p=quarantine disposition does:
	// "quarantine" asks the MTA to hold the message (Postfix's hold
	// queue, Sendmail's quarantine), "header" delivers it with
	// X-Senderguard-Quarantine for a mail filter (Sieve) to act on.
	DMARCQuarantine string `yaml:"dmarc_quarantine"`
	// TrustedForwarders are clients whose SPF fails are not refused: the
	// site's own secondary MX, a forwarding service it trusts.
	TrustedForwarders TrustedForwarders `yaml:"trusted_forwarders"`
	StageBudget       Duration          `yaml:"stage_budget"`
	ShutdownGrace     Duration          `yaml:"shutdown_grace"`
	// MilterMaxConnections caps open MTA connections; MilterIdleTimeout
	// ends one on which the MTA sent nothing for that long.
	MilterMaxConnections int      `yaml:"milter_max_connections"`
	MilterIdleTimeout    Duration `yaml:"milter_idle_timeout"`
	SkipAuthenticated    bool     `yaml:"skip_authenticated"`
	Log                  Log      `yaml:"log"`
	DNS                  DNS      `yaml:"dns"`
	SPF                  SPF      `yaml:"spf"`
	Callout              Callout  `yaml:"callout"`
	Actions              Actions  `yaml:"actions"`
	Redis                Redis    `yaml:"redis"`
	// RecipientDomains override, per recipient domain, the actions,
	// dry_run and callout.enabled/probe_on.
	RecipientDomains []RecipientDomain `yaml:"recipient_domains"`
	// AdminListen serves "senderguard cache show|forget" for a running
	// instance without Redis; loopback only; empty disables.
	AdminListen string `yaml:"admin_listen"`
}

// Redis is the store a fleet of replicas shares; an empty URL keeps
// everything in memory.
type Redis struct {
	URL            SecretURL `yaml:"url"`
	KeyPrefix      string    `yaml:"key_prefix"`
	Timeout        Duration  `yaml:"timeout"`
	NearCacheBytes int       `yaml:"near_cache_bytes"`
	Username       string    `yaml:"username"`
	// PasswordFile holds the password (else $SENDERGUARD_REDIS_PASSWORD,
	// else the URL's); never printed.
	PasswordFile string `yaml:"password_file"`
	TLSCAFile    string `yaml:"tls_ca_file"`
	TLSCertFile  string `yaml:"tls_cert_file"`
	TLSKeyFile   string `yaml:"tls_key_file"`
}

// SecretURL is a URL that may carry a password: printed without it.
type SecretURL string

func (u SecretURL) MarshalYAML() (any, error) { return RedactURL(string(u)), nil }

// RedactURL replaces a URL's user information with REDACTED.
func RedactURL(u string) string {
	if i := strings.Index(u, "://"); i >= 0 {
		if j := strings.IndexByte(u[i+3:], '@'); j >= 0 && !strings.ContainsAny(u[i+3:i+3+j], "/?") {
			return u[:i+3] + "REDACTED@" + u[i+3+j+1:]
		}
	}
	return u
}

type Log struct {
	Format string `yaml:"format"` // text or json
	Level  string `yaml:"level"`  // debug, info, warn, error
}

type DNS struct {
	Servers   []string `yaml:"servers"` // empty: /etc/resolv.conf
	Timeout   Duration `yaml:"timeout"`
	Attempts  int      `yaml:"attempts"`
	CacheSize int      `yaml:"cache_size"`
	// CacheMaxBytes bounds the memory of cached answers, whatever their
	// number: a wildcard zone with large TXT records must not grow us.
	CacheMaxBytes int      `yaml:"cache_max_bytes"`
	MinTTL        Duration `yaml:"min_ttl"`
	MaxTTL        Duration `yaml:"max_ttl"`
	NegativeTTL   Duration `yaml:"negative_ttl"`
}

type SPF struct {
	CheckHELO     bool      `yaml:"check_helo"`
	CheckMailFrom bool      `yaml:"check_mailfrom"`
	Whitelist     Whitelist `yaml:"whitelist"`
	// VoidLimit is RFC 7208 §4.6.4's void-lookup limit (2).
	VoidLimit int `yaml:"void_limit"`
	// SPFPolicy: how results turn into refusals beyond the action table
	// (also per recipient domain).
	SPFPolicy `yaml:",inline"`
	// ReasonMessage, when set, is the text of SPF refusals: {rejectdefer}
	// (rejected or deferred), {result}, {spf} (the explanation), {url}
	// (ReasonURL; a sentence naming {url} is left out when it is empty).
	ReasonMessage string `yaml:"reason_message"`
	ReasonURL     string `yaml:"reason_url"`
}

// SPFPolicy are the SPF rules a recipient domain may override.
type SPFPolicy struct {
	// HELOFirst: a refusal for the HELO identity is given before MAIL
	// FROM is judged (policyd-spf's order); off, the most severe wins.
	HELOFirst bool `yaml:"helo_first"`
	// HELONullSenderOnly: the HELO actions apply to the null sender
	// only (policyd-spf's HELO_reject = Null).
	HELONullSenderOnly bool `yaml:"helo_null_sender_only"`
	// RejectOnlyNoMail: an SPF rejection is given only when the
	// identity's record is exactly "v=spf1 -all" (a domain that sends no
	// mail); otherwise the message is accepted.
	RejectOnlyNoMail bool `yaml:"reject_only_no_mail"`
	// RejectNotPassDomains: sender domains (and subdomains), and HELO
	// names, whose fail, softfail and neutral are refused (commonly
	// forged domains without -all).
	RejectNotPassDomains []string `yaml:"reject_not_pass_domains"`
}

// Whitelist lists clients, sender domains and HELO names never judged.
type Whitelist struct {
	Networks      Networks `yaml:"networks"`
	SenderDomains []string `yaml:"sender_domains"`
	HeloNames     []string `yaml:"helo_names"`
	// VerifiedHeloNames: HELO names not judged when the client's
	// address is one of the name's A/AAAA records (a forged HELO is not).
	VerifiedHeloNames []string `yaml:"verified_helo_names"`
	// SPFDomains: clients that pass the SPF record of one of these
	// domains are not judged (trusted forwarders by their SPF record).
	SPFDomains []string `yaml:"spf_domains"`
	// PTRDomains: clients whose forward-confirmed reverse DNS name is
	// one of these domains or below are not judged.
	PTRDomains []string `yaml:"ptr_domains"`
}

type Callout struct {
	Enabled bool     `yaml:"enabled"`
	ProbeOn []string `yaml:"probe_on"` // SPF results that lead to a probe
	// SkipDomains are sender domains (and their subdomains) never probed:
	// providers that accept every address or blocklist probers. Unlike
	// the whitelists, their SPF is still judged.
	SkipDomains            []string `yaml:"skip_domains"`
	Port                   int      `yaml:"port"`
	Helo                   string   `yaml:"helo"`      // EHLO name of our probes; empty: hostname
	MailFrom               string   `yaml:"mail_from"` // reverse path of our probes; empty: <>
	AllowPrivate           bool     `yaml:"allow_private"`
	Async                  bool     `yaml:"async"`
	CatchAllTest           bool     `yaml:"catch_all_test"`
	StepTimeout            Duration `yaml:"step_timeout"`
	ProbeTimeout           Duration `yaml:"probe_timeout"`
	CacheSize              int      `yaml:"cache_size"`
	TTLExists              Duration `yaml:"ttl_exists"`
	TTLNotExists           Duration `yaml:"ttl_not_exists"`
	TTLUnknown             Duration `yaml:"ttl_unknown"`
	RefreshAfter           Duration `yaml:"refresh_after"`
	BreakerTTL             Duration `yaml:"breaker_ttl"`
	GreylistRetry          Duration `yaml:"greylist_retry"`
	GlobalConcurrency      int      `yaml:"global_concurrency"`
	PerDomainConcurrency   int      `yaml:"per_domain_concurrency"`
	PerDomainRatePerMinute int      `yaml:"per_domain_rate_per_minute"`
	PerHostConcurrency     int      `yaml:"per_host_concurrency"`
	PerHostRatePerMinute   int      `yaml:"per_host_rate_per_minute"`
	GlobalRatePerMinute    int      `yaml:"global_rate_per_minute"`
	BannerPatience         Duration `yaml:"banner_patience"`
	// TLS is the probes' STARTTLS policy: may (upgrade when offered, any
	// certificate), verify (chain and MX name must verify), off.
	TLS string `yaml:"tls"`
	// SourceIPv4 and SourceIPv6 are local addresses probes leave from
	// (an IPv4 mail host from the IPv4 one, IPv6 from IPv6); empty: the
	// kernel's choice, which is the MTA's own outgoing address. A
	// prober's address gets listed for probing; give it its own.
	SourceIPv4 string `yaml:"source_ipv4"`
	SourceIPv6 string `yaml:"source_ipv6"`
	// PublicAddress is the address probes reach the Internet from when
	// the prober is behind NAT: the one the blocklists are asked about.
	PublicAddress string `yaml:"public_address"`
	// Blocklists are DNSBL zones the probe addresses are looked up in at
	// start and every BlocklistInterval; empty: no watch.
	Blocklists        []string `yaml:"blocklists"`
	BlocklistInterval Duration `yaml:"blocklist_interval"`
	// PauseWhenListed stops every probe while a probe address is listed.
	PauseWhenListed bool `yaml:"pause_when_listed"`
	// SkipMXHosts are mail host name patterns ("*.example.net" for every
	// name below) whose domains are never probed, checked after the MX
	// lookup so every domain a provider hosts is covered.
	SkipMXHosts []string `yaml:"skip_mx_hosts"`
}

// Result fields senderguard can add (header_fields).
const (
	HeaderAuthResults = "authentication-results"
	HeaderReceivedSPF = "received-spf"
)

// DefaultSkipMXHosts are the providers where a probe is harmful or tells
// nothing (see the README's "Callouts without risk to the site"):
//   - Microsoft 365 (*.mail.protection.outlook.com) and Outlook.com
//     (*.olc.protection.outlook.com): Microsoft's NDR documentation for
//     5.7.606-649 ("Access denied, banned sending IP") lists addresses
//     banned for probing, and Exchange Online refuses the null-sender
//     verification probes of recipients that do not exist;
//   - Yahoo and AOL (*.yahoodns.net, both on Yahoo's mail hosts): they
//     accept every RCPT and bounce later, so a 250 says nothing;
//   - iCloud (*.mail.icloud.com): Apple's postmaster page says it
//     evaluates the sending IP's reputation; probes from a new address
//     are refused or counted against it.
//
// Change it with callout.skip_mx_hosts (the whole list: include these
// to keep them) or -callout-skip-mx-hosts.
var DefaultSkipMXHosts = []string{
	"*.mail.protection.outlook.com", "*.olc.protection.outlook.com",
	"*.yahoodns.net", "*.mail.icloud.com",
}

// TrustedForwarders are networks, and host names (with their subdomains)
// as the MTA verified them by forward-confirmed reverse DNS (Postfix's
// client name is "unknown" otherwise).
type TrustedForwarders struct {
	Networks Networks `yaml:"networks"`
	Names    []string `yaml:"names"`
}

// SPFActions maps each SPF result to an action.
type SPFActions struct {
	Pass      Action `yaml:"pass"`
	Fail      Action `yaml:"fail"`
	Softfail  Action `yaml:"softfail"`
	Neutral   Action `yaml:"neutral"`
	None      Action `yaml:"none"`
	TempError Action `yaml:"temperror"`
	PermError Action `yaml:"permerror"`
}

// CalloutActions maps each callout classification to an action.
type CalloutActions struct {
	Exists     Action `yaml:"exists"`
	NotExists  Action `yaml:"not-exists"`
	CatchAll   Action `yaml:"catch-all"`
	NullMX     Action `yaml:"null-mx"`
	NoMailHost Action `yaml:"no-mail-host"`
	Unknown    Action `yaml:"unknown"`
	// InProgress answers while an asynchronous probe is still running.
	InProgress Action `yaml:"in-progress"`
}

// For is the action for an SPF result (pass, fail, softfail, neutral,
// none, temperror, permerror); any other name is permerror's.
func (a *SPFActions) For(result string) *Action {
	switch result {
	case "pass":
		return &a.Pass
	case "fail":
		return &a.Fail
	case "softfail":
		return &a.Softfail
	case "neutral":
		return &a.Neutral
	case "none":
		return &a.None
	case "temperror":
		return &a.TempError
	}
	return &a.PermError
}

// For is the action for a callout class (exists, not-exists, catch-all,
// null-mx, no-mail-host, in-progress); any other name is unknown's.
func (a *CalloutActions) For(class string) *Action {
	switch class {
	case "exists":
		return &a.Exists
	case "not-exists":
		return &a.NotExists
	case "catch-all":
		return &a.CatchAll
	case "null-mx":
		return &a.NullMX
	case "no-mail-host":
		return &a.NoMailHost
	case "in-progress":
		return &a.InProgress
	}
	return &a.Unknown
}

type Actions struct {
	SPFMailFrom SPFActions     `yaml:"spf_mailfrom"`
	SPFHelo     SPFActions     `yaml:"spf_helo"`
	Callout     CalloutActions `yaml:"callout"`
}

func mustAction(s string) Action {
	a, err := ParseAction(s)
	if err != nil {
		panic(err)
	}
	return a
}

// Default is the embedded production policy.
func Default() *Config {
	accept := mustAction("accept")
	return &Config{
		Listen:                  "inet:127.0.0.1:8896",
		ListenMode:              "0660",
		MetricsListen:           "127.0.0.1:9896",
		TrustedNetworks:         Networks{mustPrefix("127.0.0.0/8"), mustPrefix("::1/128")},
		RemoveForgedAuthResults: true,
		RejectAt:                "rcpt",
		AlwaysAcceptRecipients:  []string{"postmaster", "abuse"},
		SPFFailRescue:           "dkim",
		DMARCQuarantine:         "quarantine",
		StageBudget:             Duration(4e9),
		ShutdownGrace:           Duration(30e9),
		MilterMaxConnections:    1000,
		MilterIdleTimeout:       Duration(3600e9),
		SkipAuthenticated:       true,
		Log:                     Log{Format: "text", Level: "info"},
		DNS: DNS{Timeout: Duration(2e9), Attempts: 2, CacheSize: 100000, CacheMaxBytes: 64 << 20,
			MaxTTL: Duration(24 * 3600e9), NegativeTTL: Duration(900e9)},
		SPF:          SPF{CheckHELO: true, CheckMailFrom: true, VoidLimit: 2},
		HeaderFields: []string{HeaderAuthResults, HeaderReceivedSPF},
		Callout: Callout{
			Enabled: true, ProbeOn: []string{"none", "neutral", "softfail"}, Port: 25, Async: true,
			StepTimeout: Duration(10e9), ProbeTimeout: Duration(30e9), CacheSize: 100000, BannerPatience: Duration(5e9),
			TTLExists: Duration(31 * 24 * 3600e9), TTLNotExists: Duration(3 * 24 * 3600e9),
			TTLUnknown: Duration(300e9), RefreshAfter: Duration(7 * 24 * 3600e9),
			BreakerTTL: Duration(3600e9), GreylistRetry: Duration(300e9),
			GlobalConcurrency: 50, PerDomainConcurrency: 2, PerDomainRatePerMinute: 20,
			PerHostConcurrency: 4, PerHostRatePerMinute: 60, GlobalRatePerMinute: 1200, TLS: "may",
			Blocklists:        []string{"ips.backscatterer.org", "zen.spamhaus.org"},
			BlocklistInterval: Duration(600e9), PauseWhenListed: true,
			SkipMXHosts: append([]string(nil), DefaultSkipMXHosts...),
		},
		Redis:       Redis{KeyPrefix: "senderguard:", Timeout: Duration(50e6), NearCacheBytes: 64 << 20},
		AdminListen: "127.0.0.1:9897",
		Actions: Actions{
			SPFMailFrom: SPFActions{Pass: accept, Fail: mustAction("reject 550 5.7.23"), Softfail: accept,
				Neutral: accept, None: accept, TempError: mustAction("tempfail 451 4.7.24"), PermError: accept},
			SPFHelo: SPFActions{Pass: accept, Fail: mustAction("reject 550 5.7.23"), Softfail: accept,
				Neutral: accept, None: accept, TempError: accept, PermError: accept},
			Callout: CalloutActions{Exists: accept, NotExists: mustAction("reject 550 5.1.7"),
				CatchAll: accept, NullMX: mustAction("reject 550 5.7.27"), NoMailHost: mustAction("reject 550 5.1.8"),
				Unknown: accept, InProgress: mustAction("tempfail 451 4.7.1")},
		},
	}
}

func mustPrefix(s string) (p Prefix) {
	p, err := ParsePrefix(s)
	if err != nil {
		panic(err)
	}
	return p
}

// Load reads path over the defaults. Errors name the file and line.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// LoadSettled reads path as a reload must: twice, settle apart, and only
// when both reads agree and the file ends with a newline. A file caught
// half-written (an editor writing in place) can be valid YAML whose missing
// part silently reverts to the defaults; write a new file beside it and
// rename it into place instead.
func LoadSettled(path string, settle time.Duration) (*Config, error) {
	first, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	time.Sleep(settle)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(first, data) {
		return nil, fmt.Errorf("%s: changed while being read; write the new file beside it and rename it into place", path)
	}
	if len(data) > 0 && data[len(data)-1] != '\n' {
		return nil, fmt.Errorf("%s: does not end with a newline: cut short while being written? write the new file beside it and rename it into place", path)
	}
	return Parse(path, data)
}

// Parse decodes YAML data over the defaults and validates the result.
func Parse(name string, data []byte) (*Config, error) {
	c := Default()
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("%s: %w", name, cleanYAMLError(err))
	}
	if len(root.Content) > 0 {
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: %w", name, cleanYAMLError(err))
		}
	}
	if err := c.Validate(); err != nil {
		var fe *FieldError
		if errors.As(err, &fe) {
			if line := lineOf(&root, fe.Path); line > 0 {
				return nil, fmt.Errorf("%s: line %d: %s: %s", name, line, fe.Path, fe.Reason)
			}
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return c, nil
}

// cleanYAMLError turns yaml.v3's "yaml: unmarshal errors:\n  line N: ..."
// into "line N: ...; line M: ...".
func cleanYAMLError(err error) error {
	s := strings.TrimPrefix(err.Error(), "yaml: ")
	s = strings.TrimPrefix(s, "unmarshal errors:")
	var parts []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			parts = append(parts, l)
		}
	}
	return errors.New(strings.Join(parts, "; "))
}

// lineOf finds the line of a dotted key path in a YAML document.
func lineOf(root *yaml.Node, path string) int {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := 0
	for _, key := range strings.Split(path, ".") {
		if n.Kind == yaml.SequenceNode {
			i, err := strconv.Atoi(key)
			if err != nil || i < 0 || i >= len(n.Content) {
				return line
			}
			n = n.Content[i]
			line = n.Line
			continue
		}
		if n.Kind != yaml.MappingNode {
			return line
		}
		found := false
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				line, n, found = n.Content[i].Line, n.Content[i+1], true
				break
			}
		}
		if !found {
			return line
		}
	}
	return line
}

// Marshal renders the effective configuration as YAML.
func (c *Config) Marshal() ([]byte, error) { return yaml.Marshal(c) }

// Host is Hostname, or the machine's name when it is empty: the
// authserv-id, the receiver of Received-SPF and the EHLO name of probes.
func (c *Config) Host() string {
	if c.Hostname != "" {
		return c.Hostname
	}
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "localhost"
	}
	return h
}

// Qualified reports whether name is a fully qualified domain name (it has
// a dot besides a trailing one): strict SMTP servers refuse a bare host
// name in EHLO (Postfix's reject_non_fqdn_helo_hostname).
func Qualified(name string) bool {
	return strings.Contains(strings.TrimSuffix(name, "."), ".")
}
