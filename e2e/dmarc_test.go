//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/senderguard/senderguard/internal/testdns"
)

// TestOpenDMARCReadsOurAuthenticationResults: Debian's OpenDMARC after
// senderguard in one Postfix, trusting our authserv-id and not checking
// SPF itself: an aligned SPF pass gives dmarc=pass from our header alone,
// and a p=reject failure is refused.
func TestOpenDMARCReadsOurAuthenticationResults(t *testing.T) {
	bin, err := exec.LookPath("opendmarc")
	if err != nil {
		t.Skip("opendmarc not installed (scripts/deps.sh installs it)")
	}
	if err := h.dns.Add(`aligned.test. 300 IN TXT "v=spf1 ip4:127.0.0.0/24 -all"`); err != nil {
		t.Fatal(err)
	}
	// OpenDMARC asks the system resolver: its own DNS on port 53, seen
	// through a resolv.conf bind-mounted in its mount namespace.
	dmarcDNS, err := testdns.New("127.0.0.153:53", `_dmarc.aligned.test. 300 IN TXT "v=DMARC1; p=reject"`)
	if err != nil {
		t.Skipf("no DNS server on 127.0.0.153:53: %v", err)
	}
	defer dmarcDNS.Close()
	dir := filepath.Join(h.work, "opendmarc")
	os.MkdirAll(dir, 0o755)
	resolv := filepath.Join(dir, "resolv.conf")
	os.WriteFile(resolv, []byte("nameserver 127.0.0.153\n"), 0o644)
	ignore := filepath.Join(dir, "ignore")
	os.WriteFile(ignore, []byte("192.0.2.254\n"), 0o644)
	port := strings.Split(freePort(), ":")[1]
	conf := filepath.Join(dir, "opendmarc.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf(`AuthservID dmarc.example.test
TrustedAuthservIDs mx.example.test
SPFSelfValidate false
SPFIgnoreResults false
RejectFailures true
RequiredHeaders false
FailureReports false
IgnoreHosts %s
Socket inet:%s@127.0.0.1
PidFile %s/opendmarc.pid
Background false
Syslog false
UMask 002
`, ignore, port, dir)), 0o644)
	logf, _ := os.Create(filepath.Join(dir, "log"))
	cmd := exec.Command("unshare", "--mount", "sh", "-c", `mount --bind "$0" /etc/resolv.conf && exec "$1" -f -c "$2"`, resolv, bin, conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	time.Sleep(500 * time.Millisecond)
	m := &mtaInstance{name: "postfix", addr: freePort(), dir: filepath.Join(h.work, "dmarcmta")}
	if err := mtaUp(m, "postfix.sh", "inet:"+h.milterAddr+", inet:127.0.0.1:"+port); err != nil {
		t.Fatal(err)
	}
	defer mtaDown(m, "postfix.sh")

	send := func(ip, envelope, from string) (int, string, string) {
		c := dial(t, m.addr, ip)
		c.expect(250, "EHLO client.test")
		c.expect(250, "MAIL FROM:<%s>", envelope)
		c.expect(250, "RCPT TO:<u@example.test>")
		c.expect(354, "DATA")
		tok := token(t)
		w := c.tc.DotWriter()
		fmt.Fprintf(w, "From: %s\r\nTo: u@example.test\r\nSubject: %s\r\nMessage-ID: <%s@e2e.test>\r\nDate: Sun, 29 Nov 2026 12:00:00 +0000\r\n\r\nbody\r\n", from, tok, tok)
		w.Close()
		r := c.read()
		c.quit()
		return r.Code, r.Text, tok
	}
	code, text, tok := send("127.0.0.46", "alice@aligned.test", "alice@aligned.test")
	if code != 250 {
		log, _ := os.ReadFile(filepath.Join(dir, "log"))
		t.Fatalf("aligned SPF pass: %d %s\nopendmarc:\n%s", code, text, log)
	}
	ars := strings.Join(headerValues(delivered(t, m, tok), "Authentication-Results"), "\n")
	if !strings.Contains(ars, "dmarc.example.test; dmarc=pass") || !strings.Contains(ars, "mx.example.test; spf=pass smtp.mailfrom=aligned.test") {
		t.Errorf("Authentication-Results:\n%s", ars)
	}
	// SPF passes for pass.test, but the From: domain is aligned.test's:
	// DMARC fails and aligned.test says reject.
	code, text, _ = send("127.0.0.47", "bob@pass.test", "ceo@aligned.test")
	if code != 550 {
		t.Errorf("unaligned pass, p=reject: %d %s, want 550", code, text)
	}
}
