// Package filter is the milter edge of senderguard: one session value per
// SMTP connection following each stage, the policy that turns check results
// into verdicts, and the headers added at end of message. The milter library
// stays in this package.
package filter

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/senderguard/senderguard/checks/callout"
	"github.com/senderguard/senderguard/checks/dkim"
	"github.com/senderguard/senderguard/checks/spf"
	"github.com/senderguard/senderguard/config"
	"github.com/senderguard/senderguard/metrics"
)

// Verifier is the callout seam: a cached prober answers within ctx.
type Verifier interface {
	Verify(ctx context.Context, address string) *callout.Result
	// NullMX reports whether the domain publishes a null MX (RFC 7505);
	// known is false when the lookup failed.
	NullMX(ctx context.Context, domain string) (isNull, known bool)
}

// Deps are the long-lived parts every session uses.
type Deps struct {
	SPF     *spf.Checker
	Callout Verifier // nil disables callouts
	// DKIM verifies held SPF fails at end of message (spf_fail_rescue);
	// nil refuses them at once.
	DKIM *dkim.Verifier
	// DMARC finds the From domain's policy for spf_fail_rescue: dmarc;
	// nil leaves held SPF fails to the DKIM rescue.
	DMARC DMARCFinder
	// Draw, when set, replaces the random pct= sample (tests): a number
	// in [0, 100).
	Draw    func() int
	Log     *slog.Logger
	Metrics *metrics.Metrics
}

// runtime is one immutable generation of configuration; SIGHUP swaps it.
type runtime struct {
	cfg        *config.Config
	hostname   string
	authservID string
	// recipients gives each recipient its policy: an entry of
	// recipient_domains, or the global settings.
	recipients *recipientTable
	// Whitelisted names, lower case without the root dot, made once here
	// rather than for every message.
	heloNames, senderDomains []string
	forwarderNames           []string // trusted_forwarders.names, canonical
	skipProbe                []string // callout.skip_domains, canonical
	// Which result fields end of message adds (header_fields).
	authResults, receivedSPF bool
	// The whitelists that need DNS (dnswhitelist.go), canonical.
	verifiedHelo, spfDomains, ptrDomains []string
}

// Filter is shared by all sessions.
type Filter struct {
	deps Deps
	rt   atomic.Pointer[runtime]
}

// New returns a filter running cfg.
func New(cfg *config.Config, deps Deps) *Filter {
	if deps.Log == nil {
		deps.Log = slog.New(slog.DiscardHandler)
	}
	if deps.Metrics == nil {
		deps.Metrics = metrics.Discard()
	}
	f := &Filter{deps: deps}
	f.Apply(cfg)
	return f
}

// Apply makes cfg the configuration of every message that starts from now.
func (f *Filter) Apply(cfg *config.Config) {
	rt := &runtime{cfg: cfg, hostname: cfg.Host()}
	rt.authservID = cfg.AuthservID
	if rt.authservID == "" {
		rt.authservID = rt.hostname
	}
	rt.recipients = newRecipients(cfg)
	rt.heloNames = canonicalNames(cfg.SPF.Whitelist.HeloNames)
	rt.senderDomains = canonicalNames(cfg.SPF.Whitelist.SenderDomains)
	rt.forwarderNames = canonicalNames(cfg.TrustedForwarders.Names)
	rt.skipProbe = canonicalNames(cfg.Callout.SkipDomains)
	rt.authResults = slices.Contains(cfg.HeaderFields, config.HeaderAuthResults)
	rt.receivedSPF = slices.Contains(cfg.HeaderFields, config.HeaderReceivedSPF)
	wl := &cfg.SPF.Whitelist
	rt.verifiedHelo, rt.spfDomains, rt.ptrDomains = canonicalNames(wl.VerifiedHeloNames), canonicalNames(wl.SPFDomains), canonicalNames(wl.PTRDomains)
	f.rt.Store(rt)
}

// Config is the configuration in force.
func (f *Filter) Config() *config.Config { return f.rt.Load().cfg }

// skipReason tells why a message is not judged, "" when it is.
func (rt *runtime) skipReason(ip netip.Addr, helo, auth, sender string) string {
	cfg := rt.cfg
	switch {
	case !ip.IsValid():
		return "no-client-ip"
	case cfg.TrustedNetworks.Contains(ip):
		return "trusted"
	case cfg.SkipAuthenticated && auth != "":
		return "authenticated"
	case cfg.SPF.Whitelist.Networks.Contains(ip):
		return "whitelist-network"
	case matchName(rt.heloNames, helo, false):
		return "whitelist-helo"
	case matchName(rt.senderDomains, domainOf(sender), true):
		return "whitelist-sender"
	}
	return ""
}

// canonicalName is a name in lower case without the root dot.
func canonicalName(n string) string { return strings.TrimSuffix(strings.ToLower(n), ".") }

// canonicalNames is each of list as canonicalName makes it.
func canonicalNames(list []string) []string {
	var out []string
	for _, n := range list {
		out = append(out, canonicalName(n))
	}
	return out
}

// matchName compares name with a list of canonical names; with sub, a
// listed domain also covers its subdomains.
func matchName(list []string, name string, sub bool) bool {
	if name == "" || len(list) == 0 {
		return false
	}
	name = canonicalName(name)
	for _, l := range list {
		if name == l || (sub && len(name) > len(l) && name[len(name)-len(l)-1] == '.' && strings.HasSuffix(name, l)) {
			return true
		}
	}
	return false
}

func domainOf(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return addr[i+1:]
	}
	return ""
}

func localPart(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return addr[:i]
	}
	return addr
}

func since(t time.Time) float64 { return time.Since(t).Seconds() }
