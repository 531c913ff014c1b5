package dkim_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/senderguard/senderguard/checks/dkim"
	"github.com/senderguard/senderguard/checks/resolver"
	"github.com/senderguard/senderguard/internal/testdkim"
	"github.com/senderguard/senderguard/internal/testdns"
)

// feed hands raw (CRLF) to c as a milter would: each header field's name
// and value (folded lines joined by LF, the space after the colon kept or
// not), then the body in chunks of n bytes.
func feed(c *dkim.Check, raw string, leadingSpace bool, n int) {
	head, body, _ := strings.Cut(raw, "\r\n\r\n")
	var fields []string
	for _, l := range strings.Split(head, "\r\n") {
		if len(fields) > 0 && (strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t")) {
			fields[len(fields)-1] += "\n" + l
			continue
		}
		fields = append(fields, l)
	}
	for _, f := range fields {
		name, value, _ := strings.Cut(f, ":")
		if !leadingSpace {
			value = strings.TrimPrefix(value, " ")
		}
		c.Header(name, value, leadingSpace)
	}
	for b := []byte(body); len(b) > 0; {
		k := min(n, len(b))
		c.Body(b[:k])
		b = b[k:]
	}
}

func TestVerify(t *testing.T) {
	ed := testdkim.NewEd25519(t, "sender.test", "ed")
	rsa := testdkim.NewRSA(t, "sender.test", "rsa")
	other := testdkim.NewEd25519(t, "other.test", "o")
	slow := testdkim.NewEd25519(t, "slow.test", "s")
	dns := testdns.Start(t, ed.Record(), rsa.Record(), other.Record(), slow.Record(),
		`nokey._domainkey.sender.test. 300 IN TXT "v=DKIM1; k=ed25519; p="`)
	dns.ServFail("s._domainkey.slow.test")
	v := &dkim.Verifier{Resolver: &resolver.Stub{Servers: []string{dns.Addr}, Timeout: time.Second, Attempts: 1}}
	msg := testdkim.Message("alice@sender.test", "bob@rcpt.test", "hello there", strings.Repeat("a line of the body\n", 500))
	for _, tc := range []struct {
		name   string
		raw    string
		want   []dkim.Status
		domain string
	}{
		{"ed25519", ed.Sign(t, msg), []dkim.Status{dkim.Pass}, "sender.test"},
		{"rsa in split strings", rsa.Sign(t, msg), []dkim.Status{dkim.Pass}, "sender.test"},
		{"two signatures", other.Sign(t, ed.Sign(t, msg)), []dkim.Status{dkim.Pass, dkim.Pass}, "other.test"},
		{"body altered", strings.Replace(ed.Sign(t, msg), "a line of", "a lime of", 1), []dkim.Status{dkim.Fail}, "sender.test"},
		{"header altered", strings.Replace(ed.Sign(t, msg), "Subject: hello there", "Subject: hello here", 1), []dkim.Status{dkim.Fail}, "sender.test"},
		{"key lookup fails temporarily", slow.Sign(t, msg), []dkim.Status{dkim.TempError}, "slow.test"},
		{"unsigned", msg, nil, ""},
	} {
		for _, lead := range []bool{false, true} {
			c := v.Start(context.Background(), time.Second)
			feed(c, tc.raw, lead, 700)
			res := c.Finish()
			if res.Err != nil {
				t.Errorf("%s: %v", tc.name, res.Err)
				continue
			}
			var got []dkim.Status
			for _, s := range res.Signatures {
				got = append(got, s.Status)
			}
			if strings.Join(statuses(got), ",") != strings.Join(statuses(tc.want), ",") {
				t.Errorf("%s (leading space %v): %v, want %v (%+v)", tc.name, lead, got, tc.want, res.Signatures)
				continue
			}
			if len(res.Signatures) > 0 && (res.Signatures[0].Domain != tc.domain || res.Signatures[0].Selector == "") {
				t.Errorf("%s: first signature d=%s s=%s, want d=%s and its selector", tc.name, res.Signatures[0].Domain, res.Signatures[0].Selector, tc.domain)
			}
		}
	}
}

func statuses(s []dkim.Status) []string {
	var out []string
	for _, x := range s {
		out = append(out, string(x))
	}
	return out
}

