package spf

import (
	"strings"
	"testing"
)

// TestRecordGrammar covers rules of RFC 7208 §4.6.1 (terms), §7.1 (macro
// and domain-spec syntax) and §12 (the collected ABNF) that the
// conformance suite leaves unexercised. Each case names its rule.
func TestRecordGrammar(t *testing.T) {
	cases := []struct {
		rule, record string
		valid        bool
	}{
		// §7.1 domain-end = ( "." toplabel [ "." ] ) / macro-expand, and
		// macro-expand includes the escapes "%%", "%_", "%-".
		{"7.1 domain-end: ends in %_", "v=spf1 exists:%{i}._spf.a1.example%_ -all", true},
		{"7.1 domain-end: ends in %%", "v=spf1 a:mail.a1b.example%% -all", true},
		{"7.1 domain-end: ends in %-", "v=spf1 mx:mail.example%- -all", true},
		{"7.1 domain-end: redirect ends in an escape", "v=spf1 redirect=foo.example%_", true},
		{"7.1 domain-end: exp ends in an escape", "v=spf1 exp=why.example%% -all", true},
		{"7.1 domain-end: include ends in an escape", "v=spf1 include:inc.example%- -all", true},
		{"7.1 domain-end: ptr ends in an escape", "v=spf1 ptr:p.example%_ -all", true},
		{"7.1 domain-end: escape then literal is no toplabel", "v=spf1 a:example.%-com -all", false},
		{"7.1 domain-end: ends in %{d}", "v=spf1 a:%{d} -all", true},
		{"7.1 domain-end: escape mid-name, toplabel at the end", "v=spf1 a:x%_y.example.com -all", true},
		{"7.1 domain-end: trailing dot", "v=spf1 a:example.com. -all", true},
		{"7.1 domain-end: single label", "v=spf1 a:localhost -all", false},
		{"7.1 toplabel: all digits", "v=spf1 a:example.123 -all", false},
		{"7.1 toplabel: digits with a dash", "v=spf1 a:example.123-4 -all", true},
		{"7.1 toplabel: leading dash", "v=spf1 a:example.-com -all", false},
		{"7.1 macro-literal: '%' must start an escape or macro", "v=spf1 a:50%.example.com -all", false},
		{"7.1 macro-literal: unknown escape", "v=spf1 a:x%x.example.com -all", false},
		{"7.1 macro-literal: ends in a lone %", "v=spf1 a:example.com% -all", false},
		{"7.1 macro-letter: c only in exp text", "v=spf1 a:%{c}.example.com -all", false},
		{"7.1 macro-letter: r only in exp text", "v=spf1 exists:%{r}.example.com -all", false},
		{"7.1 macro-letter: unknown letter", "v=spf1 a:%{z}.example.com -all", false},
		{"7.1 macro-letter: upper case (URL escape)", "v=spf1 exists:%{L}.example.com -all", true},
		{"7.1 transformers: digits and r", "v=spf1 exists:%{ir3}.example.com -all", false},
		{"7.1 transformers: digits then r", "v=spf1 exists:%{i3r}.example.com -all", true},
		{"7.1 transformers: zero digits", "v=spf1 exists:%{d0}.example.com -all", false},
		{"7.1 delimiters: all seven", "v=spf1 exists:%{l1r.-+,/_=}.example.com -all", true},
		{"7.1 delimiters: not a delimiter", "v=spf1 exists:%{l!}.example.com -all", false},
		{"7.1 macro-expand: unterminated", "v=spf1 exists:%{l.example.com -all", false},
		{"7.1 unknown modifier value is a macro-string", "v=spf1 foo=%{l}%_%%%- -all", true},
		{"7.1 unknown modifier value with a bad escape", "v=spf1 foo=%q -all", false},
		// §4.6.1 terms = *( 1*SP ( directive / modifier ) ), record = version terms *SP
		{"4.6.1 several spaces between terms", "v=spf1  ip4:192.0.2.1   -all", true},
		{"4.6.1 trailing spaces", "v=spf1 -all  ", true},
		{"4.6.1 version only", "v=spf1", true},
		{"4.6.1 mechanism names are case-insensitive", "v=spf1 IP4:192.0.2.1 Include:a.example -ALL", true},
		{"4.6.1 modifier name: ALPHA then alnum - _ .", "v=spf1 x.y_z-1=foo -all", true},
		{"4.6.1 modifier name must start with ALPHA", "v=spf1 1x=foo -all", false},
		{"4.6.1 term without a name", "v=spf1 =foo -all", false},
		{"4.6.1 unknown mechanism", "v=spf1 foo -all", false},
		{"4.6.1 qualifier on a modifier", "v=spf1 -redirect=a.example", false},
		{"6 redirect twice", "v=spf1 redirect=a.example redirect=b.example", false},
		{"6 exp twice", "v=spf1 exp=a.example exp=b.example -all", false},
		{"6 modifier names are case-insensitive", "v=spf1 Redirect=a.example REDIRECT=b.example", false},
		{"5.1 all takes no argument", "v=spf1 all:foo", false},
		{"5.2 include needs a domain", "v=spf1 include -all", false},
		{"5.6 ip4 prefix at most 32", "v=spf1 ip4:192.0.2.0/33 -all", false},
		{"5.6 ip4 no leading zeros (qnum)", "v=spf1 ip4:192.0.2.01 -all", false},
		{"5.6 ip4 prefix no leading zero", "v=spf1 ip4:192.0.2.0/024 -all", false},
		{"5.6 ip6 mixed notation", "v=spf1 ip6:::ffff:192.0.2.1 -all", true},
		{"5.6 ip6 prefix at most 128", "v=spf1 ip6:2001:db8::/129 -all", false},
		{"5.6 ip4 address in ip6", "v=spf1 ip6:192.0.2.1 -all", false},
		{"5.6 dual-cidr on a and mx", "v=spf1 a/24//64 mx:example.com/24 -all", true},
		{"5.6 ip6-cidr-length at most 128", "v=spf1 a//129 -all", false},
		{"5.6 empty cidr", "v=spf1 a/ -all", false},
		{"5.5 ptr takes no cidr", "v=spf1 ptr/24 -all", false},
		{"3.1 non-ASCII", "v=spf1 a:ex\xe4mple.com -all", false},
	}
	for _, c := range cases {
		t.Run(c.rule, func(t *testing.T) {
			_, err := parseRecord(c.record)
			if (err == nil) != c.valid {
				t.Errorf("%q: error %v, want valid=%v", c.record, err, c.valid)
			}
			if err != nil && !strings.Contains(err.Error(), "syntax") && !strings.Contains(err.Error(), ErrSyntax.Error()) {
				t.Errorf("%q: error %v is not a syntax error", c.record, err)
			}
		})
	}
}
