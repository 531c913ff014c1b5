// Package metrics defines senderguard's Prometheus collectors. Nothing is
// global: New registers everything on the registry it is given.
package metrics

import (
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics holds every collector senderguard exports.
type Metrics struct {
	Sessions       prometheus.Counter
	ActiveSessions prometheus.Gauge
	Messages       prometheus.Counter
	Verdicts       *prometheus.CounterVec // stage, action
	CheckResults   *prometheus.CounterVec // check, result
	// RecipientVerdicts counts each recipient's verdict by the policy that
	// gave it (recipient_domains entry name or "entry-N", or "global").
	RecipientVerdicts *prometheus.CounterVec   // policy, action
	CheckDuration     *prometheus.HistogramVec // check
	CacheRequests     *prometheus.CounterVec   // cache, result (hit, miss)
	CacheEvictions    *prometheus.CounterVec   // cache, reason
	DNSQueries        *prometheus.CounterVec   // type, outcome
	DNSDuration       prometheus.Histogram
	DNSServerUp       *prometheus.GaugeVec   // server
	MilterErrors      *prometheus.CounterVec // kind
	ConfigReloads     *prometheus.CounterVec // result
	Probes            *prometheus.CounterVec // result
	ProbeDuration     prometheus.Histogram
	ProbesTLS         *prometheus.CounterVec // outcome
	// ProbeRules counts probes by the reply rule that classified them;
	// the wiring creates every rule's series at 0.
	ProbeRules    *prometheus.CounterVec // rule
	ProbesSkipped *prometheus.CounterVec // reason
	BreakerTrips  prometheus.Counter
	// SPFRescues counts SPF fails that were held or let through:
	// rescued (DKIM), refused, tempfail (key lookup), trusted_forwarder.
	SPFRescues *prometheus.CounterVec // result
	// SeparateTransactions counts recipients told 452 4.5.3 to come in a
	// transaction of their own.
	SeparateTransactions prometheus.Counter
	FleetWaits           *prometheus.CounterVec // result
	// StoreUp has no labels, but is a vector so that it is absent until a
	// shared store is configured: a lone replica must not look "down".
	StoreUp     *prometheus.GaugeVec
	StoreErrors *prometheus.CounterVec // kind
	BuildInfo   *prometheus.GaugeVec
	// HostnameUnqualified is 1 when our name has no dot (a pod name).
	HostnameUnqualified prometheus.Gauge
	// SourceListed is 1 while a probe address is listed on a blocklist.
	SourceListed *prometheus.GaugeVec // address, list
	// ProbesPaused is 1 while probes are paused for a listing.
	ProbesPaused prometheus.Gauge
	// ProbeConnections counts connections made to mail hosts (a probe
	// may make several): what the probed hosts see of us.
	ProbeConnections prometheus.Counter
	// DMARCResults counts DMARC evaluations of held SPF fails by result
	// (pass, fail), the policy that applied and what it did (disposition).
	DMARCResults *prometheus.CounterVec // result, policy, disposition
	// PostmasterChecks counts RCPT TO:<postmaster@domain> asked after an
	// ambiguous refusal, by result (accepted, refused).
	PostmasterChecks *prometheus.CounterVec // result
}

// New creates the collectors and registers them on reg.
func New(reg prometheus.Registerer, version string) *Metrics {
	const ns = "senderguard"
	latency := []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	m := &Metrics{
		Sessions: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "milter_sessions_total",
			Help: "Milter sessions (SMTP connections) handled."}),
		ActiveSessions: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "milter_sessions_active",
			Help: "Milter sessions open now."}),
		Messages: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "messages_total",
			Help: "Messages (MAIL FROM transactions) judged or passed."}),
		Verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "verdicts_total",
			Help: "Verdicts by SMTP stage and action (accept, tempfail, reject, skip, dry_run_*)."}, []string{"stage", "action"}),
		RecipientVerdicts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "recipient_verdicts_total",
			Help: "Per-recipient verdicts with recipient_domains, by policy entry (name, entry-N or global) and action."}, []string{"policy", "action"}),
		CheckResults: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "check_results_total",
			Help: "Check results by check (spf_helo, spf_mailfrom, callout) and result."}, []string{"check", "result"}),
		CheckDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "check_duration_seconds",
			Help: "Time a check took inside an SMTP stage.", Buckets: latency}, []string{"check"}),
		CacheRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "cache_requests_total",
			Help: "Cache look-ups by cache (dns, callout) and result (hit, miss)."}, []string{"cache", "result"}),
		CacheEvictions: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "cache_evictions_total",
			Help: "Entries dropped from a cache, by reason: entries or bytes (a bound was reached), expired."}, []string{"cache", "reason"}),
		DNSQueries: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "dns_queries_total",
			Help: "DNS exchanges with upstream servers by type and outcome (noerror, nxdomain, servfail, timeout, error, ...)."}, []string{"type", "outcome"}),
		DNSDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "dns_query_duration_seconds",
			Help: "Duration of one DNS exchange.", Buckets: latency}),
		DNSServerUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "dns_server_up",
			Help: "1 while a configured DNS server answers; 0 while it is asked after the others because it did not."}, []string{"server"}),
		MilterErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "milter_errors_total",
			Help: "Milter protocol errors by kind (read, command, write, panic, unknown_command)."}, []string{"kind"}),
		ConfigReloads: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "config_reloads_total",
			Help: "Configuration reloads by result (success, failure)."}, []string{"result"}),
		Probes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "callout_probes_total",
			Help: "Callout SMTP probes made, by classification."}, []string{"result"}),
		ProbeDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "callout_probe_duration_seconds",
			Help: "Duration of one callout probe.", Buckets: latency}),
		SPFRescues: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "spf_rescues_total",
			Help: "MAIL FROM SPF fails held for end of message or let through, by result (rescued by DKIM, refused, tempfail, trusted_forwarder)."}, []string{"result"}),
		SeparateTransactions: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "separate_transactions_total",
			Help: "Recipients answered 452 4.5.3 to come in a transaction of their own (their verdict would differ from the others')."}),
		ProbeRules: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "callout_classifications_total",
			Help: "Callout probes by the reply rule that classified them (see checks/callout/classify.go)."}, []string{"rule"}),
		ProbesTLS: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "callout_probes_tls_total",
			Help: "Probes by TLS outcome of the decisive dialogue (none, tls, failed-then-plain, failed)."}, []string{"outcome"}),
		ProbesSkipped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "callout_probes_skipped_total",
			Help: "Probes not made because a limit or breaker applied, by reason."}, []string{"reason"}),
		BreakerTrips: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "callout_breaker_trips_total",
			Help: "Mail hosts or domains marked unprobeable because they refused our probes."}),
		FleetWaits: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "callout_fleet_waits_total",
			Help: "Lookups that waited for another replica's probe of the same address, by result (result, timeout)."}, []string{"result"}),
		StoreUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "store_up",
			Help: "1 while the shared store (Redis) is in use; 0 while this replica works alone from memory. Absent without redis.url."}, nil),
		StoreErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "store_errors_total",
			Help: "Shared store (Redis) errors by kind (timeout, connection, redis, bad_value)."}, []string{"kind"}),
		HostnameUnqualified: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "hostname_unqualified",
			Help: "1 when our hostname (authserv-id, Received-SPF receiver, probe EHLO) is not a fully qualified domain name."}),
		SourceListed: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "callout_source_listed",
			Help: "1 while a probe source address is listed on a blocklist (DNSBL zone), 0 when the last lookup found it clean."}, []string{"address", "list"}),
		ProbesPaused: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "callout_probes_paused",
			Help: "1 while no probe is made because a probe source address is listed (callout.pause_when_listed)."}),
		ProbeConnections: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "callout_connections_total",
			Help: "SMTP connections made to mail hosts by probes (a probe may make several)."}),
		DMARCResults: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "dmarc_results_total",
			Help: "DMARC evaluations of held SPF fails (spf_fail_rescue: dmarc) by result (pass, fail), the From domain's policy and the disposition applied (none, quarantine, reject; after pct=)."}, []string{"result", "policy", "disposition"}),
		PostmasterChecks: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "callout_postmaster_checks_total",
			Help: "RCPT TO:<postmaster@domain> asked after an ambiguous refusal of the sender, by result (accepted, refused)."}, []string{"result"}),
		BuildInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "build_info",
			Help: "Build information; always 1."}, []string{"version", "goversion"}),
	}
	reg.MustRegister(m.Sessions, m.ActiveSessions, m.Messages, m.Verdicts, m.RecipientVerdicts, m.CheckResults, m.CheckDuration,
		m.CacheRequests, m.CacheEvictions, m.DNSQueries, m.DNSDuration, m.DNSServerUp, m.MilterErrors, m.ConfigReloads,
		m.Probes, m.ProbeDuration, m.ProbeRules, m.SPFRescues, m.SeparateTransactions, m.ProbesTLS, m.ProbesSkipped, m.BreakerTrips, m.FleetWaits, m.StoreUp, m.StoreErrors, m.HostnameUnqualified, m.BuildInfo,
		m.SourceListed, m.ProbesPaused, m.ProbeConnections, m.PostmasterChecks, m.DMARCResults)
	m.BuildInfo.WithLabelValues(version, runtime.Version()).Set(1)
	m.zero()
	return m
}

