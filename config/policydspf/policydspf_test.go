package policydspf_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/senderguard/senderguard/config"
	"github.com/senderguard/senderguard/config/policydspf"
)

// imported runs the import of testdata/name and loads its YAML.
func imported(t *testing.T, name string) (*config.Config, string, []string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	opts, notes, err := policydspf.Parse(f, path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := policydspf.Read(opts, path)
	if err != nil {
		t.Fatal(err)
	}
	out, more := s.YAML(path)
	cfg, err := config.Parse(path, []byte(out))
	if err != nil {
		t.Fatalf("the import of %s does not load: %v\n%s", name, err, out)
	}
	return cfg, out, append(append(notes, s.Unsupported...), more...)
}

func action(a config.Action) string { return a.String() }

func nets(n config.Networks) string {
	var out []string
	for _, p := range n {
		out = append(out, p.String())
	}
	return strings.Join(out, ",")
}

// table renders an actions table as "result=action ..." in a fixed order.
func table(a config.SPFActions) string {
	var parts []string
	for _, r := range []string{"pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"} {
		parts = append(parts, r+"="+action(*a.For(r)))
	}
	return strings.Join(parts, " ")
}

// TestImportTable: each file written from policyd-spf.conf(5) — every
// option at least once, each level of HELO_reject and Mail_From_reject —
// and the settings it becomes.
func TestImportTable(t *testing.T) {
	tests := []struct {
		file  string
		check func(t *testing.T, c *config.Config)
		notes []string // substrings of what goes to standard error
	}{
		{"debian.conf", func(t *testing.T, c *config.Config) {
			want(t, "dry_run", c.DryRun, false)
			want(t, "helo", table(c.Actions.SPFHelo), "pass=accept fail=reject 550 5.7.23 softfail=accept neutral=accept none=accept temperror=accept permerror=accept")
			want(t, "mailfrom", table(c.Actions.SPFMailFrom), "pass=accept fail=reject 550 5.7.23 softfail=accept neutral=accept none=accept temperror=accept permerror=accept")
			want(t, "trusted", nets(c.TrustedNetworks), "127.0.0.0/8,::ffff:127.0.0.0/104,::1/128")
			want(t, "rescue", c.SPFFailRescue, "none")
			want(t, "callout", c.Callout.Enabled, false)
			want(t, "helo_first", c.SPF.HELOFirst, true)
			want(t, "headers", strings.Join(c.HeaderFields, ","), "received-spf")
			want(t, "always", len(c.AlwaysAcceptRecipients), 0)
			want(t, "budget", c.StageBudget.D(), 20*time.Second)
		}, []string{"openspf.net, which is gone"}},
		{"strict.conf", func(t *testing.T, c *config.Config) {
			want(t, "helo", table(c.Actions.SPFHelo), "pass=accept fail=reject 550 5.7.1 softfail=reject 550 5.7.1 neutral=reject 550 5.7.1 none=accept temperror=tempfail 450 4.7.1 permerror=reject 550 5.7.1")
			want(t, "mailfrom", table(c.Actions.SPFMailFrom), "pass=accept fail=reject 550 5.7.1 softfail=reject 550 5.7.1 neutral=reject 550 5.7.1 none=accept temperror=tempfail 450 4.7.1 permerror=reject 550 5.7.1")
			want(t, "headers", strings.Join(c.HeaderFields, ","), "authentication-results")
			want(t, "authserv", c.AuthservID, "mx.example.org")
			want(t, "hide", c.HideReceiver, true)
			want(t, "budget", c.StageBudget.D(), 30*time.Second)
			want(t, "void", c.SPF.VoidLimit, 3)
			want(t, "reason", c.SPF.ReasonMessage, "Message {rejectdefer}: SPF said {spf}")
			want(t, "log", c.Log.Level, "debug")
			want(t, "trusted", nets(c.TrustedNetworks), "127.0.0.0/8,::1/128")
		}, nil},
		{"softfail.conf", func(t *testing.T, c *config.Config) {
			want(t, "helo", table(c.Actions.SPFHelo), "pass=accept fail=reject 550 5.7.23 softfail=reject 550 5.7.23 neutral=accept none=accept temperror=accept permerror=accept")
			want(t, "mailfrom", table(c.Actions.SPFMailFrom), "pass=accept fail=reject 550 5.7.23 softfail=reject 550 5.7.23 neutral=accept none=accept temperror=accept permerror=accept")
			want(t, "no_mail", c.SPF.RejectOnlyNoMail, true)
			want(t, "dry_run", c.DryRun, true)
			want(t, "headers", len(c.HeaderFields), 0)
			want(t, "log", c.Log.Level, "warn")
		}, nil},
		{"whitelists.conf", func(t *testing.T, c *config.Config) {
			want(t, "helo", table(c.Actions.SPFHelo), "pass=accept fail=reject 550 5.7.23 softfail=accept neutral=accept none=accept temperror=accept permerror=accept")
			want(t, "null", c.SPF.HELONullSenderOnly, true)
			want(t, "mailfrom", table(c.Actions.SPFMailFrom), "pass=accept fail=accept softfail=accept neutral=accept none=accept temperror=accept permerror=accept")
			want(t, "networks", nets(c.SPF.Whitelist.Networks), "192.0.2.0/28,2001:db8::/64")
			want(t, "helo names", strings.Join(c.SPF.Whitelist.VerifiedHeloNames, ","), "relay.example.com,sender.example.org")
			want(t, "spf domains", strings.Join(c.SPF.Whitelist.SPFDomains, ","), "pobox.com,trustedforwarder.org")
			want(t, "ptr domains", strings.Join(c.SPF.Whitelist.PTRDomains, ","), "yahoo.com,yahoogroups.com")
			want(t, "not pass", strings.Join(c.SPF.RejectNotPassDomains, ","), "aol.com,hotmail.com")
		}, []string{"Domain_Whitelist_PTR: senderguard trusts a reverse DNS name only when it resolves back"}},
		{"nocheck.conf", func(t *testing.T, c *config.Config) {
			want(t, "check_helo", c.SPF.CheckHELO, false)
			want(t, "check_mailfrom", c.SPF.CheckMailFrom, false)
			want(t, "dry_run", c.DryRun, false) // defaultSeedOnly = 1, TestOnly's old name
		}, []string{"HELO_pass_restriction = helo_passed_spf: not imported", "Mail_From_pass_restriction", "Prospective", "Per_User",
			"Whitelist_Lookup_Time", "Mock = False: not imported", "QueueID", "Socket", "No_Such_Option = 1: not imported: not an option"}},
		{"helofalse.conf", func(t *testing.T, c *config.Config) {
			// False: never refused, not even a temperror or permerror.
			want(t, "helo", table(c.Actions.SPFHelo), "pass=accept fail=accept softfail=accept neutral=accept none=accept temperror=accept permerror=accept")
			want(t, "mailfrom", table(c.Actions.SPFMailFrom), "pass=accept fail=reject 550 5.7.23 softfail=accept neutral=accept none=accept temperror=tempfail 450 4.7.24 permerror=reject 550 5.7.24")
			want(t, "budget", c.StageBudget.D(), time.Minute)
			want(t, "void", c.SPF.VoidLimit, 1)
		}, []string{"Lookup_Time = 0 (no limit) cannot be honoured", "Void_Limit = 0 cannot be honoured"}},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			c, out, notes := imported(t, tc.file)
			tc.check(t, c)
			all := strings.Join(notes, "\n")
			for _, n := range tc.notes {
				if !strings.Contains(all, n) {
					t.Errorf("standard error lacks %q:\n%s", n, all)
				}
			}
			// Each setting names the option it came from.
			for _, opt := range []string{"TestOnly", "skip_addresses", "Header_Type", "HELO_reject", "Mail_From_reject", "Void_Limit", "Reason_Message"} {
				if !strings.Contains(out, "# "+opt) && !strings.Contains(out, "; "+opt) {
					t.Errorf("no comment names %s:\n%s", opt, out)
				}
			}
		})
	}
}

