package filter_test

import (
	"strings"
	"testing"

	"github.com/d--j/go-milter"

	"github.com/senderguard/senderguard/config"
)

// rulesZone adds to the rig's zone what the SPF rules tests need.
var rulesZone = []string{
	`other.test. 300 IN TXT "v=spf1 ip4:198.51.100.1 -all"`,
	`neutral.test. 300 IN TXT "v=spf1 ?all"`,
	`sub.forged.test. 300 IN TXT "v=spf1 ~all"`,
	`badhelo.test. 300 IN TXT "v=spf1 -all"`,
	`badhelo.test. 300 IN A 192.0.2.10`,
	`forwarder.test. 300 IN TXT "v=spf1 ip4:192.0.2.0/28 -all"`,
	`relay.forwarder.test. 300 IN A 192.0.2.10`,
	`10.2.0.192.in-addr.arpa. 300 IN PTR relay.forwarder.test.`,
	`11.2.0.192.in-addr.arpa. 300 IN PTR liar.forwarder.test.`,
	`liar.forwarder.test. 300 IN A 203.0.113.9`,
}

// TestSPFRules: the rules beyond the action table (policyd-spf's
// options), each through the milter: what a message gets at RCPT.
func TestSPFRules(t *testing.T) {
	tests := []struct {
		name     string
		edit     func(c *config.Config)
		ip, helo string
		sender   string
		code     int    // 0: continue
		reply    string // start of the reply after the code
	}{
		{"reject_not_pass_domains: a listed domain's softfail", func(c *config.Config) { c.SPF.RejectNotPassDomains = []string{"forged.test"} },
			"192.0.2.10", "client.test", "a@sub.forged.test", 550, "5.7.23"},
		{"reject_not_pass_domains: another domain's softfail", func(c *config.Config) { c.SPF.RejectNotPassDomains = []string{"forged.test"} },
			"192.0.2.10", "client.test", "a@soft.test", 0, ""},
		{"reject_not_pass_domains: a listed domain's neutral", func(c *config.Config) { c.SPF.RejectNotPassDomains = []string{"neutral.test"} },
			"192.0.2.10", "client.test", "a@neutral.test", 550, "5.7.23"},
		{"reject_only_no_mail: v=spf1 -all refused", func(c *config.Config) { c.SPF.RejectOnlyNoMail = true; c.SPFFailRescue = "none" },
			"192.0.2.10", "client.test", "a@fail.test", 550, "5.7.23"},
		{"reject_only_no_mail: another fail accepted", func(c *config.Config) { c.SPF.RejectOnlyNoMail = true; c.SPFFailRescue = "none" },
			"192.0.2.10", "client.test", "a@other.test", 0, ""},
		{"helo_null_sender_only: HELO fail, a sender", func(c *config.Config) { c.SPF.HELONullSenderOnly = true },
			"192.0.2.20", "badhelo.test", "a@pass.test", 0, ""},
		{"helo_null_sender_only: HELO fail, the null sender", func(c *config.Config) { c.SPF.HELONullSenderOnly = true },
			"192.0.2.20", "badhelo.test", "", 550, "5.7.23 SPF fail: HELO name badhelo.test"},
		{"HELO fail refuses any sender by default", nil,
			"192.0.2.20", "badhelo.test", "a@pass.test", 550, "5.7.23 SPF fail: HELO name"},
		{"helo_first: HELO temperror before a MAIL FROM fail", func(c *config.Config) {
			c.SPF.HELOFirst = true
			c.SPFFailRescue = "none"
			c.Actions.SPFHelo.TempError = mustAction("tempfail 451 4.7.24")
		}, "192.0.2.20", "down.test", "a@other.test", 451, "4.7.24"},
		{"most severe without helo_first", func(c *config.Config) {
			c.SPFFailRescue = "none"
			c.Actions.SPFHelo.TempError = mustAction("tempfail 451 4.7.24")
		}, "192.0.2.20", "down.test", "a@other.test", 550, "5.7.23"},
		{"reason_message without a URL", func(c *config.Config) {
			c.SPF.ReasonMessage = "Message {rejectdefer} due to: {spf}. Please see {url}"
			c.SPFFailRescue = "none"
		}, "192.0.2.10", "client.test", "a@other.test", 550, "5.7.23 Message rejected due to: SPF fail: domain of a@other.test does not designate 192.0.2.10 as permitted sender"},
		{"reason_message with a URL", func(c *config.Config) {
			c.SPF.ReasonMessage = "Message {rejectdefer} due to: {result}. Please see {url}"
			c.SPF.ReasonURL = "https://mx.example/spf"
			c.SPFFailRescue = "none"
		}, "192.0.2.10", "client.test", "a@other.test", 550, "5.7.23 Message rejected due to: fail. Please see https://mx.example/spf"},
		{"verified_helo_names: the name resolves to the client", func(c *config.Config) { c.SPF.Whitelist.VerifiedHeloNames = []string{"badhelo.test"} },
			"192.0.2.10", "badhelo.test", "a@other.test", 0, ""},
		{"verified_helo_names: a forged name", func(c *config.Config) {
			c.SPF.Whitelist.VerifiedHeloNames = []string{"badhelo.test"}
			c.SPFFailRescue = "none"
		},
			"192.0.2.30", "badhelo.test", "a@other.test", 550, "5.7.23"},
		{"spf_domains: the client passes the forwarder's record", func(c *config.Config) { c.SPF.Whitelist.SPFDomains = []string{"nothing.test", "forwarder.test"} },
			"192.0.2.10", "client.test", "a@other.test", 0, ""},
		{"spf_domains: a client outside it", func(c *config.Config) {
			c.SPF.Whitelist.SPFDomains = []string{"forwarder.test"}
			c.SPFFailRescue = "none"
		},
			"192.0.2.20", "client.test", "a@other.test", 550, "5.7.23"},
		{"ptr_domains: a confirmed name", func(c *config.Config) { c.SPF.Whitelist.PTRDomains = []string{"forwarder.test"} },
			"192.0.2.10", "client.test", "a@other.test", 0, ""},
		{"ptr_domains: a name that does not resolve back", func(c *config.Config) {
			c.SPF.Whitelist.PTRDomains = []string{"forwarder.test"}
			c.SPFFailRescue = "none"
		},
			"192.0.2.11", "client.test", "a@other.test", 550, "5.7.23"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, "tcp", func(c *config.Config) {
				if tc.edit != nil {
					tc.edit(c)
				}
			})
			if err := r.dns.Add(rulesZone...); err != nil {
				t.Fatal(err)
			}
			r.dns.ServFail("down.test")
			s, _ := r.open()
			r.want(s.Conn("client.test", milter.FamilyInet, 25025, tc.ip))
			r.want(s.Helo(tc.helo))
			r.want(s.Mail(tc.sender, ""))
			a, err := s.Rcpt("u@example.test", "")
			if tc.code == 0 {
				r.want(a, err)
				return
			}
			r.reply(a, err, tc.code, tc.reply)
		})
	}
}

