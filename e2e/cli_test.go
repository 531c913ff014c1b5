//go:build e2e

package e2e

import (
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestProbeCommandAgainstRealPostfix(t *testing.T) {
	tests := []struct {
		args  []string
		line1 string
		line2 string
	}{
		{[]string{"-callout-allow-private", "alice@example.test"}, "exists", "mx.example.test: rcpt: 250 2.1.5 Ok"},
		{[]string{"-callout-allow-private", "mallory@example.test"}, "not-exists", "mx.example.test: rcpt: 550 5.1.1 <mallory@example.test>: Recipient address rejected"},
		{[]string{"mallory@example.test"}, "unknown", "mail hosts of example.test resolve only to non-public addresses"},
		{[]string{"bad\r\n@example.test"}, "unknown", "not a valid mailbox"},
	}
	for _, tc := range tests {
		args := append([]string{"probe", "-dns", h.dns.Addr, "-callout-port", strconv.Itoa(h.probePort), "-callout-helo", "probe.example.test", "-v"}, tc.args...)
		cmd := exec.Command(h.bin, args...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Errorf("%v: %v\n%s", tc.args, err, stderr.String())
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) != 2 || lines[0] != tc.line1 || !strings.Contains(lines[1], tc.line2) {
			t.Errorf("%v: got %q, want %q and %q", tc.args, lines, tc.line1, tc.line2)
		}
		if tc.line1 == "exists" && !strings.Contains(stderr.String(), "C: RCPT TO:<alice@example.test>") {
			t.Errorf("-v did not print the dialogue:\n%s", stderr.String())
		}
	}
}

// TestSessionTimeThroughTheMilter measures whole SMTP sessions through
// Postfix with senderguard against the same through a Postfix without a
// milter (bounded: 40 sessions each). It reports; it asserts only that
// the milter's sessions succeed.
func TestSessionTimeThroughTheMilter(t *testing.T) {
	measure := func(addr, sender, rcpt string) time.Duration {
		const n = 40
		start := time.Now()
		for i := 0; i < n; i++ {
			c := dial(t, addr, "127.0.0.30")
			c.expect(250, "EHLO client.test")
			c.expect(250, "MAIL FROM:<%s>", sender)
			c.expect(250, "RCPT TO:<%s>", rcpt)
			if r := c.data(fmt.Sprintf("timing-%d-%d", time.Now().UnixNano(), i)); r.Code != 250 {
				t.Fatalf("session %d: %v", i, r)
			}
			c.quit()
		}
		return time.Since(start) / n
	}
	with := measure(h.postfix.addr, "timing@pass.test", "u@example.test")
	without := measure(h.probed.addr, "timing@pass.test", "alice@example.test")
	t.Logf("SMTP session with one message: %v through Postfix+senderguard, %v through Postfix without a milter", with, without)
}
