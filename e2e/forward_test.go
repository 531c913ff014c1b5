//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"

	"github.com/senderguard/senderguard/internal/testdkim"
)

// raw sends msg (CRLF line ends, headers and body) as the message's
// data and returns the final reply.
func (c *client) raw(msg string) reply {
	c.t.Helper()
	c.expect(354, "DATA")
	w := c.tc.DotWriter()
	fmt.Fprint(w, msg)
	w.Close()
	return c.read()
}

// TestForwardedMailRescuedByDKIM: mail whose envelope sender fails SPF
// (as forwarding makes it) is held to the end of data; a valid signature
// of the sender's domain, published in the test DNS, rescues it on both
// MTAs, with dkim=pass beside spf=fail in our Authentication-Results. An
// unsigned message, one altered after signing and one signed by another
// domain are refused at end of data; a key that cannot be fetched (the
// DNS server drops the question) tempfails.
func TestForwardedMailRescuedByDKIM(t *testing.T) {
	key := testdkim.NewEd25519(t, "fail.test", "e2e")
	rsa := testdkim.NewRSA(t, "fail.test", "big")
	other := testdkim.NewEd25519(t, "other.test", "o")
	slow := testdkim.NewEd25519(t, "fail.test", "slow")
	if err := h.dns.Add(key.Record(), rsa.Record(), other.Record(), slow.Record()); err != nil {
		t.Fatal(err)
	}
	h.dns.Drop("slow._domainkey.fail.test")
	rescued := metric(t, `senderguard_spf_rescues_total{result="rescued"}`)
	forEachMTA(t, func(t *testing.T, m *mtaInstance) {
		for i, tc := range []struct {
			name   string
			sign   func(string) string
			code   int
			status string
		}{
			{"aligned ed25519 signature", func(s string) string { return key.Sign(t, s) }, 250, ""},
			{"aligned rsa signature", func(s string) string { return rsa.Sign(t, s) }, 250, ""},
			{"unsigned", func(s string) string { return s }, 550, "5.7.23"},
			{"body altered after signing", func(s string) string { return strings.Replace(key.Sign(t, s), "forwarded body", "forwarded b0dy", 1) }, 550, "5.7.23"},
			{"signed by another domain", func(s string) string { return other.Sign(t, s) }, 550, "5.7.23"},
			{"key lookup times out", func(s string) string { return slow.Sign(t, s) }, 451, "4.7.24"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				c := dial(t, m.addr, fmt.Sprintf("127.0.0.%d", 80+i))
				c.expect(250, "EHLO forwarder.test")
				c.expect(250, "MAIL FROM:<alice@fail.test>")
				c.expect(250, "RCPT TO:<u@example.test>")
				tok := token(t)
				r := c.raw(tc.sign(testdkim.Message("alice@fail.test", "u@example.test", tok, "forwarded body of "+tok)))
				c.quit()
				if r.Code != tc.code || !strings.Contains(r.Text, tc.status) {
					t.Fatalf("end of data: %v, want %d %s", r, tc.code, tc.status)
				}
				if tc.code != 250 {
					return
				}
				hdr := delivered(t, m, tok)
				ar := headerValues(hdr, "Authentication-Results")
				if len(ar) != 1 || !strings.Contains(ar[0], "spf=fail smtp.mailfrom=fail.test") || !strings.Contains(ar[0], "dkim=pass header.d=fail.test header.s=") {
					t.Errorf("Authentication-Results: %q", ar)
				}
				if rs := headerValues(hdr, "Received-SPF"); len(rs) != 1 || !strings.HasPrefix(rs[0], "fail ") {
					t.Errorf("Received-SPF: %q, want fail", rs)
				}
			})
		}
	})
	if got := metric(t, `senderguard_spf_rescues_total{result="rescued"}`); got < rescued+4 {
		t.Errorf("rescues counted %v, want at least %v", got, rescued+4)
	}
	if !strings.Contains(h.log(), `rescued_by="dkim d=fail.test s=e2e"`) {
		t.Errorf("no decision line names the rescue:\n%s", tail(h.log(), 5))
	}
}
