// Command senderguard is a milter that judges the envelope sender of every
// SMTP session (SPF and callback verification). main only dispatches
// subcommands; each lives in its own file.
package main

import (
	"fmt"
	"os"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	args := os.Args[1:]
	cmd := "serve"
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
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
	case "version":
		fmt.Println("senderguard", version)
	case "help", "-h", "-help":
		usage()
	default:
		fmt.Fprintf(os.Stderr, "senderguard: unknown command %q\n", cmd)
		usage()
		code = 2
	}
	os.Exit(code)
}

func usage() {
	fmt.Fprint(os.Stderr, `usage: senderguard [command] [flags]

commands:
  serve          run the milter (default)
  check-config   validate a config file and print the effective settings
  spf            evaluate SPF for one client IP, HELO and sender
  probe          run one callback verification probe
  cache          show or forget what the callout cache learned (cache show|forget ADDRESS|DOMAIN)
  replay         decide logged messages again under a configuration (replay [flags] LOG...)
  version        print the version

Run "senderguard COMMAND -h" for a command's flags.
`)
}
