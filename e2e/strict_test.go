//go:build e2e

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestProbeStrictRealPostfix probes a real Postfix that applies
// reject_non_fqdn_helo_hostname (at RCPT, as Postfix does by default with
// smtpd_delay_reject) and answers "552 5.2.2 Mailbox full" for carol:
// with our default EHLO name alice exists and carol (full) exists; with a
// bare host name as EHLO, the refusal of our HELO is never read as "no
// such mailbox", for alice nor for bob who does not exist. Every probe
// ends with QUIT (Postfix logs "disconnect", not "lost connection").
func TestProbeStrictRealPostfix(t *testing.T) {
	if err := h.dns.Add(`strict.example.test. 300 IN TXT "v=spf1 ?all"`, `strict.example.test. 300 IN MX 10 mx.strict.example.test.`,
		`mx.strict.example.test. 300 IN A 127.0.0.66`); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(h.work, "probedstrict")
	os.MkdirAll(dir, 0o755)
	access := filepath.Join(dir, "full-mailboxes")
	if err := os.WriteFile(access, []byte("carol@strict.example.test 552 5.2.2 Mailbox full\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := &mtaInstance{name: "postfix", addr: "127.0.0.66:" + strconv.Itoa(h.probePort), dir: dir}
	for k, v := range map[string]string{"MTA_USERS": "alice carol", "MTA_DOMAINS": "strict.example.test",
		"MTA_MAIN_CF": "smtpd_helo_required = yes\nsmtpd_helo_restrictions = reject_non_fqdn_helo_hostname\n" +
			"smtpd_recipient_restrictions = check_recipient_access texthash:" + access} {
		os.Setenv(k, v)
		defer os.Unsetenv(k)
	}
	if err := mtaUp(m, "postfix.sh", "none"); err != nil {
		t.Fatal(err)
	}
	defer mtaDown(m, "postfix.sh")

	probe := func(addr string, extra ...string) (class, evidence, trace string) {
		t.Helper()
		args := append([]string{"probe", "-dns", h.dns.Addr, "-callout-port", strconv.Itoa(h.probePort), "-callout-allow-private", "-v"}, extra...)
		cmd := exec.Command(h.bin, append(args, addr)...)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("probe %s: %v\n%s", addr, err, stderr.String())
		}
		lines := strings.Split(stdout.String(), "\n")
		return lines[0], lines[1], stderr.String()
	}
	for _, tc := range []struct {
		addr, helo, class, rule, evidence string
	}{
		{"alice@strict.example.test", "", "exists", "2xx-accepted", "rcpt: 250 2.1.5"},
		{"carol@strict.example.test", "", "exists", "x.2.2-mailbox-full", "rcpt: 552 5.2.2"},
		{"bob@strict.example.test", "", "not-exists", "x.1.1-no-mailbox", "rcpt: 550 5.1.1"},
		{"alice@strict.example.test", "vm", "unknown", "refused-us", "rcpt: 504 5.5.2"},
		{"bob@strict.example.test", "vm", "unknown", "refused-us", "Helo command rejected"},
	} {
		var extra []string
		if tc.helo != "" {
			extra = []string{"-callout-helo", tc.helo}
		}
		class, evidence, trace := probe(tc.addr, extra...)
		if class != tc.class || !strings.Contains(evidence, tc.evidence) || !strings.Contains(trace, "rule="+tc.rule+" class="+tc.class) {
			t.Errorf("probe %s (helo %q): %s, %q\n%s\nwant %s, %q, rule %s", tc.addr, tc.helo, class, evidence, trace, tc.class, tc.evidence, tc.rule)
		}
		if tc.helo == "" && !regexp.MustCompile(`C: EHLO (\[127\.\d+\.\d+\.\d+\]|\S+\.\S+)`).MatchString(trace) {
			t.Errorf("default EHLO name is neither an address literal nor a FQDN:\n%s", trace)
		}
		if tc.helo != "" && !strings.Contains(trace, "not a fully qualified domain name") {
			t.Errorf("no warning for -helo %s:\n%s", tc.helo, trace)
		}
	}
	// Postfix writes its log through postlogd, after the session: wait
	// for the five disconnect lines (or 10 s) before reading them.
	var logb []byte
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		logb, _ = os.ReadFile(filepath.Join(dir, "postfix", "maillog"))
		if strings.Count(string(logb), "disconnect from") >= 6 || time.Now().After(deadline) {
			break // 6: the readiness check's and the five probes'
		}
	}
	// postfix.sh's readiness check connects and leaves: "after CONNECT".
	if n := strings.Count(string(logb), "lost connection") - strings.Count(string(logb), "lost connection after CONNECT"); n != 0 {
		t.Errorf("Postfix logged %d lost connections: every probe must end with QUIT\n%s", n, logb)
	}
	if n := strings.Count(string(logb), "quit=1"); n < 5 {
		t.Errorf("Postfix logged %d disconnects after QUIT, want 5\n%s", n, logb)
	}
}