// TestSlowClientDoesNotEatTheLookupBudget: the key lookup's budget runs
// from when the library asks (the header section complete), not from the
// first header field: a client slow to send its message is not
// tempfailed for it.
func TestSlowClientDoesNotEatTheLookupBudget(t *testing.T) {
	key := testdkim.NewEd25519(t, "sender.test", "ed")
	dns := testdns.Start(t, key.Record())
	v := &dkim.Verifier{Resolver: &resolver.Stub{Servers: []string{dns.Addr}, Timeout: time.Second, Attempts: 1}}
	raw := key.Sign(t, testdkim.Message("a@sender.test", "b@rcpt.test", "slow", "body"))
	head, body, _ := strings.Cut(raw, "\r\n\r\n")
	c := v.Start(context.Background(), 200*time.Millisecond)
	feed(c, head+"\r\n\r\n", false, 100)
	time.Sleep(300 * time.Millisecond)
	c.Body([]byte(body))
	if res := c.Finish(); len(res.Signatures) != 1 || res.Signatures[0].Status != dkim.Pass {
		t.Errorf("%+v, want one pass", res)
	}
}

// TestHeaderSectionIsBounded: a header section over the bound is not
// verified (an error, no pass), and feeding more never blocks.
func TestHeaderSectionIsBounded(t *testing.T) {
	dns := testdns.Start(t)
	v := &dkim.Verifier{Resolver: &resolver.Stub{Servers: []string{dns.Addr}, Timeout: time.Second, Attempts: 1}}
	c := v.Start(context.Background(), time.Second)
	long := strings.Repeat("x", 1000)
	for range 2000 {
		c.Header("X-Filler", long, false)
	}
	c.Body([]byte("body\r\n"))
	if res := c.Finish(); res.Err == nil || len(res.Signatures) != 0 {
		t.Errorf("2 MB of header: %+v, want an error and no signature", res)
	}
}

func TestAbandonedCheckEnds(t *testing.T) {
	dns := testdns.Start(t)
	v := &dkim.Verifier{Resolver: &resolver.Stub{Servers: []string{dns.Addr}, Timeout: time.Second, Attempts: 1}}
	c := v.Start(context.Background(), time.Second)
	c.Header("From", "<a@b.test>", false)
	c.Close()
	c.Body([]byte("more after close must not block\r\n"))
}

func TestTagsAndAlignment(t *testing.T) {
	for _, tc := range []struct{ value, d, s string }{
		{"v=1; a=rsa-sha256; d=Example.COM; s=sel1; h=from; bh=x; b=y", "example.com", "sel1"},
		{"v=1;d=example.com.;s=\r\n\t sel2;b=", "example.com", "sel2"},
		{"d=a.test; d=b.test; s=x", "", "x"},
		{"s=only", "", "only"},
		{"garbage", "", ""},
	} {
		if d, s := dkim.Tags(tc.value); d != tc.d || s != tc.s {
			t.Errorf("Tags(%q) = %q, %q; want %q, %q", tc.value, d, s, tc.d, tc.s)
		}
	}
	for _, tc := range []struct {
		signer, sender string
		want           bool
	}{
		{"example.com", "example.com", true},
		{"mail.example.com", "example.com", true},
		{"example.com", "bounces.example.com", true},
		{"example.co.uk", "other.co.uk", false},
		{"a.example.co.uk", "b.example.co.uk", true},
		{"co.uk", "example.co.uk", false},
		{"example.net", "example.com", false},
		{"EXAMPLE.com.", "example.COM", true},
		{"", "example.com", false},
		{"university.test", "forwarder.test", false},
	} {
		if got := dkim.Aligned(tc.signer, tc.sender); got != tc.want {
			t.Errorf("Aligned(%q, %q) = %v, want %v", tc.signer, tc.sender, got, tc.want)
		}
	}
}

func FuzzTags(f *testing.F) {
	f.Add("v=1; d=example.com; s=sel")
	f.Add(";;==;d=;s")
	f.Fuzz(func(t *testing.T, v string) {
		d, _ := dkim.Tags(v)
		if strings.ContainsAny(d, " \t\r\n") {
			t.Fatalf("domain %q keeps whitespace", d)
		}
	})
}

func FuzzAligned(f *testing.F) {
	f.Add("mail.example.com", "example.com")
	f.Add("a..b", ".")
	f.Fuzz(func(t *testing.T, a, b string) {
		if dkim.Aligned(a, b) != dkim.Aligned(b, a) {
			t.Fatalf("alignment of %q and %q is not symmetric", a, b)
		}
	})
}
