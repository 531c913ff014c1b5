//go:build e2e

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/senderguard/senderguard/internal/testsmtp"
)

// catchAll starts a mail server on ip at the probe port that accepts every
// recipient.
func catchAll(t *testing.T, ip string) *testsmtp.Server {
	return testsmtp.Start(t, ip, h.probePort, nil)
}

// probedRcpts counts the RCPT commands the real probed Postfix received,
// from the "disconnect from" lines of its log (rcpt=N or rcpt=N/M).
func probedRcpts(t *testing.T) int {
	b, _ := os.ReadFile(filepath.Join(h.probed.dir, "postfix/maillog"))
	n := 0
	for _, m := range regexp.MustCompile(`disconnect from .* rcpt=(\d+)(/(\d+))?`).FindAllStringSubmatch(string(b), -1) {
		v := m[1]
		if m[3] != "" {
			v = m[3]
		}
		k, _ := strconv.Atoi(v)
		n += k
	}
	return n
}

func TestCalloutAgainstRealPostfix(t *testing.T) {
	forEachMTA(t, func(t *testing.T, m *mtaInstance) {
		c := dial(t, m.addr, "127.0.0.21")
		c.expect(250, "EHLO client.test")
		// SPF neutral, so the sender is probed at the real Postfix, where
		// only alice and bob exist.
		c.expect(250, "MAIL FROM:<mallory-%s@example.test>", m.name)
		r := c.cmd("RCPT TO:<u@example.test>")
		if r.Code != 550 || !strings.HasPrefix(r.Text, "5.1.7 ") || !strings.Contains(r.Text, "does not exist (its mail server answered 550 5.1.1)") {
			t.Fatalf("RCPT: got %v, want 550 5.1.7 naming the remote 550 5.1.1", r)
		}
		c.expect(250, "RSET")
		tok := c.deliver(t, "alice@example.test", "u@example.test")
		c.quit()
		xs := headerValues(delivered(t, m, tok), "X-Senderguard")
		if len(xs) != 1 || !strings.HasPrefix(xs[0], "callout=exists") {
			t.Errorf("X-Senderguard: %q", xs)
		}
	})
	if n := probedRcpts(t); n != 3 {
		t.Errorf("probed Postfix saw %d RCPT, want 3 (mallory twice, alice once: the second MTA's alice came from the cache)", n)
	}
}

func TestCalloutSPFPassNotProbed(t *testing.T) {
	srv := catchAll(t, "127.0.0.64")
	c := dial(t, h.postfix.addr, "127.0.0.22")
	c.expect(250, "EHLO client.test")
	c.expect(250, "MAIL FROM:<nobody@passmx.test>")
	c.expect(250, "RCPT TO:<u@example.test>")
	c.quit()
	if srv.Conns() != 0 {
		t.Errorf("sender with SPF pass was probed (%d connections)", srv.Conns())
	}
}

func TestCalloutNullMXRejectedWhateverSPF(t *testing.T) {
	forEachMTA(t, func(t *testing.T, m *mtaInstance) {
		c := dial(t, m.addr, "127.0.0.23")
		c.expect(250, "EHLO client.test")
		c.expect(250, "MAIL FROM:<noreply@nullmx.test>")
		r := c.cmd("RCPT TO:<u@example.test>")
		if r.Code != 550 || !strings.HasPrefix(r.Text, "5.7.27 ") {
			t.Fatalf("RCPT: got %v, want 550 5.7.27", r)
		}
		c.quit()
	})
}

func TestCalloutOneProbePerSender(t *testing.T) {
	srv := catchAll(t, "127.0.0.62")
	send := func(t *testing.T, ip string) {
		c := dial(t, h.postfix.addr, ip)
		c.expect(250, "EHLO client.test")
		c.expect(250, "MAIL FROM:<same@once.test>")
		c.expect(250, "RCPT TO:<u@example.test>")
		c.quit()
	}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			send(t, "127.0.0.24")
		}()
	}
	wg.Wait()
	for i := 0; i < 4; i++ {
		send(t, "127.0.0.25")
	}
	if n := srv.Count("RCPT"); n != 1 {
		t.Errorf("12 messages from one sender caused %d RCPT at its mail server, want 1", n)
	}
}

