//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

var tokens atomic.Int64

func token(t testing.TB) string {
	return fmt.Sprintf("%s-%d-%d", strings.NewReplacer("/", "-", " ", "-").Replace(t.Name()), time.Now().UnixNano()%1e6, tokens.Add(1))
}

// forEachMTA runs f against Postfix and Sendmail.
func forEachMTA(t *testing.T, f func(t *testing.T, m *mtaInstance)) {
	for _, m := range []*mtaInstance{h.postfix, h.sendmail} {
		t.Run(m.name, func(t *testing.T) { f(t, m) })
	}
}

func TestCleanMessageDeliveredWithHeaders(t *testing.T) {
	forEachMTA(t, func(t *testing.T, m *mtaInstance) {
		c := dial(t, m.addr, "127.0.0.10")
		c.expect(250, "EHLO client.test")
		c.expect(250, "MAIL FROM:<alice@pass.test> BODY=8BITMIME")
		c.expect(250, "RCPT TO:<u@example.test>")
		tok := token(t)
		if r := c.data(tok); r.Code != 250 {
			t.Fatalf("end of data: %v", r)
		}
		c.quit()
		hdr := delivered(t, m, tok)
		lines := headerLines(hdr)
		// Our fields sit right below the MTA's own Received: line.
		idx := -1
		for i, l := range lines {
			if strings.HasPrefix(l, "Received:") {
				idx = i
				break
			}
		}
		if idx < 0 || idx+2 >= len(lines) {
			t.Fatalf("no Received: line in\n%s", hdr)
		}
		wantAR := "Authentication-Results: mx.example.test; spf=pass smtp.mailfrom=pass.test; spf=none smtp.helo=client.test"
		if lines[idx+1] != wantAR {
			t.Errorf("line after Received:\n got %q\nwant %q", lines[idx+1], wantAR)
		}
		if !strings.HasPrefix(lines[idx+2], "Received-SPF: pass (mx.example.test: domain of alice@pass.test designates 127.0.0.10 as permitted sender) client-ip=127.0.0.10; envelope-from=alice@pass.test; helo=client.test;") {
			t.Errorf("Received-SPF line: %q", lines[idx+2])
		}
		line := decisionLine(t, "alice@pass.test")
		for _, want := range []string{"spf_mailfrom=pass", "client_ip=127.0.0.10", "helo=client.test", "verdict=accept"} {
			if !strings.Contains(line, want) {
				t.Errorf("decision line lacks %q: %s", want, line)
			}
		}
	})
}

// TestSPFFailRejectedButPostmasterAccepted: an unsigned message whose
// sender fails SPF is held for the DKIM rescue and refused at end of
// data; postmaster, which must stay reachable, cannot share its
// transaction (the milter refuses a message whole) and is told 452 4.5.3,
// then gets the message in a transaction of its own. Nothing is lost
// silently.
func TestSPFFailRejectedButPostmasterAccepted(t *testing.T) {
	before := metric(t, `senderguard_verdicts_total{action="reject",stage="eom"}`)
	forEachMTA(t, func(t *testing.T, m *mtaInstance) {
		c := dial(t, m.addr, "127.0.0.11")
		c.expect(250, "EHLO client.test")
		c.expect(250, "MAIL FROM:<bob@fail.test>")
		c.expect(250, "RCPT TO:<u@example.test>")
		if r := c.cmd("RCPT TO:<postmaster@example.test>"); r.Code != 452 || !strings.Contains(r.Text, "4.5.3") {
			t.Fatalf("postmaster beside a held recipient: %v, want 452 4.5.3", r)
		}
		r := c.data(token(t))
		if r.Code != 550 || !strings.Contains(r.Text, "5.7.23 ") || !strings.Contains(r.Text, "SPF fail: sender bob@fail.test is not allowed to be sent from 127.0.0.11: 127.0.0.11 is not a mail server of fail.test") {
			t.Fatalf("end of data: got %v", r)
		}
		c.expect(250, "MAIL FROM:<bob@fail.test>")
		c.expect(250, "RCPT TO:<postmaster@example.test>")
		tok := token(t)
		if r := c.data(tok); r.Code != 250 {
			t.Fatalf("postmaster's own transaction: %v", r)
		}
		c.quit()
		delivered(t, m, tok)
	})
	if after := metric(t, `senderguard_verdicts_total{action="reject",stage="eom"}`); after < before+2 {
		t.Errorf("reject counter moved from %v to %v, want +2", before, after)
	}
}

// refusedAtEnd sends an unsigned message from an SPF-failing sender and
// expects the refusal at end of data (held for the DKIM rescue first).
func refusedAtEnd(t testing.TB, c *client, sender string) {
	t.Helper()
	c.expect(250, "MAIL FROM:<%s>", sender)
	c.expect(250, "RCPT TO:<u@example.test>")
	if r := c.data(token(t)); r.Code != 550 || !strings.Contains(r.Text, "5.7.23 SPF fail") {
		t.Fatalf("end of data: %v, want 550 5.7.23", r)
	}
}

