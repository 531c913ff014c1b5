package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func build(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "senderguard")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// freeAddr is a loopback address with a port nothing listens on now.
func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func TestCommands(t *testing.T) {
	bin := build(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(good, []byte("dry_run: true\n"), 0o644)
	os.WriteFile(bad, []byte("dry_run: true\nstage_budget: fast\n"), 0o644)
	// spf and probe read the service's file and flags.
	site := filepath.Join(dir, "site.yaml")
	os.WriteFile(site, []byte("callout:\n  helo: vm\n  tls: verify\ndns:\n  servers: ["+freeAddr()+"]\n  timeout: 100ms\n  attempts: 1\n"), 0o644)
	tests := []struct {
		args     []string
		code     int
		contains string
	}{
		{[]string{"version"}, 0, "senderguard dev"},
		{[]string{"check-config", "-config", good}, 0, "dry_run: true"},
		{[]string{"check-config", "-config", good, "-reject-at", "mail"}, 0, "reject_at: mail"},
		{[]string{"check-config", "-config", bad}, 1, bad + ": line 2: bad duration \"fast\""},
		{[]string{"check-config", "-reject-at", "data"}, 1, "reject_at: must be rcpt or mail"},
		{[]string{"serve", "-config", bad}, 1, "line 2: bad duration"},
		{[]string{"-config", filepath.Join(dir, "missing.yaml")}, 1, "no such file"},
		{[]string{"spf", "-ip", "not-an-ip"}, 2, "-ip must be an IP address"},
		{[]string{"probe"}, 2, "usage: senderguard probe"},
		{[]string{"probe", "-config", site, "u@example.test"}, 0, `warning: -callout-helo "vm" is not a fully qualified`},
		{[]string{"probe", "-config", site, "-callout-helo", "probe.example", "u@example.test"}, 0, "unknown"},
		{[]string{"probe", "-config", site, "-callout-tls", "sometimes", "u@example.test"}, 1, "callout.tls"},
		{[]string{"spf", "-config", site, "-ip", "192.0.2.1", "-helo", "h.example", "-sender", "a@example.test"}, 0, "temperror"},
		{[]string{"spf", "-config", bad, "-ip", "192.0.2.1"}, 1, "line 2: bad duration"},
		// A probe source address this host does not have: refused by
		// check-config and at start, naming the setting.
		{[]string{"check-config", "-callout-source-ipv4", "192.0.2.44"}, 1, "callout.source_ipv4: 192.0.2.44 is not an address of this host"},
		{[]string{"serve", "-callout-source-ipv6", "2001:db8::44"}, 1, "callout.source_ipv6: 2001:db8::44 is not an address of this host"},
		{[]string{"check-config", "-callout-source-ipv4", "127.0.0.44"}, 0, "source_ipv4: 127.0.0.44"},
		// The command line explains itself: the commands first, each
		// command's settings grouped as in the YAML, a probe without
		// reject actions, every setting one command away.
		{[]string{"-h"}, 0, "usage: senderguard [command] [flags]\n\ncommands:\n  serve "},
		{[]string{"probe", "-h"}, 0, "callout settings:\n  -callout-allow-private"},
		{[]string{"spf", "-h"}, 0, "dns settings:"},
		{[]string{"serve", "-h"}, 0, "actions settings:\n  -action-callout-catch-all"},
		// A setting the command does not read is still accepted (scripts
		// pass the service's flags), with a warning.
		{[]string{"probe", "-config", site, "-callout-helo", "probe.example", "-action-spf-mailfrom-fail", "accept", "u@example.test"}, 0,
			"senderguard probe: warning: -action-spf-mailfrom-fail is not a setting probe reads; ignored"},
		{[]string{"serve", "-dry-run", "version"}, 2, "unexpected argument \"version\""},
		{[]string{"frobnicate"}, 2, "unknown command"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			out, err := exec.Command(bin, tc.args...).CombinedOutput()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.code || !strings.Contains(string(out), tc.contains) {
				t.Errorf("exit %d, output:\n%s\nwant exit %d and %q", code, out, tc.code, tc.contains)
			}
		})
	}
}
