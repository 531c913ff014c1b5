package config

import (
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// binding ties a flag to its setting: set applies a flag value to a
// Config, get reads the setting back as a flag would be written, so that
// the help text shows the embedded default (one place: Default()).
type binding struct {
	set func(c *Config, v string) error
	get func(c *Config) string // nil: no default shown
}

type flagDef struct {
	name, usage string
	boolean     bool
	bind        binding
}

// Overrides are the flags given on the command line; they win over the
// config file and the defaults.
type Overrides struct {
	defs  map[string]flagDef
	given []struct{ name, value string }
}

type flagValue struct {
	o    *Overrides
	name string
	def  flagDef
}

// String is the setting's default, which the flag package prints in the
// help as "(default ...)"; "" for the zero value it compares with.
func (v *flagValue) String() string {
	if v == nil || v.def.bind.get == nil {
		return ""
	}
	return v.def.bind.get(Default())
}
func (v *flagValue) IsBoolFlag() bool { return v.def.boolean }
func (v *flagValue) Set(s string) error {
	// Validate now so a bad flag fails at parse time with its name.
	if err := v.def.bind.set(Default(), s); err != nil {
		return err
	}
	v.o.given = append(v.o.given, struct{ name, value string }{v.name, s})
	return nil
}

// BindFlags defines one flag per setting on fs.
func BindFlags(fs *flag.FlagSet) *Overrides {
	o := &Overrides{defs: map[string]flagDef{}}
	for _, d := range flagDefs() {
		o.defs[d.name] = d
		fs.Var(&flagValue{o: o, name: d.name, def: d}, d.name, d.usage)
	}
	return o
}

// Sections of the YAML file, in its order; flags are listed under them.
var Sections = []string{"general", "log", "dns", "spf", "callout", "actions", "redis"}

// FlagSection is the YAML section of a setting's flag ("general": the
// top level), "" for a flag that is no setting.
func FlagSection(name string) string {
	found := false
	for _, d := range flagDefs() {
		if d.name == name {
			found = true
			break
		}
	}
	switch {
	case !found:
		return ""
	case name == "spf-fail-rescue":
		return "general"
	case strings.HasPrefix(name, "dns"):
		return "dns"
	case strings.HasPrefix(name, "spf-"), strings.HasPrefix(name, "whitelist-"):
		return "spf"
	case strings.HasPrefix(name, "callout"):
		return "callout"
	case strings.HasPrefix(name, "action-"):
		return "actions"
	case strings.HasPrefix(name, "redis"):
		return "redis"
	case strings.HasPrefix(name, "log-"):
		return "log"
	}
	return "general"
}

// PrintFlags writes fs's flags as the flag package would, grouped: the
// command's own first, then each YAML section's settings, of those show
// accepts (nil: all).
func PrintFlags(fs *flag.FlagSet, w io.Writer, show func(name string) bool) {
	groups := map[string][]*flag.Flag{}
	fs.VisitAll(func(f *flag.Flag) {
		sec := FlagSection(f.Name)
		if sec != "" && show != nil && !show(f.Name) {
			return
		}
		groups[sec] = append(groups[sec], f)
	})
	print := func(title string, list []*flag.Flag) {
		if len(list) == 0 {
			return
		}
		fmt.Fprintf(w, "\n%s:\n", title)
		for _, f := range list {
			kind, usage := flag.UnquoteUsage(f)
			line := "  -" + f.Name
			if kind != "" {
				line += " " + kind
			}
			line += "\n    \t" + strings.ReplaceAll(usage, "\n", "\n    \t")
			if def := f.DefValue; def != "" && def != "false" && def != "0" {
				line += fmt.Sprintf(" (default %q)", def)
			}
			fmt.Fprintln(w, line)
		}
	}
	print("this command", groups[""])
	for _, sec := range Sections {
		title := sec + " settings"
		if sec == "general" {
			title = "top-level settings"
		}
		print(title, groups[sec])
	}
}

// Apply sets the given flags on c, in command-line order, and validates.
func (o *Overrides) Apply(c *Config) error {
	for _, g := range o.given {
		if err := o.defs[g.name].bind.set(c, g.value); err != nil {
			return fmt.Errorf("-%s: %w", g.name, err)
		}
	}
	return c.Validate()
}

func str(f func(c *Config) *string) binding {
	return binding{func(c *Config, v string) error { *f(c) = v; return nil }, func(c *Config) string { return *f(c) }}
}

func boolean(f func(c *Config) *bool) binding {
	return binding{func(c *Config, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("want true or false, not %q", v)
		}
		*f(c) = b
		return nil
	}, func(c *Config) string {
		if *f(c) {
			return "true"
		}
		return "" // false is the flag package's zero: not shown
	}}
}