func TestSPFTempErrorTempfails(t *testing.T) {
	forEachMTA(t, func(t *testing.T, m *mtaInstance) {
		c := dial(t, m.addr, "127.0.0.12")
		c.expect(250, "EHLO client.test")
		c.expect(250, "MAIL FROM:<carol@temp.test>")
		r := c.cmd("RCPT TO:<u@example.test>")
		if r.Code != 451 || !strings.Contains(r.Text, "4.7.24 ") {
			t.Fatalf("RCPT: got %v, want 451 4.7.24", r)
		}
		c.quit()
	})
}

func TestHeloFailRejected(t *testing.T) {
	forEachMTA(t, func(t *testing.T, m *mtaInstance) {
		c := dial(t, m.addr, "127.0.0.13")
		c.expect(250, "EHLO badhelo.test")
		c.expect(250, "MAIL FROM:<dave@pass.test>")
		r := c.cmd("RCPT TO:<u@example.test>")
		// Sendmail puts "<rcpt>... " between the status code and our text.
		if r.Code != 550 || !strings.HasPrefix(r.Text, "5.7.23 ") || !strings.Contains(r.Text, "SPF fail: HELO name badhelo.test is not allowed to be sent from 127.0.0.13") {
			t.Fatalf("RCPT: got %v", r)
		}
		c.quit()
	})
}

func TestTrustedClientNotJudged(t *testing.T) {
	forEachMTA(t, func(t *testing.T, m *mtaInstance) {
		c := dial(t, m.addr, "127.0.0.1")
		c.expect(250, "EHLO client.test")
		tok := c.deliver(t, "trusted@fail.test", "u@example.test")
		c.quit()
		hdr := delivered(t, m, tok)
		if len(headerValues(hdr, "Received-SPF")) != 0 {
			t.Errorf("trusted client judged:\n%s", hdr)
		}
		if l := decisionLine(t, "trusted@fail.test"); !strings.Contains(l, "skipped=trusted") {
			t.Errorf("decision line: %s", l)
		}
	})
}

func TestAuthenticatedClientNotJudged(t *testing.T) {
	// Postfix's XCLIENT LOGIN= makes the session SASL-authenticated, and
	// Postfix then sends {auth_authen} with MAIL FROM.
	c := dial(t, h.postfix.addr, "127.0.0.14")
	c.expect(250, "EHLO client.test")
	c.expect(220, "XCLIENT LOGIN=erin")
	c.expect(250, "EHLO client.test")
	tok := c.deliver(t, "erin@fail.test", "u@example.test")
	c.quit()
	if hdr := delivered(t, h.postfix, tok); len(headerValues(hdr, "Received-SPF")) != 0 {
		t.Errorf("authenticated client judged:\n%s", hdr)
	}
	if l := decisionLine(t, "erin@fail.test"); !strings.Contains(l, "skipped=authenticated") || !strings.Contains(l, "auth=erin") {
		t.Errorf("decision line: %s", l)
	}
}

func TestXclientAddressWinsAndIPv6(t *testing.T) {
	c := dial(t, h.postfix.addr, "127.0.0.15")
	c.expect(250, "EHLO client.test")
	c.expect(220, "XCLIENT ADDR=IPV6:2001:db8::25 NAME=[UNAVAILABLE]")
	c.expect(250, "EHLO client.test")
	tok := c.deliver(t, "frank@pass.test", "u@example.test")
	c.quit()
	hdr := delivered(t, h.postfix, tok)
	rs := headerValues(hdr, "Received-SPF")
	if len(rs) != 1 || !strings.Contains(rs[0], "client-ip=2001:db8::25;") || !strings.HasPrefix(rs[0], "pass") {
		t.Errorf("Received-SPF: %q", rs)
	}
}

func TestSeveralMessagesOnOneConnection(t *testing.T) {
	forEachMTA(t, func(t *testing.T, m *mtaInstance) {
		c := dial(t, m.addr, "127.0.0.16")
		c.expect(250, "EHLO client.test")
		refusedAtEnd(t, c, "grace@fail.test")
		var toks []string
		for i := 0; i < 2; i++ {
			c.expect(250, "MAIL FROM:<heidi%d@pass.test>", i)
			c.expect(250, "RCPT TO:<u@example.test>")
			tok := token(t)
			toks = append(toks, tok)
			if r := c.data(tok); r.Code != 250 {
				t.Fatalf("message %d: %v", i, r)
			}
		}
		c.quit()
		for i, tok := range toks {
			hdr := delivered(t, m, tok)
			rs := headerValues(hdr, "Received-SPF")
			if len(rs) != 1 || !strings.Contains(rs[0], fmt.Sprintf("envelope-from=heidi%d@pass.test", i)) {
				t.Errorf("message %d Received-SPF: %q", i, rs)
			}
		}
	})
}

