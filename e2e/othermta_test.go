//go:build e2e

package e2e

import (
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// othermta starts a real Exim or OpenSMTPD (scripts/othermta.sh) on ip at
// the probe port, stopped when t ends.
func othermta(t *testing.T, kind, ip string) {
	t.Helper()
	m := &mtaInstance{name: kind, addr: ip + ":" + strconv.Itoa(h.probePort), dir: filepath.Join(h.work, "othermta")}
	cmd := exec.Command("../scripts/othermta.sh", kind, "up", m.addr)
	cmd.Env = append(cmd.Environ(), "MTA_DIR="+m.dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("othermta.sh %s up: %v\n%s", kind, err, out)
	}
	t.Cleanup(func() {
		cmd := exec.Command("../scripts/othermta.sh", kind, "down")
		cmd.Env = append(cmd.Environ(), "MTA_DIR="+m.dir)
		cmd.Run()
	})
}

// probeCLI runs "senderguard probe -v" against the e2e zone and returns
// the class (first line of stdout) and the rule (from -v's summary).
func probeCLI(t *testing.T, addr string) (class, rule, out string) {
	t.Helper()
	cmd := exec.Command(h.bin, "probe", "-v", "-dns", h.dns.Addr, "-callout-port", strconv.Itoa(h.probePort),
		"-callout-allow-private", "-callout-helo", "probe.example.test", addr)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	out = string(b) + stderr.String()
	if err != nil {
		t.Fatalf("probe %s: %v\n%s", addr, err, out)
	}
	class = strings.SplitN(string(b), "\n", 2)[0]
	if i := strings.Index(out, "rule="); i >= 0 {
		rule = strings.Fields(out[i+len("rule="):])[0]
	}
	return class, rule, out
}

// TestAmbiguousRefusalsOfRealEximAndOpenSMTPD: the default wordings of
// an unknown user in a real Exim ("550 Unrouteable address") and a real
// OpenSMTPD ("550 Invalid recipient: <a>", "524 5.2.4 Mailing list
// expansion problem: <a>") read as not-exists once the same session's
// RCPT TO:<postmaster@domain> is accepted, and stay unknown where the
// host does not serve the domain (postmaster refused too) or refuses for
// another reason (relaying). Through Postfix and senderguard, the Exim
// case refuses the sender and counts the postmaster check.
func TestAmbiguousRefusalsOfRealEximAndOpenSMTPD(t *testing.T) {
	if err := h.dns.Add(
		`exim.test. 300 IN MX 10 mx.exim.test.`, `mx.exim.test. 300 IN A 127.0.0.50`,
		`elsewhere.exim.test. 300 IN MX 10 mx.exim.test.`,
		`osmtpd.test. 300 IN MX 10 mx.osmtpd.test.`, `mx.osmtpd.test. 300 IN A 127.0.0.51`,
		`virt.osmtpd.test. 300 IN MX 10 mx.osmtpd.test.`,
		`elsewhere.osmtpd.test. 300 IN MX 10 mx.osmtpd.test.`,
	); err != nil {
		t.Fatal(err)
	}
	othermta(t, "exim", "127.0.0.50")
	othermta(t, "opensmtpd", "127.0.0.51")
	for _, tc := range []struct{ addr, class, rule, evidence string }{
		{"alice@exim.test", "exists", "2xx-accepted", "250 Accepted"},
		{"ghost@exim.test", "not-exists", "exim-unrouteable-postmaster-ok", "550 Unrouteable address (postmaster: 250 Accepted)"},
		{"ghost@elsewhere.exim.test", "unknown", "relay-refused", "550 relay not permitted"},
		{"alice@osmtpd.test", "exists", "2xx-accepted", "250 2.1.5"},
		{"ghost@osmtpd.test", "not-exists", "opensmtpd-invalid-recipient-postmaster-ok", "(postmaster: 250 2.1.5"},
		{"ghost@virt.osmtpd.test", "not-exists", "opensmtpd-expansion-problem-postmaster-ok", "524 5.2.4 Mailing list expansion problem"},
		{"ghost@elsewhere.osmtpd.test", "unknown", "opensmtpd-invalid-recipient", "(postmaster: 550 Invalid recipient: <postmaster@elsewhere.osmtpd.test>)"},
	} {
		class, rule, out := probeCLI(t, tc.addr)
		if class != tc.class || rule != tc.rule || !strings.Contains(out, tc.evidence) {
			t.Errorf("%s: %s by %s, want %s by %s with %q:\n%s", tc.addr, class, rule, tc.class, tc.rule, tc.evidence, out)
		}
	}
	before := metric(t, `senderguard_callout_postmaster_checks_total{result="accepted"}`)
	c := dial(t, h.postfix.addr, "127.0.0.23")
	c.expect(250, "EHLO client.test")
	c.expect(250, "MAIL FROM:<ghost@exim.test>")
	if r := c.cmd("RCPT TO:<u@example.test>"); r.Code != 550 || !strings.Contains(r.Text, "5.1.7") || !strings.Contains(r.Text, "does not exist (its mail server answered 550)") {
		t.Errorf("RCPT: %v, want 550 5.1.7 (not-exists)", r)
	}
	c.quit()
	if got := metric(t, `senderguard_callout_postmaster_checks_total{result="accepted"}`); got != before+1 {
		t.Errorf("postmaster checks accepted: %v, want %v", got, before+1)
	}
	if l := decisionLine(t, "ghost@exim.test"); !strings.Contains(l, "callout_rule=exim-unrouteable-postmaster-ok") {
		t.Errorf("decision line: %s", l)
	}
}
