package config

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestExampleConfigIsTheDefaults(t *testing.T) {
	c, err := Load("../deploy/senderguard.yaml")
	if err != nil {
		t.Fatal(err)
	}
	a, _ := c.Marshal()
	b, _ := Default().Marshal()
	if string(a) != string(b) {
		t.Errorf("deploy/senderguard.yaml differs from the embedded defaults:\n%s\n---\n%s", a, b)
	}
}

func TestBrokenConfigs(t *testing.T) {
	tests := []struct{ file, want string }{
		{"unknown-key.yaml", "testdata/unknown-key.yaml: line 2: field no_such_key not found"},
		{"bad-action.yaml", "testdata/bad-action.yaml: line 3: \"reject 450 5.7.23\": reject needs a 5xx reply code"},
		{"bad-duration.yaml", "testdata/bad-duration.yaml: line 2: bad duration \"soon\""},
		{"bad-network.yaml", "testdata/bad-network.yaml: line 3: bad network \"300.1.1.1\""},
		{"bad-reject-at.yaml", "testdata/bad-reject-at.yaml: line 2: reject_at: must be rcpt or mail, not \"data\""},
		{"unknown-action.yaml", "testdata/unknown-action.yaml: line 3: field maybe not found"},
		{"bad-yaml.yaml", "testdata/bad-yaml.yaml: "},
		{"missing.yaml", "no such file"},
		{"long-budget.yaml", "testdata/long-budget.yaml: line 1: stage_budget: must be positive and at most 1m"},
		{"recipients-dup.yaml", "testdata/recipients-dup.yaml: line 3: recipient_domains.1.domains.1: A.example. is already in recipient_domains entry 0"},
		{"recipients-bad-action.yaml", "testdata/recipients-bad-action.yaml: line 5: recipient_domains.0.actions.spf_mailfrom.softfal: not an action key"},
		{"recipients-unknown-key.yaml", "testdata/recipients-unknown-key.yaml: line 3: field rate not found"},
		{"recipients-bad-domain.yaml", "testdata/recipients-bad-domain.yaml: line 3: recipient_domains.1.domains.0: \"exa mple\" is not a domain name"},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			_, err := Load("testdata/" + tc.file)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestCustomConfigAndFlagOverrides(t *testing.T) {
	c, err := Load("testdata/custom.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !c.DryRun || c.RejectAt != "mail" || len(c.TrustedNetworks) != 0 {
		t.Errorf("file settings not applied: %+v", c)
	}
	if got := c.Actions.Callout.Unknown; got != (Action{Verb: TempFail, Code: 451, Status: "4.4.3", Text: "Try later please"}) {
		t.Errorf("action: %+v", got)
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	ov := BindFlags(fs)
	if err := fs.Parse([]string{"-dry-run=false", "-trusted-networks", "192.0.2.0/24,2001:db8::/32", "-action-spf-mailfrom-softfail", "reject 550 5.7.23 no", "-dns", "127.0.0.1:53", "-stage-budget", "2s"}); err != nil {
		t.Fatal(err)
	}
	if err := ov.Apply(c); err != nil {
		t.Fatal(err)
	}
	if c.DryRun || len(c.TrustedNetworks) != 2 || c.Actions.SPFMailFrom.Softfail.Verb != Reject || c.DNS.Servers[0] != "127.0.0.1:53" || c.StageBudget.D().Seconds() != 2 {
		t.Errorf("flags not applied: %+v", c)
	}
	// A bad flag value is an error naming the flag.
	fs = flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(os.NewFile(0, os.DevNull))
	BindFlags(fs)
	if err := fs.Parse([]string{"-callout-ttl-exists", "forever"}); err == nil || !strings.Contains(err.Error(), "callout-ttl-exists") {
		t.Errorf("bad flag: %v", err)
	}
}

func TestParseAction(t *testing.T) {
	tests := []struct {
		in   string
		want Action
		err  string
	}{
		{"accept", Action{Verb: Accept}, ""},
		{"REJECT 550 5.7.23", Action{Verb: Reject, Code: 550, Status: "5.7.23"}, ""},
		{"tempfail 451 4.7.24 DNS trouble", Action{Verb: TempFail, Code: 451, Status: "4.7.24", Text: "DNS trouble"}, ""},
		{"reject 451 4.7.1", Action{}, "5xx"},
		{"tempfail 451 5.7.1", Action{}, "4.7.1"},
		{"reject 550", Action{}, "needs a reply code and an enhanced status code"},
		{"accept 250", Action{}, "takes no reply"},
		{"discard", Action{}, "accept, tempfail or reject"},
		{"reject 550 5.7.1 caf\u00e9", Action{}, "printable ASCII"},
	}
	for _, tc := range tests {
		got, err := ParseAction(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: got %v, want error with %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: got %+v, %v", tc.in, got, err)
		}
	}
}

func TestLoadSettledRefusesHalfWrittenFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "senderguard.yaml")
	whole := "dry_run: true\nreject_at: mail\n"
	cases := []struct {
		name    string
		content string
		during  string // written while LoadSettled waits; "" leaves the file alone
		wantErr string
	}{
		{"whole", whole, "", ""},
		{"cut short", whole[:len(whole)-6], "", "does not end with a newline"},
		{"being written", "dry_run: true\n", whole, "changed while being read"},
		{"empty", "", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(path, []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
			if tc.during != "" {
				go func() {
					time.Sleep(50 * time.Millisecond)
					os.WriteFile(path, []byte(tc.during), 0o644)
				}()
			}
			c, err := LoadSettled(path, 200*time.Millisecond)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if tc.content == whole && (!c.DryRun || c.RejectAt != "mail") {
					t.Errorf("loaded %+v", c)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("got %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestRecipientDomainsMerge(t *testing.T) {
	c, err := Load("testdata/recipients.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.RecipientDomains) != 4 || c.RecipientDomains[0].Label(0) != "strict" || c.RecipientDomains[1].Label(1) != "entry-1" {
		t.Fatalf("entries: %+v", c.RecipientDomains)
	}
	m := c.RecipientDomains[0].Merged(c.Actions)
	if m.SPFMailFrom.Softfail.Verb != Reject || m.SPFMailFrom.Fail != c.Actions.SPFMailFrom.Fail || m.Callout != c.Actions.Callout {
		t.Errorf("merged actions: softfail %+v, the rest must be the global ones", m.SPFMailFrom.Softfail)
	}
	if c.Actions.SPFMailFrom.Softfail.Verb != Accept {
		t.Error("merging changed the global actions")
	}
	if d, err := CanonicalDomain("Bücher.Example."); err != nil || d != "xn--bcher-kva.example" {
		t.Errorf("canonical IDN: %q %v", d, err)
	}
}

// TestCalloutSourcesMustBeOurs: a source address this host does not have,
// of the wrong family, or a bad pattern or zone is refused with the
// setting's name.
func TestCalloutSourcesMustBeOurs(t *testing.T) {
	for _, tc := range []struct {
		set  func(c *Config)
		want string
	}{
		{func(c *Config) { c.Callout.SourceIPv4 = "192.0.2.44" }, "callout.source_ipv4: 192.0.2.44 is not an address of this host"},
		{func(c *Config) { c.Callout.SourceIPv4 = "::1" }, "callout.source_ipv4: ::1 is not an IPv4 address"},
		{func(c *Config) { c.Callout.SourceIPv6 = "127.0.0.1" }, "callout.source_ipv6: 127.0.0.1 is not an IPv6 address"},
		{func(c *Config) { c.Callout.SourceIPv6 = "2001:db8::44" }, "callout.source_ipv6: 2001:db8::44 is not an address of this host"},
		{func(c *Config) { c.Callout.SourceIPv4 = "mx.example" }, `callout.source_ipv4: "mx.example" is not an IP address`},
		{func(c *Config) { c.Callout.PublicAddress = "nat" }, `callout.public_address: "nat" is not an IP address`},
		{func(c *Config) { c.Callout.Blocklists = []string{"bad zone"} }, `callout.blocklists: "bad zone" is not a DNS zone`},
		{func(c *Config) { c.Callout.BlocklistInterval = Duration(time.Second) }, "callout.blocklist_interval"},
		{func(c *Config) { c.Callout.SkipMXHosts = []string{"*.*.example"} }, `callout.skip_mx_hosts: "*.*.example"`},
		{func(c *Config) { c.Callout.SourceIPv4 = "127.0.0.45" }, ""}, // loopback's /8 is ours
	} {
		c := Default()
		tc.set(c)
		err := c.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("unexpected error: %v", err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("got %v, want %q", err, tc.want)
		}
	}
}

// TestRecipientSPFRules: an entry's spf: block overrides the rules it
// names, and only those.
func TestRecipientSPFRules(t *testing.T) {
	c, err := Parse("r.yaml", []byte("spf:\n  helo_first: true\nrecipient_domains:\n  - domains: [x.example]\n    spf:\n      reject_only_no_mail: true\n      reject_not_pass_domains: [aol.com]\n"))
	if err != nil {
		t.Fatal(err)
	}
	p := c.RecipientDomains[0].MergedSPF(c.SPF.SPFPolicy)
	if !p.HELOFirst || !p.RejectOnlyNoMail || p.HELONullSenderOnly || len(p.RejectNotPassDomains) != 1 {
		t.Errorf("merged: %+v", p)
	}
	if _, err := Parse("r.yaml", []byte("recipient_domains:\n  - domains: [x.example]\n    spf:\n      reject_not_pass_domains: [\"not a domain\"]\n")); err == nil || !strings.Contains(err.Error(), "recipient_domains.0.spf.reject_not_pass_domains") {
		t.Errorf("bad domain: %v", err)
	}
}