func integer(f func(c *Config) *int) binding {
	return binding{func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("want a number, not %q", v)
		}
		*f(c) = n
		return nil
	}, func(c *Config) string { return strconv.Itoa(*f(c)) }}
}

func duration(f func(c *Config) *Duration) binding {
	return binding{func(c *Config, v string) error { return f(c).UnmarshalText([]byte(v)) },
		func(c *Config) string { b, _ := f(c).MarshalText(); return string(b) }}
}

func list(f func(c *Config) *[]string) binding {
	return binding{func(c *Config, v string) error {
		*f(c) = SplitList(v)
		return nil
	}, func(c *Config) string { return strings.Join(*f(c), ",") }}
}

func networks(f func(c *Config) *Networks) binding {
	return binding{func(c *Config, v string) error {
		n, err := ParseNetworks(v)
		if err != nil {
			return err
		}
		*f(c) = n
		return nil
	}, func(c *Config) string {
		var out []string
		for _, p := range *f(c) {
			out = append(out, p.String())
		}
		return strings.Join(out, ",")
	}}
}

func action(f func(c *Config) *Action) binding {
	return binding{func(c *Config, v string) error { return f(c).UnmarshalText([]byte(v)) },
		func(c *Config) string { return f(c).String() }}
}

func flagDefs() []flagDef {
	d := []flagDef{
		{name: "listen", usage: "milter socket: inet:HOST:PORT or unix:PATH", bind: str(func(c *Config) *string { return &c.Listen })},
		{name: "listen-mode", usage: "permissions of a unix milter socket, octal", bind: str(func(c *Config) *string { return &c.ListenMode })},
		{name: "listen-group", usage: "group of a unix milter socket, e.g. postfix (default: ours)", bind: str(func(c *Config) *string { return &c.ListenGroup })},
		{name: "metrics-listen", usage: "HOST:PORT for /metrics, /healthz, /readyz; empty disables", bind: str(func(c *Config) *string { return &c.MetricsListen })},
		{name: "web-config", usage: "exporter web configuration file (TLS, basic auth) for the metrics listener; empty: plain HTTP", bind: str(func(c *Config) *string { return &c.MetricsWebConfig })},
		{name: "dns", usage: "DNS servers HOST:PORT[,HOST:PORT...] (default: /etc/resolv.conf)", bind: list(func(c *Config) *[]string { return &c.DNS.Servers })},
		{name: "dry-run", boolean: true, usage: "never tempfail or reject; log and mark what would have happened", bind: boolean(func(c *Config) *bool { return &c.DryRun })},
		{name: "trusted-networks", usage: "CIDR[,CIDR...] of clients never judged; empty trusts no one", bind: networks(func(c *Config) *Networks { return &c.TrustedNetworks })},
		{name: "hostname", usage: "our name in headers and callout EHLO (default: host name)", bind: str(func(c *Config) *string { return &c.Hostname })},
		{name: "authserv-id", usage: "authserv-id of our Authentication-Results (default: hostname)", bind: str(func(c *Config) *string { return &c.AuthservID })},
		{name: "remove-forged-authentication-results", boolean: true, usage: "remove incoming Authentication-Results that claim our authserv-id", bind: boolean(func(c *Config) *bool { return &c.RemoveForgedAuthResults })},
		{name: "spf-fail-rescue", usage: "dkim: a valid aligned DKIM signature rescues an SPF fail at end of message (forwarded mail); dmarc: the header From domain's DMARC policy decides it there; none: refuse at once", bind: str(func(c *Config) *string { return &c.SPFFailRescue })},
		{name: "dmarc-quarantine", usage: "what a DMARC p=quarantine does with spf-fail-rescue dmarc: quarantine (the MTA holds the message) or header (delivered with X-Senderguard-Quarantine)", bind: str(func(c *Config) *string { return &c.DMARCQuarantine })},
		{name: "trusted-forwarder-networks", usage: "CIDR[,CIDR...] of forwarders whose SPF fails are not refused", bind: networks(func(c *Config) *Networks { return &c.TrustedForwarders.Networks })},
		{name: "trusted-forwarder-names", usage: "host names (and subdomains) of forwarders, as the MTA verified them, whose SPF fails are not refused", bind: list(func(c *Config) *[]string { return &c.TrustedForwarders.Names })},
		{name: "reject-at", usage: "stage where rejections are given: rcpt or mail", bind: str(func(c *Config) *string { return &c.RejectAt })},
		{name: "always-accept-recipients", usage: "local parts or addresses never refused", bind: list(func(c *Config) *[]string { return &c.AlwaysAcceptRecipients })},
		{name: "stage-budget", usage: "time the checks may take within one SMTP stage", bind: duration(func(c *Config) *Duration { return &c.StageBudget })},
		{name: "shutdown-grace", usage: "how long SIGTERM waits for open sessions", bind: duration(func(c *Config) *Duration { return &c.ShutdownGrace })},
		{name: "milter-max-connections", usage: "open MTA connections at most; more are closed at once", bind: integer(func(c *Config) *int { return &c.MilterMaxConnections })},
		{name: "milter-idle-timeout", usage: "close an MTA connection silent this long; keep above the MTA's SMTP timeouts", bind: duration(func(c *Config) *Duration { return &c.MilterIdleTimeout })},
		{name: "skip-authenticated", boolean: true, usage: "do not judge SASL-authenticated clients", bind: boolean(func(c *Config) *bool { return &c.SkipAuthenticated })},
		{name: "log-format", usage: "text or json", bind: str(func(c *Config) *string { return &c.Log.Format })},
		{name: "log-level", usage: "debug, info, warn or error", bind: str(func(c *Config) *string { return &c.Log.Level })},
		{name: "dns-timeout", usage: "per-query timeout", bind: duration(func(c *Config) *Duration { return &c.DNS.Timeout })},
		{name: "dns-attempts", usage: "rounds over the DNS servers", bind: integer(func(c *Config) *int { return &c.DNS.Attempts })},
		{name: "dns-cache-size", usage: "DNS answers cached", bind: integer(func(c *Config) *int { return &c.DNS.CacheSize })},
		{name: "dns-cache-max-bytes", usage: "bytes of DNS answers cached at most", bind: integer(func(c *Config) *int { return &c.DNS.CacheMaxBytes })},
		{name: "dns-min-ttl", usage: "floor for cached DNS answers", bind: duration(func(c *Config) *Duration { return &c.DNS.MinTTL })},
		{name: "dns-max-ttl", usage: "cap for cached DNS answers", bind: duration(func(c *Config) *Duration { return &c.DNS.MaxTTL })},
		{name: "dns-negative-ttl", usage: "cap for cached negative answers", bind: duration(func(c *Config) *Duration { return &c.DNS.NegativeTTL })},
		{name: "spf-check-helo", boolean: true, usage: "check the HELO identity", bind: boolean(func(c *Config) *bool { return &c.SPF.CheckHELO })},
		{name: "spf-check-mailfrom", boolean: true, usage: "check the MAIL FROM identity", bind: boolean(func(c *Config) *bool { return &c.SPF.CheckMailFrom })},
		{name: "whitelist-networks", usage: "CIDR[,CIDR...] of clients not judged", bind: networks(func(c *Config) *Networks { return &c.SPF.Whitelist.Networks })},
		{name: "whitelist-sender-domains", usage: "sender domains (and subdomains) not judged", bind: list(func(c *Config) *[]string { return &c.SPF.Whitelist.SenderDomains })},
		{name: "whitelist-helo-names", usage: "HELO names not judged", bind: list(func(c *Config) *[]string { return &c.SPF.Whitelist.HeloNames })},
		{name: "spf-void-limit", usage: "void lookups an SPF evaluation may make (RFC 7208 §4.6.4)", bind: integer(func(c *Config) *int { return &c.SPF.VoidLimit })},
		{name: "spf-helo-first", boolean: true, usage: "a refusal for the HELO identity is given before MAIL FROM is judged (policyd-spf's order)", bind: boolean(func(c *Config) *bool { return &c.SPF.HELOFirst })},
		{name: "spf-helo-null-sender-only", boolean: true, usage: "apply the HELO actions to the null sender only", bind: boolean(func(c *Config) *bool { return &c.SPF.HELONullSenderOnly })},
		{name: "spf-reject-only-no-mail", boolean: true, usage: "give an SPF rejection only when the record is exactly \"v=spf1 -all\"", bind: boolean(func(c *Config) *bool { return &c.SPF.RejectOnlyNoMail })},
		{name: "spf-reject-not-pass-domains", usage: "sender domains (and subdomains) and HELO names whose fail, softfail and neutral are refused", bind: list(func(c *Config) *[]string { return &c.SPF.RejectNotPassDomains })},
		{name: "spf-reason-message", usage: "text of SPF refusals: {rejectdefer} {result} {spf} {url} (default: senderguard's own)", bind: str(func(c *Config) *string { return &c.SPF.ReasonMessage })},
		{name: "spf-reason-url", usage: "the {url} of spf-reason-message (default: none)", bind: str(func(c *Config) *string { return &c.SPF.ReasonURL })},
		{name: "whitelist-verified-helo-names", usage: "HELO names not judged when the client's address is one of the name's A/AAAA records", bind: list(func(c *Config) *[]string { return &c.SPF.Whitelist.VerifiedHeloNames })},
		{name: "whitelist-spf-domains", usage: "clients that pass one of these domains' SPF records are not judged (trusted forwarders)", bind: list(func(c *Config) *[]string { return &c.SPF.Whitelist.SPFDomains })},
		{name: "whitelist-ptr-domains", usage: "clients whose forward-confirmed reverse DNS name is in one of these domains are not judged", bind: list(func(c *Config) *[]string { return &c.SPF.Whitelist.PTRDomains })},
		{name: "header-fields", usage: "result fields added: authentication-results,received-spf; empty: none", bind: list(func(c *Config) *[]string { return &c.HeaderFields })},
		{name: "hide-receiver", boolean: true, usage: "write <UNKNOWN> for our name in Received-SPF", bind: boolean(func(c *Config) *bool { return &c.HideReceiver })},
		{name: "callout", boolean: true, usage: "enable callback verification", bind: boolean(func(c *Config) *bool { return &c.Callout.Enabled })},
		{name: "callout-skip-domains", usage: "sender domains (and subdomains) never probed; their SPF is still judged", bind: list(func(c *Config) *[]string { return &c.Callout.SkipDomains })},
		{name: "callout-probe-on", usage: "SPF results that lead to a probe", bind: list(func(c *Config) *[]string { return &c.Callout.ProbeOn })},
		{name: "callout-port", usage: "SMTP port of probed mail hosts", bind: integer(func(c *Config) *int { return &c.Callout.Port })},
		{name: "callout-helo", usage: "EHLO name of our probes (default: hostname if fully qualified, else the address literal of our side of each connection)", bind: str(func(c *Config) *string { return &c.Callout.Helo })},
		{name: "callout-mail-from", usage: "reverse path of our probes (default: the null sender)", bind: str(func(c *Config) *string { return &c.Callout.MailFrom })},
		{name: "callout-allow-private", boolean: true, usage: "allow probing loopback and private addresses (test setups only)", bind: boolean(func(c *Config) *bool { return &c.Callout.AllowPrivate })},
		{name: "callout-async", boolean: true, usage: "let probes finish in the background after the stage budget", bind: boolean(func(c *Config) *bool { return &c.Callout.Async })},
		{name: "callout-catch-all-test", boolean: true, usage: "also probe a random local part to detect catch-all domains", bind: boolean(func(c *Config) *bool { return &c.Callout.CatchAllTest })},
		{name: "callout-step-timeout", usage: "deadline of one SMTP step of a probe", bind: duration(func(c *Config) *Duration { return &c.Callout.StepTimeout })},
		{name: "callout-probe-timeout", usage: "deadline of a whole probe over all MX hosts", bind: duration(func(c *Config) *Duration { return &c.Callout.ProbeTimeout })},
		{name: "callout-cache-size", usage: "addresses cached", bind: integer(func(c *Config) *int { return &c.Callout.CacheSize })},
		{name: "callout-ttl-exists", usage: "cache time of exists", bind: duration(func(c *Config) *Duration { return &c.Callout.TTLExists })},
		{name: "callout-ttl-not-exists", usage: "cache time of not-exists", bind: duration(func(c *Config) *Duration { return &c.Callout.TTLNotExists })},
		{name: "callout-ttl-unknown", usage: "cache time of unknown", bind: duration(func(c *Config) *Duration { return &c.Callout.TTLUnknown })},
		{name: "callout-refresh-after", usage: "age after which a used positive entry is refreshed", bind: duration(func(c *Config) *Duration { return &c.Callout.RefreshAfter })},
		{name: "callout-breaker-ttl", usage: "how long a host that refuses our probes is left alone", bind: duration(func(c *Config) *Duration { return &c.Callout.BreakerTTL })},
		{name: "callout-greylist-retry", usage: "delay of the background re-probe after a 4xx at RCPT", bind: duration(func(c *Config) *Duration { return &c.Callout.GreylistRetry })},
		{name: "callout-global-concurrency", usage: "probes running at once", bind: integer(func(c *Config) *int { return &c.Callout.GlobalConcurrency })},
		{name: "callout-per-domain-concurrency", usage: "probes at once per domain", bind: integer(func(c *Config) *int { return &c.Callout.PerDomainConcurrency })},
		{name: "callout-per-host-concurrency", usage: "probes at once per mail host address", bind: integer(func(c *Config) *int { return &c.Callout.PerHostConcurrency })},
		{name: "callout-per-host-rate", usage: "probes per minute per mail host address", bind: integer(func(c *Config) *int { return &c.Callout.PerHostRatePerMinute })},
		{name: "callout-banner-patience", usage: "wait for a banner before a host counts as a tarpit", bind: duration(func(c *Config) *Duration { return &c.Callout.BannerPatience })},
		{name: "callout-tls", usage: "STARTTLS in probes: may (when offered, any certificate), verify (chain and MX name checked), off", bind: str(func(c *Config) *string { return &c.Callout.TLS })},
		{name: "callout-source-ipv4", usage: "local IPv4 address probes leave from (an address of the prober's own; default: the kernel's choice)", bind: str(func(c *Config) *string { return &c.Callout.SourceIPv4 })},
		{name: "callout-source-ipv6", usage: "local IPv6 address probes leave from (default: the kernel's choice)", bind: str(func(c *Config) *string { return &c.Callout.SourceIPv6 })},
		{name: "callout-public-address", usage: "the address probes reach the Internet from, behind NAT: the one looked up on the blocklists", bind: str(func(c *Config) *string { return &c.Callout.PublicAddress })},
		{name: "callout-blocklists", usage: "DNSBL zones the probe addresses are watched on; empty: no watch", bind: list(func(c *Config) *[]string { return &c.Callout.Blocklists })},
		{name: "callout-blocklist-interval", usage: "how often the probe addresses are looked up on the blocklists", bind: duration(func(c *Config) *Duration { return &c.Callout.BlocklistInterval })},
		{name: "callout-pause-when-listed", boolean: true, usage: "make no probe while a probe address is listed", bind: boolean(func(c *Config) *bool { return &c.Callout.PauseWhenListed })},
		{name: "callout-skip-mx-hosts", usage: "mail host name patterns (*.example.net) whose domains are never probed", bind: list(func(c *Config) *[]string { return &c.Callout.SkipMXHosts })},
		{name: "callout-global-rate", usage: "probes per minute in all, fleet-wide with -redis", bind: integer(func(c *Config) *int { return &c.Callout.GlobalRatePerMinute })},
		{name: "redis", usage: "redis://[USER:PASS@]HOST:PORT[?addr=HOST:PORT...][&master_set=NAME], rediss://..., unix://PATH: share callout knowledge and limits with other replicas; empty: in memory only (default)", bind: binding{set: func(c *Config, v string) error { c.Redis.URL = SecretURL(v); return nil }}},
		{name: "redis-key-prefix", usage: "prefix of every Redis key, so fleets can share one Redis", bind: str(func(c *Config) *string { return &c.Redis.KeyPrefix })},
		{name: "redis-timeout", usage: "deadline of each Redis operation", bind: duration(func(c *Config) *Duration { return &c.Redis.Timeout })},
		{name: "redis-near-cache-bytes", usage: "bytes of the local copy of Redis reads", bind: integer(func(c *Config) *int { return &c.Redis.NearCacheBytes })},
		{name: "redis-username", usage: "Redis ACL user", bind: str(func(c *Config) *string { return &c.Redis.Username })},
		{name: "redis-password-file", usage: "file holding the Redis password (else $SENDERGUARD_REDIS_PASSWORD)", bind: str(func(c *Config) *string { return &c.Redis.PasswordFile })},
		{name: "redis-tls-ca-file", usage: "CA bundle for rediss://", bind: str(func(c *Config) *string { return &c.Redis.TLSCAFile })},
		{name: "redis-tls-cert-file", usage: "client certificate for rediss://", bind: str(func(c *Config) *string { return &c.Redis.TLSCertFile })},
		{name: "redis-tls-key-file", usage: "client key for rediss://", bind: str(func(c *Config) *string { return &c.Redis.TLSKeyFile })},
		{name: "admin", usage: "loopback HOST:PORT for cache show/forget of a running instance; empty disables", bind: str(func(c *Config) *string { return &c.AdminListen })},
		{name: "callout-per-domain-rate", usage: "probes per minute per domain", bind: integer(func(c *Config) *int { return &c.Callout.PerDomainRatePerMinute })},
	}
	for _, id := range []string{"mailfrom", "helo"} {
		for _, st := range spfResults {
			id, st := id, st
			d = append(d, flagDef{name: "action-spf-" + id + "-" + st, usage: "action for SPF " + st + " of the " + id + " identity",
				bind: action(func(c *Config) *Action { return spfField(c, id, st) })})
		}
	}
	for _, cl := range calloutClasses {
		cl := cl
		d = append(d, flagDef{name: "action-callout-" + cl, usage: "action for callout result " + cl,
			bind: action(func(c *Config) *Action { return calloutField(c, cl) })})
	}
	return d
}

func spfField(c *Config, id, st string) *Action { return actionField(&c.Actions, "spf_"+id, st) }

func calloutField(c *Config, cl string) *Action { return actionField(&c.Actions, "callout", cl) }