func TestCalloutTarpitTempfailsThenAnswersFromCache(t *testing.T) {
	srv := testsmtp.Start(t, "127.0.0.63", h.probePort, func(s *testsmtp.Server) {
		s.BannerDelay = 4 * time.Second
		s.Users = map[string]bool{"slowpoke@slow.test": true}
	})
	c := dial(t, h.postfix.addr, "127.0.0.26")
	c.expect(250, "EHLO client.test")
	start := time.Now()
	c.expect(250, "MAIL FROM:<slowpoke@slow.test>")
	r := c.cmd("RCPT TO:<u@example.test>")
	took := time.Since(start)
	if r.Code != 451 || !strings.HasPrefix(r.Text, "4.7.1 ") || !strings.Contains(r.Text, "verification of <slowpoke@slow.test> in progress") {
		t.Fatalf("RCPT: got %v, want 451 4.7.1 in progress", r)
	}
	if took > 3*time.Second {
		t.Errorf("client waited %v; the stage budget is 2s", took)
	}
	c.quit()
	// The client retries later; the background probe has filled the cache.
	time.Sleep(4 * time.Second)
	c = dial(t, h.postfix.addr, "127.0.0.26")
	c.expect(250, "EHLO client.test")
	start = time.Now()
	c.expect(250, "MAIL FROM:<slowpoke@slow.test>")
	c.expect(250, "RCPT TO:<u@example.test>")
	if d := time.Since(start); d > time.Second {
		t.Errorf("retry took %v, want a cache answer", d)
	}
	c.quit()
	if l := decisionLine(t, "slowpoke@slow.test"); !strings.Contains(l, "callout=in-progress") {
		t.Errorf("first decision line: %s", l)
	}
	if srv.Count("RCPT") != 1 {
		t.Errorf("tarpit server saw %d RCPT, want 1", srv.Count("RCPT"))
	}
}

func TestCalloutMetricsMove(t *testing.T) {
	for _, name := range []string{
		`senderguard_callout_probes_total{result="not-exists"}`,
		`senderguard_callout_probes_total{result="exists"}`,
		`senderguard_callout_probe_duration_seconds_count`,
		`senderguard_cache_requests_total{cache="callout",result="hit"}`,
		`senderguard_check_results_total{check="callout",result="null-mx"}`,
	} {
		if v := metric(t, name); v <= 0 {
			t.Errorf("%s = %v, want > 0", name, v)
		}
	}
}

// TestCacheForgetThroughTheRunningInstance: an operator sees a wrong
// not-exists and removes it; the next message probes again.
func TestCacheForgetThroughTheRunningInstance(t *testing.T) {
	const sender = "carol-forget@example.test"
	refused := func() {
		c := dial(t, h.postfix.addr, "127.0.0.26")
		c.expect(250, "EHLO client.test")
		c.expect(250, "MAIL FROM:<%s>", sender)
		if r := c.cmd("RCPT TO:<u@example.test>"); r.Code != 550 {
			t.Fatalf("RCPT: %v, want 550", r)
		}
		c.quit()
	}
	refused()
	probes := probedRcpts(t)
	run := func(args ...string) (string, int) {
		out, err := exec.Command(h.bin, append([]string{"cache", args[0], "-admin", h.adminAddr}, args[1:]...)...).CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		return string(out), code
	}
	if out, code := run("show", sender); code != 0 || !strings.Contains(out, "a:"+sender+"\tnot-exists\t550 5.1.1") {
		t.Fatalf("cache show: exit %d\n%s", code, out)
	}
	if out, code := run("forget", sender); code != 0 || !strings.Contains(out, "1 entries removed") {
		t.Fatalf("cache forget: exit %d\n%s", code, out)
	}
	if out, code := run("show", sender); code != 1 {
		t.Fatalf("cache show after forget: exit %d\n%s", code, out)
	}
	refused()
	if n := probedRcpts(t); n != probes+1 {
		t.Errorf("after forget the sender was probed %d more times, want 1", n-probes)
	}
}
