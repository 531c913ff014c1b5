package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/senderguard/senderguard/checks/spf"
)

// runSPF: senderguard spf [-config FILE] [flags] -ip IP -helo NAME
// [-sender ADDRESS] [-timeout D] [-v] evaluates as the service would,
// with the same DNS settings (-dns ...) and receiver (-hostname).
func runSPF(args []string) int {
	var ipFlag, helo, sender string
	var timeout time.Duration
	var verbose bool
	cfg, _, _, rest, code := configFlagSet("spf", args, func(fs *flag.FlagSet) {
		fs.StringVar(&ipFlag, "ip", "", "client IP address")
		fs.StringVar(&helo, "helo", "", "the client's HELO/EHLO name")
		fs.StringVar(&sender, "sender", "", "MAIL FROM address; empty checks postmaster@HELO")
		fs.DurationVar(&timeout, "timeout", 20*time.Second, "time limit for the whole evaluation")
		fs.BoolVar(&verbose, "v", false, "print the evaluation trace on stderr")
	}, true)
	if cfg == nil {
		return code
	}
	ip, err := netip.ParseAddr(ipFlag)
	if err != nil || len(rest) > 0 {
		fmt.Fprintln(os.Stderr, "senderguard spf: -ip must be an IP address (and no extra arguments)")
		return 2
	}
	q, err := newQuerier(cfg.DNS, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "senderguard spf:", err)
		return 2
	}
	checker := &spf.Checker{Resolver: q, Receiver: cfg.Host(), VoidLimit: cfg.SPF.VoidLimit}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var opts []spf.Option
	if verbose {
		opts = append(opts, spf.WithTrace(func(s string) { fmt.Fprintln(os.Stderr, "spf:", s) }))
	}
	res := checker.CheckMailFrom(ctx, ip, helo, sender, opts...)
	fmt.Println(res.Status)
	if res.Status == spf.Fail {
		fmt.Println(res.Explanation)
	}
	if res.Problem != nil {
		fmt.Fprintln(os.Stderr, "problem:", res.Problem)
	}
	return 0
}
