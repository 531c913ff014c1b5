package spf

import (
	"net/netip"
	"strings"
	"testing"
)

func FuzzParseRecord(f *testing.F) {
	for _, s := range []string{
		"v=spf1 -all", "v=spf1 a mx/24//64 ptr:%{d} include:_spf.%{d2} exists:%{ir}.%{v}._spf.%{d} ~all",
		"v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 redirect=_spf.example.com exp=%{l}.exp.example.com",
		"v=spf1 foo=%{x} -all", "v=spf1 a:museum.", "v=spf1 ip4:1.2.3.4/033", "v=spf1 %{", "v=spf1 a:\xef\xbb\xbf.test",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !IsRecord(s) {
			return
		}
		rec, err := parseRecord(s)
		if err != nil {
			if rec != nil {
				t.Fatalf("record and error both returned for %q", s)
			}
			return
		}
		// A record that parsed evaluates its macros without panicking.
		env := &macroEnv{sender: "l@d.test", local: "l", senderDomain: "d.test", domain: "d.test",
			ip: netip.MustParseAddr("2001:db8::1"), helo: "h.test"}
		for _, m := range rec.mechs {
			if m.domain != nil {
				m.domain.expand(env)
			}
		}
	})
}

func FuzzMacroExpand(f *testing.F) {
	for _, s := range []string{"%{s}", "%{ir}.%{v}._spf.%{d2}", "%{L-}%%%_%-", "%{d0}", "%{l1r+-}", "%{C} %{r} %{t}", "%{p}", "%"} {
		f.Add(s, "user+tag@example.com", "192.0.2.1")
	}
	f.Fuzz(func(t *testing.T, s, sender, ip string) {
		ms, err := parseMacroString(s, macroLettersExp)
		if err != nil {
			return
		}
		addr, err := netip.ParseAddr(ip)
		if err != nil {
			addr = netip.MustParseAddr("192.0.2.1")
		}
		local, domain := splitSender(sender)
		out := ms.expand(&macroEnv{sender: sender, local: local, senderDomain: domain, domain: domain, ip: addr, helo: "h"})
		if !strings.Contains(s, "%") && out != s {
			t.Fatalf("literal %q expanded to %q", s, out)
		}
	})
}
