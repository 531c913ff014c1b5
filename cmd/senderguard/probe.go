package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/senderguard/senderguard/cache"
	"github.com/senderguard/senderguard/config"
	"github.com/senderguard/senderguard/metrics"
)

// runProbe: senderguard probe [-config FILE] [flags] [-v] ADDRESS probes
// as the service would: the same settings, read from the same file and
// flags (-dns, -callout-port, -callout-helo, -callout-tls,
// -callout-allow-private, -callout-catch-all-test, -callout-probe-timeout
// ...).
func runProbe(args []string) int {
	var verbose bool
	cfg, _, _, rest, code := configFlagSet("probe", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&verbose, "v", false, "print the SMTP dialogue on stderr")
	}, true)
	if cfg == nil {
		return code
	}
	if len(rest) != 1 {
		fmt.Fprintln(os.Stderr, "usage: senderguard probe [-config FILE] [-dns HOST:PORT] [-callout-port N] [-callout-helo NAME] [-callout-tls may|verify|off] [-callout-allow-private] [-callout-catch-all-test] [flags] [-v] ADDRESS")
		return 2
	}
	q, err := newQuerier(cfg.DNS, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "senderguard probe:", err)
		return 2
	}
	if helo := cfg.Callout.Helo; helo != "" && !config.Qualified(helo) {
		fmt.Fprintf(os.Stderr, "senderguard probe: warning: -callout-helo %q is not a fully qualified domain name; strict servers refuse it (the default is this host's FQDN or the address literal of our side of each connection)\n", helo)
	}
	p := newProber(cfg, q)
	// Probes paused while a configured probe address is listed: ask the
	// lists once, as the service does at start.
	if co := cfg.Callout; co.PauseWhenListed && (co.SourceIPv4 != "" || co.SourceIPv6 != "" || co.PublicAddress != "") {
		store, err := cache.NewMemory(64, nil, cache.Hooks{})
		if err != nil {
			fmt.Fprintln(os.Stderr, "senderguard probe:", err)
			return 2
		}
		if w := newWatch(cfg, q, store, watchAddresses(co, nil, nil), metrics.Discard(),
			slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))); w != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			w.Check(ctx)
			cancel()
			p.Pause = w
		}
	}
	if verbose {
		p.Trace = func(s string) { fmt.Fprintln(os.Stderr, s) }
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Callout.ProbeTimeout.D())
	defer cancel()
	r := p.Probe(ctx, rest[0])
	fmt.Println(r.Class)
	fmt.Println(r.Evidence())
	if tls := r.TLSSummary(); verbose && tls != "" {
		fmt.Fprintln(os.Stderr, "TLS:", tls)
	}
	if verbose {
		fmt.Fprintf(os.Stderr, "rule=%s class=%s reply=%q\n", r.RuleName(), r.Class, r.Reply.String())
	}
	return 0
}