// zero creates every labelled series the alerts and the dashboard use with
// its known label values, at 0: a series that first appears at 1 makes
// increase() and rate() see nothing, and panels show "No data".
func (m *Metrics) zero() {
	for _, r := range []string{"success", "failure"} {
		m.ConfigReloads.WithLabelValues(r)
	}
	for _, k := range MilterErrorKinds {
		m.MilterErrors.WithLabelValues(k)
	}
	for _, stage := range []string{"mail", "rcpt", "eom"} {
		for _, a := range []string{"accept", "reject", "tempfail", "dry_run_reject", "dry_run_tempfail", "skip", "none"} {
			m.Verdicts.WithLabelValues(stage, a)
		}
	}
	for _, qt := range []string{"TXT", "A", "AAAA", "MX", "PTR"} {
		for _, o := range []string{"noerror", "nxdomain", "servfail", "refused", "timeout", "error"} {
			m.DNSQueries.WithLabelValues(qt, o)
		}
	}
	for _, c := range []string{"exists", "not-exists", "catch-all", "null-mx", "no-mail-host", "unknown"} {
		m.Probes.WithLabelValues(c)
	}
	for _, o := range []string{"none", "tls", "failed-then-plain", "failed"} {
		m.ProbesTLS.WithLabelValues(o)
	}
	for _, r := range []string{"result", "timeout"} {
		m.FleetWaits.WithLabelValues(r)
	}
	for _, r := range []string{"rescued", "refused", "tempfail", "trusted_forwarder", "quarantined", "accepted"} {
		m.SPFRescues.WithLabelValues(r)
	}
	for _, r := range []string{"accepted", "refused"} {
		m.PostmasterChecks.WithLabelValues(r)
	}
}

// MilterErrorKinds are the kinds of senderguard_milter_errors_total.
var MilterErrorKinds = []string{"read", "negotiate", "command", "write", "unknown_command", "panic", "accept", "connection_limit", "other"}

// Discard is a set of collectors registered nowhere: what a filter
// counts when nobody scrapes it (tests, replay), so that callers never
// check for nil.
func Discard() *Metrics { return New(prometheus.NewRegistry(), "") }