// TestHeaderFieldsAndHiddenReceiver: header_fields chooses the result
// fields; hide_receiver keeps our name out of Received-SPF.
func TestHeaderFieldsAndHiddenReceiver(t *testing.T) {
	for _, tc := range []struct {
		fields       []string
		hide         bool
		ar, rs       bool
		receiverSeen bool
	}{
		{[]string{"authentication-results", "received-spf"}, false, true, true, true},
		{[]string{"received-spf"}, true, false, true, false},
		{[]string{"authentication-results"}, false, true, false, false},
		{nil, false, false, false, false},
	} {
		r := newRig(t, "tcp", func(c *config.Config) { c.HeaderFields, c.HideReceiver = tc.fields, tc.hide })
		s := r.session("192.0.2.10")
		r.want(s.Mail("a@pass.test", ""))
		r.want(s.Rcpt("u@example.test", ""))
		mods, _, err := r.end(s)
		if err != nil {
			t.Fatal(err)
		}
		ar, rs := added(mods, "Authentication-Results"), added(mods, "Received-SPF")
		if (ar != "") != tc.ar || (rs != "") != tc.rs {
			t.Errorf("%v: Authentication-Results %q, Received-SPF %q", tc.fields, ar, rs)
		}
		if rs != "" && strings.Contains(rs, "mx.test") != tc.receiverSeen {
			t.Errorf("hide_receiver=%v: Received-SPF %q", tc.hide, rs)
		}
		if tc.hide && !strings.Contains(rs, `receiver="<UNKNOWN>"`) {
			t.Errorf("hide_receiver: %q", rs)
		}
	}
}

// TestSPFRulesPerRecipientDomain: an entry of recipient_domains
// overrides the SPF rules it names for its recipients only.
func TestSPFRulesPerRecipientDomain(t *testing.T) {
	forged := []string{"soft.test"}
	r := newRig(t, "tcp", func(c *config.Config) {
		c.RecipientDomains = []config.RecipientDomain{{Name: "strict", Domains: []string{"strict.example"},
			SPF: &config.RecipientSPF{RejectNotPassDomains: &forged}}}
	})
	s := r.session("192.0.2.10")
	r.want(s.Mail("a@soft.test", ""))
	r.want(s.Rcpt("u@example.test", ""))
	a, err := s.Rcpt("u@strict.example", "")
	r.reply(a, err, 550, "5.7.23 SPF softfail")
	if !lineWith(r.log.String(), "rcpt_outcomes=\"example.test:accept strict.example:reject\"") {
		// The line is written when the transaction ends.
		r.end(s)
		if !lineWith(r.log.String(), "example.test:accept strict.example:reject") {
			t.Errorf("decision line:\n%s", r.log)
		}
	}
}
