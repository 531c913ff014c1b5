//go:build e2e

package e2e

import (
	"strings"
	"testing"
)

const recipientConfig = `recipient_domains:
  - name: strict
    domains: [strict.example.test]
    actions:
      spf_mailfrom: {softfail: "reject 550 5.7.23"}
  - domains: [trial.example.test]
    dry_run: true
    actions:
      spf_mailfrom: {softfail: "reject 550 5.7.23"}
  - domains: [noprobe.example.test]
    callout: {enabled: false}
`

// TestPerRecipientPolicy: one gateway, several domains, each recipient
// judged by its own domain's policy, on both MTAs.
func TestPerRecipientPolicy(t *testing.T) {
	if err := h.dns.Add(`np.test. 300 IN TXT "v=spf1 ?all"`, `np.test. 300 IN MX 10 mx.np.test.`, `mx.np.test. 300 IN A 127.0.0.67`); err != nil {
		t.Fatal(err)
	}
	catchAll(t, "127.0.0.61") // soft.test's mail server: softfail senders are probed
	npServer := catchAll(t, "127.0.0.67")
	h.reload(t, baseConfig+recipientConfig, true)
	defer h.reload(t, baseConfig, true)

	forEachMTA(t, func(t *testing.T, m *mtaInstance) {
		t.Run("split message", func(t *testing.T) {
			c := dial(t, m.addr, "127.0.0.40")
			c.expect(250, "EHLO client.test")
			sender := "split-" + m.name + "@soft.test"
			c.expect(250, "MAIL FROM:<%s>", sender)
			if r := c.cmd("RCPT TO:<a@strict.example.test>"); r.Code != 550 || !strings.HasPrefix(r.Text, "5.7.23 ") || !strings.Contains(r.Text, "SPF softfail") {
				t.Fatalf("strict recipient: %v, want 550 5.7.23", r)
			}
			c.expect(250, "RCPT TO:<b@other.example.test>")
			c.expect(250, "RCPT TO:<postmaster@strict.example.test>")
			tok := token(t)
			if r := c.data(tok); r.Code != 250 {
				t.Fatalf("DATA: %v", r)
			}
			c.quit()
			delivered(t, m, tok)
			if l := decisionLine(t, sender); !strings.Contains(l, `rcpt_outcomes="strict.example.test:reject other.example.test:accept"`) {
				t.Errorf("decision line: %s", l)
			}
		})
		t.Run("dry-run domain delivered and marked", func(t *testing.T) {
			c := dial(t, m.addr, "127.0.0.41")
			c.expect(250, "EHLO client.test")
			c.expect(250, "MAIL FROM:<trial-%s@soft.test>", m.name)
			c.expect(250, "RCPT TO:<t@trial.example.test>")
			if r := c.cmd("RCPT TO:<s@strict.example.test>"); r.Code != 550 {
				t.Fatalf("strict recipient: %v", r)
			}
			tok := token(t)
			if r := c.data(tok); r.Code != 250 {
				t.Fatalf("DATA: %v", r)
			}
			c.quit()
			xs := headerValues(delivered(t, m, tok), "X-Senderguard")
			if len(xs) != 1 || !strings.Contains(xs[0], "dry-run=would-reject (550 5.7.23 ") || !strings.Contains(xs[0], " for trial.example.test") {
				t.Errorf("X-Senderguard: %q", xs)
			}
		})
		t.Run("callouts off: no probe; another domain: probed", func(t *testing.T) {
			before := npServer.Conns()
			c := dial(t, m.addr, "127.0.0.42")
			c.expect(250, "EHLO client.test")
			c.expect(250, "MAIL FROM:<np-%s@np.test>", m.name)
			c.expect(250, "RCPT TO:<x@noprobe.example.test>")
			if n := npServer.Conns() - before; n != 0 {
				t.Fatalf("callouts-off recipient caused %d probes", n)
			}
			c.expect(250, "RCPT TO:<y@other.example.test>")
			c.quit()
			if n := npServer.Conns() - before; n != 1 {
				t.Errorf("recipient with callouts on: %d probes, want 1", n)
			}
		})
	})
	t.Run("reload adds a domain", func(t *testing.T) {
		c := dial(t, h.postfix.addr, "127.0.0.43")
		c.expect(250, "EHLO client.test")
		c.expect(250, "MAIL FROM:<add1@soft.test>")
		c.expect(250, "RCPT TO:<a@added.example.test>")
		c.quit()
		h.reload(t, baseConfig+strings.Replace(recipientConfig, "[strict.example.test]", "[strict.example.test, added.example.test]", 1), true)
		c = dial(t, h.postfix.addr, "127.0.0.43")
		c.expect(250, "EHLO client.test")
		c.expect(250, "MAIL FROM:<add2@soft.test>")
		if r := c.cmd("RCPT TO:<a@added.example.test>"); r.Code != 550 {
			t.Errorf("after the reload: %v, want 550", r)
		}
		c.quit()
	})
}
