package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/senderguard/senderguard/config"
)

func runProbe(args []string) int {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: senderguard probe [-dns HOST:PORT] [-port N] [-helo NAME] [-callout-allow-private] [-callout-tls may|verify|off] [-v] ADDRESS")
		fs.PrintDefaults()
	}
	dnsServers := fs.String("dns", "", "DNS servers HOST:PORT[,HOST:PORT...] (default: /etc/resolv.conf)")
	port := fs.Int("port", 25, "SMTP port of the mail hosts")
	helo := fs.String("helo", "", "our EHLO name (default: the host's FQDN, else the address literal of our side of the connection)")
	allowPrivate := fs.Bool("callout-allow-private", false, "allow probing loopback and private addresses")
	catchAll := fs.Bool("catch-all", false, "also probe a random local part")
	tlsMode := fs.String("callout-tls", "may", "STARTTLS: may, verify or off")
	timeout := fs.Duration("timeout", 60*time.Second, "time limit for the whole probe")
	verbose := fs.Bool("v", false, "print the SMTP dialogue on stderr")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	cfg := config.Default()
	cfg.Callout.Port, cfg.Callout.Helo, cfg.Callout.AllowPrivate, cfg.Callout.CatchAllTest = *port, *helo, *allowPrivate, *catchAll
	cfg.Callout.TLS = *tlsMode
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, "senderguard probe:", err)
		return 2
	}
	q, err := newQuerier(config.SplitList(*dnsServers), cfg.DNS, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "senderguard probe:", err)
		return 2
	}
	if *helo != "" && !config.Qualified(*helo) {
		fmt.Fprintf(os.Stderr, "senderguard probe: warning: -helo %q is not a fully qualified domain name; strict servers refuse it (the default is this host's FQDN or the address literal of our side of each connection)\n", *helo)
	}
	p := newProber(cfg, q)
	if *verbose {
		p.Trace = func(s string) { fmt.Fprintln(os.Stderr, s) }
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	r := p.Probe(ctx, fs.Arg(0))
	fmt.Println(r.Class)
	fmt.Println(r.Evidence())
	if tls := r.TLSSummary(); *verbose && tls != "" {
		fmt.Fprintln(os.Stderr, "TLS:", tls)
	}
	if *verbose {
		fmt.Fprintf(os.Stderr, "rule=%s class=%s reply=%q\n", r.RuleName(), r.Class, r.Reply.String())
	}
	return 0
}
