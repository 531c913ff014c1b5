package dmarc_test

import (
	"errors"
	"testing"
	"time"

	"github.com/senderguard/senderguard/checks/dmarc"
	"github.com/senderguard/senderguard/checks/resolver"
	"github.com/senderguard/senderguard/internal/testdns"
)

func TestIsRecord(t *testing.T) {
	for txt, want := range map[string]bool{
		"v=DMARC1; p=reject": true, "v=DMARC1;p=none": true, "v=DMARC1": true, " v=DMARC1 ; p=none": true,
		"v=DMARC10; p=none": false, "v=spf1 -all": false, "p=reject; v=DMARC1": false, "v=dmarc1; p=none": false,
	} {
		if got := dmarc.IsRecord(txt); got != want {
			t.Errorf("%q: %v, want %v", txt, got, want)
		}
	}
}

func TestRecordPolicyAndDisposition(t *testing.T) {
	tests := []struct {
		txt     string
		org     bool
		applied dmarc.Policy
		comment string
		// dispositions at draws 0, 49, 50, 99
		dis [4]dmarc.Policy
	}{
		{"v=DMARC1; p=reject", false, dmarc.Reject, "p=reject", [4]dmarc.Policy{"reject", "reject", "reject", "reject"}},
		{"v=DMARC1; p=reject; sp=none", true, dmarc.None, "p=reject sp=none", [4]dmarc.Policy{"none", "none", "none", "none"}},
		{"v=DMARC1; p=reject; sp=quarantine", false, dmarc.Reject, "p=reject sp=quarantine", [4]dmarc.Policy{"reject", "reject", "reject", "reject"}},
		{"v=DMARC1; p=quarantine", true, dmarc.Quarantine, "p=quarantine", [4]dmarc.Policy{"quarantine", "quarantine", "quarantine", "quarantine"}},
		{"v=DMARC1; p=reject; pct=50", false, dmarc.Reject, "p=reject pct=50", [4]dmarc.Policy{"reject", "reject", "quarantine", "quarantine"}},
		{"v=DMARC1; p=quarantine; pct=50; adkim=s", false, dmarc.Quarantine, "p=quarantine pct=50 adkim=s", [4]dmarc.Policy{"quarantine", "quarantine", "none", "none"}},
		{"v=DMARC1; p=reject; pct=0", false, dmarc.Reject, "p=reject pct=0", [4]dmarc.Policy{"quarantine", "quarantine", "quarantine", "quarantine"}},
		{"v=DMARC1; p=none", false, dmarc.None, "p=none", [4]dmarc.Policy{"none", "none", "none", "none"}},
	}
	for _, tc := range tests {
		r, err := dmarc.Parse("example.com", tc.txt)
		if err != nil {
			t.Fatalf("%s: %v", tc.txt, err)
		}
		r.Org = tc.org
		if r.Applied() != tc.applied || r.Comment() != tc.comment {
			t.Errorf("%s (org %v): applied %s %q, want %s %q", tc.txt, tc.org, r.Applied(), r.Comment(), tc.applied, tc.comment)
		}
		for i, draw := range []int{0, 49, 50, 99} {
			if got := r.Disposition(draw); got != tc.dis[i] {
				t.Errorf("%s: draw %d: %s, want %s", tc.txt, draw, got, tc.dis[i])
			}
		}
	}
	for _, bad := range []string{"v=DMARC1; p=maybe", "v=DMARC1; sp=none", "v=DMARC1; p=reject; pct=101"} {
		if _, err := dmarc.Parse("example.com", bad); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

func TestAligned(t *testing.T) {
	for _, tc := range []struct {
		strict       bool
		signer, from string
		want         bool
	}{
		{false, "example.com", "example.com", true},
		{false, "mail.example.com", "example.com", true},
		{false, "example.com", "news.example.com", true},
		{true, "mail.example.com", "example.com", false},
		{true, "Example.COM.", "example.com", true},
		{false, "example.co.uk", "other.co.uk", false}, // a public suffix is no organization
		{false, "bulk-mailer.net", "example.com", false},
		{false, "", "example.com", false},
	} {
		if got := dmarc.Aligned(tc.strict, tc.signer, tc.from); got != tc.want {
			t.Errorf("strict=%v %s/%s: %v", tc.strict, tc.signer, tc.from, got)
		}
	}
}

func TestAuthorDomain(t *testing.T) {
	for _, tc := range []struct {
		values []string
		want   string
		err    error
	}{
		{[]string{"Alice <alice@Example.COM>"}, "example.com", nil},
		{[]string{" =?x-unknown?q?Al=E9?= <alice@example.com>"}, "example.com", nil},
		{[]string{"alice@example.com"}, "example.com", nil},
		{nil, "", dmarc.ErrNoFrom},
		{[]string{"a@example.com", "b@example.org"}, "", dmarc.ErrSeveralFroms},
		{[]string{"a@example.com, b@example.org"}, "", dmarc.ErrSeveralAuthors},
		{[]string{"not an address"}, "", dmarc.ErrBadFrom},
		{[]string{"undisclosed-recipients:;"}, "", dmarc.ErrNoFrom},
	} {
		got, err := dmarc.AuthorDomain(tc.values)
		if got != tc.want || !errors.Is(err, tc.err) {
			t.Errorf("%q: %q, %v; want %q, %v", tc.values, got, err, tc.want, tc.err)
		}
	}
}

// TestFind: the From domain's record, else the organizational domain's
// (sp= applies); several or broken records are none; a SERVFAIL is
// temporary, never "no policy".
func TestFind(t *testing.T) {
	srv := testdns.Start(t,
		`_dmarc.example.com. 60 IN TXT "v=DMARC1; p=reject; sp=quarantine"`,
		`_dmarc.own.example.com. 60 IN TXT "v=DMARC1; p=none"`,
		`_dmarc.twice.test. 60 IN TXT "v=DMARC1; p=reject"`,
		`_dmarc.twice.test. 60 IN TXT "v=DMARC1; p=none"`,
		`_dmarc.broken.test. 60 IN TXT "v=DMARC1; p=sometimes"`,
		`_dmarc.other.test. 60 IN TXT "some verification token"`,
		`_dmarc.other.test. 60 IN TXT "v=DMARC1; p=quarantine; pct=20"`,
	)
	srv.ServFail("_dmarc.down.test")
	f := &dmarc.Finder{Resolver: &resolver.Stub{Servers: []string{srv.Addr}, Timeout: time.Second, Attempts: 1}}
	for _, tc := range []struct {
		from    string
		domain  string
		org     bool
		applied dmarc.Policy
		err     error
	}{
		{"example.com", "example.com", false, dmarc.Reject, nil},
		{"news.example.com", "example.com", true, dmarc.Quarantine, nil},
		{"own.example.com", "own.example.com", false, dmarc.None, nil},
		{"other.test", "other.test", false, dmarc.Quarantine, nil},
		{"twice.test", "", false, "", dmarc.ErrNoPolicy},
		{"broken.test", "", false, "", dmarc.ErrNoPolicy},
		{"nothing.test", "", false, "", dmarc.ErrNoPolicy},
		{"down.test", "", false, "", dmarc.ErrTemporary},
	} {
		r, err := f.Find(t.Context(), tc.from)
		if !errors.Is(err, tc.err) {
			t.Errorf("%s: error %v, want %v", tc.from, err, tc.err)
			continue
		}
		if err == nil && (r.Domain != tc.domain || r.Org != tc.org || r.Applied() != tc.applied) {
			t.Errorf("%s: %+v applied %s, want %s org=%v %s", tc.from, r, r.Applied(), tc.domain, tc.org, tc.applied)
		}
	}
}

func FuzzAuthorDomain(f *testing.F) {
	for _, s := range []string{"Alice <alice@example.com>", "a@b, c@d", "=?utf-8?b?w6k=?= <x@y.z>", "g: a@b;", "\"q\\\"x\" <@a,@b:x@y>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d, err := dmarc.AuthorDomain([]string{v})
		if err == nil && d == "" {
			t.Errorf("%q: no domain and no error", v)
		}
	})
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"v=DMARC1; p=reject; sp=none; pct=50; adkim=s", "v=DMARC1;p=none;rua=mailto:a@b", "v=DMARC1; p=quarantine; pct=-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, txt string) {
		r, err := dmarc.Parse("example.com", txt)
		if err != nil {
			return
		}
		switch r.Applied() {
		case dmarc.None, dmarc.Quarantine, dmarc.Reject:
		default:
			t.Errorf("%q: policy %q", txt, r.Applied())
		}
		if r.Pct < 0 || r.Pct > 100 {
			t.Errorf("%q: pct %d", txt, r.Pct)
		}
	})
}