func TestForgedAuthenticationResultsRemoved(t *testing.T) {
	catchAll(t, "127.0.0.61") // soft.test's mail server: softfail leads to a probe
	forEachMTA(t, func(t *testing.T, m *mtaInstance) {
		c := dial(t, m.addr, "127.0.0.17")
		c.expect(250, "EHLO client.test")
		c.expect(250, "MAIL FROM:<ivan@soft.test>")
		c.expect(250, "RCPT TO:<u@example.test>")
		tok := token(t)
		r := c.data(tok,
			"Authentication-Results: mx.example.test; spf=pass smtp.mailfrom=ivan@soft.test",
			"Authentication-Results: other.example; dkim=pass header.d=soft.test",
			"Received-SPF: pass (forged) client-ip=127.0.0.17; envelope-from=ivan@soft.test")
		if r.Code != 250 {
			t.Fatalf("end of data: %v", r)
		}
		c.quit()
		hdrs := delivered(t, m, tok)
		if rs := headerValues(hdrs, "Received-SPF"); len(rs) != 1 || !strings.HasPrefix(rs[0], "softfail") {
			t.Errorf("Received-SPF: %q, want only ours", rs)
		}
		ars := headerValues(hdrs, "Authentication-Results")
		want := []string{
			"mx.example.test; spf=softfail smtp.mailfrom=soft.test; spf=none smtp.helo=client.test",
			"other.example; dkim=pass header.d=soft.test",
		}
		if strings.Join(ars, "|") != strings.Join(want, "|") {
			t.Errorf("Authentication-Results:\n got %q\nwant %q", ars, want)
		}
	})
}

// oldPolicyInForce checks that an SPF fail is still refused after a
// reload was refused.
func oldPolicyInForce(t *testing.T) {
	t.Helper()
	c := dial(t, h.postfix.addr, "127.0.0.18")
	c.expect(250, "EHLO client.test")
	refusedAtEnd(t, c, "judy@fail.test")
	c.quit()
}

// TestReloads runs last among the stage tests: it changes the policy.
func TestReloads(t *testing.T) {
	t.Run("broken config keeps serving", func(t *testing.T) {
		failures := metric(t, `senderguard_config_reloads_total{result="failure"}`)
		h.reload(t, baseConfig+"no_such_key: 1\n", false)
		if got := metric(t, `senderguard_config_reloads_total{result="failure"}`); got != failures+1 {
			t.Errorf("failure counter %v, want %v", got, failures+1)
		}
		if want := fmt.Sprintf("line %d: field no_such_key not found", strings.Count(baseConfig, "\n")+1); !strings.Contains(h.log(), want) {
			t.Errorf("reload error does not name the line:\n%s", tail(h.log(), 3))
		}
		oldPolicyInForce(t)
	})
	t.Run("half-written config is refused", func(t *testing.T) {
		// An editor writing in place, caught mid-write: valid YAML, but
		// the policy after the cut would silently revert to defaults.
		h.reload(t, baseConfig+"dry_run: true\nreject_at: ma", false)
		if !strings.Contains(h.log(), "does not end with a newline") {
			t.Errorf("reload error does not say why:\n%s", tail(h.log(), 3))
		}
		oldPolicyInForce(t)
	})
	t.Run("dry run delivers and marks", func(t *testing.T) {
		h.reload(t, baseConfig+"dry_run: true\n", true)
		defer h.reload(t, baseConfig, true)
		forEachMTA(t, func(t *testing.T, m *mtaInstance) {
			c := dial(t, m.addr, "127.0.0.19")
			c.expect(250, "EHLO client.test")
			tok := c.deliver(t, "ken@fail.test", "u@example.test")
			c.quit()
			hdr := delivered(t, m, tok)
			xs := headerValues(hdr, "X-Senderguard")
			if len(xs) != 1 || !strings.HasPrefix(xs[0], "dry-run=would-reject (550 5.7.23 SPF fail: sender ken@fail.test") {
				t.Errorf("X-Senderguard: %q", xs)
			}
			if rs := headerValues(hdr, "Received-SPF"); len(rs) != 1 || !strings.HasPrefix(rs[0], "fail ") {
				t.Errorf("Received-SPF: %q", rs)
			}
		})
	})
}

// TestMetricsMove runs after traffic: the counters an operator graphs
// must have moved.
func TestMetricsMove(t *testing.T) {
	for _, name := range []string{
		`senderguard_milter_sessions_total`,
		`senderguard_messages_total`,
		`senderguard_verdicts_total{action="accept",stage="eom"}`,
		`senderguard_check_results_total{check="spf_mailfrom",result="pass"}`,
		`senderguard_check_duration_seconds_count{check="spf_helo"}`,
		`senderguard_cache_requests_total{cache="dns",result="hit"}`,
		`senderguard_cache_requests_total{cache="dns",result="miss"}`,
		`senderguard_dns_queries_total{outcome="noerror",type="TXT"}`,
		`senderguard_dns_queries_total{outcome="servfail",type="TXT"}`,
		`senderguard_build_info{goversion="` + runtimeVersion() + `",version="dev"}`,
	} {
		if v := metric(t, name); v <= 0 {
			t.Errorf("%s = %v, want > 0", name, v)
		}
	}
}
