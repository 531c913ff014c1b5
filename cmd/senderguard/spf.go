package main

import (
	"context"
	"flag"
	"fmt"
	"github.com/senderguard/senderguard/config"
	"net/netip"
	"os"
	"time"

	"github.com/senderguard/senderguard/checks/spf"
)

func runSPF(args []string) int {
	fs := flag.NewFlagSet("spf", flag.ContinueOnError)
	dnsServers := fs.String("dns", "", "DNS servers HOST:PORT[,HOST:PORT...] (default: /etc/resolv.conf)")
	ipFlag := fs.String("ip", "", "client IP address")
	helo := fs.String("helo", "", "HELO/EHLO name")
	sender := fs.String("sender", "", "MAIL FROM address; empty checks postmaster@HELO")
	receiver := fs.String("receiver", "", "our host name, for %{r} (default: this host's name)")
	timeout := fs.Duration("timeout", 20*time.Second, "time limit for the whole evaluation")
	verbose := fs.Bool("v", false, "print the evaluation trace on stderr")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ip, err := netip.ParseAddr(*ipFlag)
	if err != nil || fs.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "senderguard spf: -ip must be an IP address (and no extra arguments)")
		return 2
	}
	q, err := newQuerier(config.SplitList(*dnsServers), config.Default().DNS, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "senderguard spf:", err)
		return 2
	}
	if *receiver == "" {
		*receiver, _ = os.Hostname()
	}
	checker := &spf.Checker{Resolver: q, Receiver: *receiver}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	var opts []spf.Option
	if *verbose {
		opts = append(opts, spf.WithTrace(func(s string) { fmt.Fprintln(os.Stderr, "spf:", s) }))
	}
	res := checker.CheckMailFrom(ctx, ip, *helo, *sender, opts...)
	fmt.Println(res.Status)
	if res.Status == spf.Fail {
		fmt.Println(res.Explanation)
	}
	if res.Problem != nil {
		fmt.Fprintln(os.Stderr, "problem:", res.Problem)
	}
	return 0
}
