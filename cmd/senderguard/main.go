// Command senderguard is a milter that judges the envelope sender of every
// SMTP session (SPF and callback verification). main only dispatches
// subcommands; each lives in its own file.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/senderguard/senderguard/config"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// command is one subcommand: its one-line summary, usage, and the
// settings it reads (nil: all of them).
type command struct {
	summary, usage, about string
	uses                  func(flag string) bool
}

var commands = map[string]command{
	"serve": {summary: "run the milter (the default command)", usage: "[serve] [-config FILE] [flags]",
		about: "Runs the milter on the settings of the file, the flags overriding it."},
	"check-config": {summary: "validate a config file and print the effective settings", usage: "check-config [-config FILE] [flags]",
		about: "Validates the settings (the file and the flags) and prints them; exit 1 on any problem."},
	"spf": {summary: "evaluate SPF for one client IP, HELO and sender", usage: "spf [-config FILE] -ip IP -helo NAME [-sender ADDRESS] [-v] [flags]",
		about: "Evaluates SPF as the service would: its DNS settings, host name and void-lookup limit.",
		uses: func(f string) bool {
			return f == "hostname" || f == "spf-void-limit" || config.FlagSection(f) == "dns"
		}},
	"probe": {summary: "run one callback verification probe", usage: "probe [-config FILE] [-v] [flags] ADDRESS",
		about: "Probes ADDRESS as the service would: its DNS and prober settings (no actions: a probe refuses nothing).",
		uses: func(f string) bool {
			return f == "hostname" || config.FlagSection(f) == "dns" || proberFlags[f]
		}},
	"cache": {summary: "show or forget what the callout cache learned", usage: "cache show|forget [flags] ADDRESS|DOMAIN"},
	"replay": {summary: "decide logged messages again under a configuration", usage: "replay [-config FILE] [-v] [-json] [flags] LOG...",
		about: "Reads decision lines and decides each logged message again under the settings (no network)."},
	"import":  {summary: "translate another filter's configuration (import policyd-spf FILE)", usage: "import policyd-spf FILE"},
	"version": {summary: "print the version", usage: "version"},
}

// proberFlags are the callout settings a probe reads (the prober's; not
// the filter's nor the cache's).
var proberFlags = map[string]bool{
	"callout-port": true, "callout-helo": true, "callout-mail-from": true, "callout-allow-private": true,
	"callout-catch-all-test": true, "callout-step-timeout": true, "callout-probe-timeout": true, "callout-tls": true,
	"callout-source-ipv4": true, "callout-source-ipv6": true, "callout-public-address": true, "callout-blocklists": true,
	"callout-blocklist-interval": true, "callout-pause-when-listed": true, "callout-skip-mx-hosts": true,
}

// commandOrder is the order "senderguard -h" lists them in.
var commandOrder = []string{"serve", "check-config", "spf", "probe", "cache", "replay", "import", "version"}

func main() {
	args := os.Args[1:]
	cmd := "serve"
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	} else if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
		cmd = "help"
	}
	var code int
	switch cmd {
	case "serve":
		code = runServe(args)
	case "check-config":
		code = runCheckConfig(args)
	case "spf":
		code = runSPF(args)
	case "probe":
		code = runProbe(args)
	case "cache":
		code = runCache(args)
	case "replay":
		code = runReplay(args, os.Stdin, os.Stdout)
	case "import":
		code = runImport(args, os.Stdout, os.Stderr)
	case "version":
		fmt.Println("senderguard", version)
	case "help":
		usage(os.Stdout)
	default:
		fmt.Fprintf(os.Stderr, "senderguard: unknown command %q\n", cmd)
		usage(os.Stderr)
		code = 2
	}
	os.Exit(code)
}

// usage lists the commands, one line each.
func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: senderguard [command] [flags]\n\ncommands:")
	for _, name := range commandOrder {
		fmt.Fprintf(w, "  %-13s %s\n", name, commands[name].summary)
	}
	fmt.Fprintln(w, "\n\"senderguard COMMAND -h\" lists the settings a command reads, grouped as in the YAML file;\n\"senderguard serve -h\" lists every setting.")
}