func want[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("%s: %v, want %v", what, got, want)
	}
}

// TestImportRefusesBadFiles: a bad value or line exits with the file,
// line and option.
func TestImportRefusesBadFiles(t *testing.T) {
	for file, wantErr := range map[string]string{
		"bad-level.conf":   "testdata/bad-level.conf:2: Mail_From_reject: \"Sometimes\": want one of",
		"bad-network.conf": "testdata/bad-network.conf:1: Whitelist: \"192.0.2.1/24\" has host bits set",
		"bad-line.conf":    "testdata/bad-line.conf:1: \"Reason_Message = a=b\": more than one \"=\"",
		"bad-bool.conf":    "testdata/bad-bool.conf:1: TempError_Defer: \"yes\": want True or False",
		"bad-number.conf":  "testdata/bad-number.conf:1: Lookup_Time: \"soon\"",
	} {
		path := filepath.Join("testdata", file)
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		opts, _, err := policydspf.Parse(f, path)
		f.Close()
		if err == nil {
			_, err = policydspf.Read(opts, path)
		}
		var pe *policydspf.Error
		if err == nil || !errors.As(err, &pe) || !strings.HasPrefix(err.Error(), wantErr) {
			t.Errorf("%s: %v, want %q", file, err, wantErr)
		}
	}
}

func FuzzImport(f *testing.F) {
	for _, name := range []string{"debian.conf", "strict.conf", "whitelists.conf", "nocheck.conf"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(b))
	}
	f.Fuzz(func(t *testing.T, text string) {
		opts, _, err := policydspf.Parse(strings.NewReader(text), "fuzz.conf")
		if err != nil {
			return
		}
		s, err := policydspf.Read(opts, "fuzz.conf")
		if err != nil {
			return
		}
		out, _ := s.YAML("fuzz.conf")
		if _, err := config.Parse("fuzz.conf", []byte(out)); err != nil {
			// The command reports this as an error; it must at least be
			// a field of ours, never a YAML syntax error.
			var fe *config.FieldError
			if !errors.As(err, &fe) {
				t.Errorf("%q: the import is not YAML: %v\n%s", text, err, out)
			}
		}
	})
}
