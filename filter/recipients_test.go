package filter

import (
	"fmt"
	"testing"

	"github.com/senderguard/senderguard/config"
)

func recipientsConfig(t testing.TB, entries ...config.RecipientDomain) *config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.RecipientDomains = entries
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestRecipientTableMatch(t *testing.T) {
	cfg := recipientsConfig(t,
		config.RecipientDomain{Name: "strict", Domains: []string{"strict.example", "*.strict.example"}},
		config.RecipientDomain{Name: "deep", Domains: []string{"*.deep.strict.example"}},
		config.RecipientDomain{Name: "books", Domains: []string{"bücher.example"}},
		config.RecipientDomain{Name: "wide", Domains: []string{"*.example"}},
	)
	table := newRecipients(cfg)
	cases := []struct{ domain, want string }{
		{"strict.example", "strict"},
		{"STRICT.Example.", "strict"},       // case and root dot
		{"a.b.strict.example", "strict"},    // wildcard at any depth
		{"x.deep.strict.example", "deep"},   // the longest wildcard wins
		{"deep.strict.example", "strict"},   // "*." covers subdomains only
		{"bücher.example", "books"},         // IDN by A-label
		{"xn--bcher-kva.example", "books"},  // given as A-label
		{"other.example", "wide"},           // the catch-all wildcard
		{"example", "global"},               // "*.example" is not example
		{"example.org", "global"},           // no entry: the default
		{"notstrict.example.org", "global"}, // suffix match is by label
		{"", "global"},
	}
	for _, tc := range cases {
		if got := table.match(tc.domain).label; got != tc.want {
			t.Errorf("%s: matched %q, want %q", tc.domain, got, tc.want)
		}
	}
}

// BenchmarkRecipientMatch: 10,000 configured domains (half exact, half
// wildcards); one RCPT's look-up must stay under 1 µs and a miss must not
// allocate.
func BenchmarkRecipientMatch(b *testing.B) {
	var entries []config.RecipientDomain
	for i := range 100 {
		e := config.RecipientDomain{}
		for j := range 50 {
			e.Domains = append(e.Domains, fmt.Sprintf("customer%d-%d.example", i, j), fmt.Sprintf("*.hosted%d-%d.example", i, j))
		}
		entries = append(entries, e)
	}
	cfg := recipientsConfig(b, entries...)
	table := newRecipients(cfg)
	for _, bc := range []struct{ name, domain string }{
		{"miss", "mail.unrelated-customer.example.org"},
		{"exact", "customer42-7.example"},
		{"wildcard", "mx.eu.hosted99-49.example"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				table.match(bc.domain)
			}
		})
	}
}
