//go:build e2e

package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/senderguard/senderguard/checks/callout"
	"github.com/senderguard/senderguard/checks/resolver"
	"github.com/senderguard/senderguard/internal/testcert"
)

var (
	tlsPostfixOnce sync.Once
	tlsPostfixErr  error
)

// tlsPostfix starts, once, a real Postfix that insists on STARTTLS
// (smtpd_tls_security_level = encrypt, a certificate made here) as the
// mail server of tls.example.test, where only alice exists.
func tlsPostfix(t testing.TB) {
	t.Helper()
	tlsPostfixOnce.Do(func() {
		dir := filepath.Join(h.work, "tlscert")
		os.MkdirAll(dir, 0o755)
		certs := testcert.New(t, dir, "mx", "mx.tls.example.test")
		if err := h.dns.Add(`tls.example.test. 300 IN TXT "v=spf1 ?all"`, `tls.example.test. 300 IN MX 10 mx.tls.example.test.`,
			`mx.tls.example.test. 300 IN A 127.0.0.65`); err != nil {
			tlsPostfixErr = err
			return
		}
		m := &mtaInstance{name: "postfix", addr: "127.0.0.65:" + strconv.Itoa(h.probePort), dir: filepath.Join(h.work, "probedtls")}
		for k, v := range map[string]string{"MTA_USERS": "alice", "MTA_DOMAINS": "tls.example.test", "MTA_TLS_CERT": certs.CertFile, "MTA_TLS_KEY": certs.KeyFile} {
			os.Setenv(k, v)
			defer os.Unsetenv(k)
		}
		tlsPostfixErr = mtaUp(m, "postfix.sh", "none")
		h.cleanups = append(h.cleanups, func() { mtaDown(m, "postfix.sh") })
	})
	if tlsPostfixErr != nil {
		t.Fatal(tlsPostfixErr)
	}
}

func TestProbeSTARTTLSAgainstRealPostfix(t *testing.T) {
	tlsPostfix(t)
	probe := func(mode, addr string) (string, string) {
		cmd := exec.Command(h.bin, "probe", "-dns", h.dns.Addr, "-callout-port", strconv.Itoa(h.probePort), "-callout-allow-private",
			"-callout-tls", mode, "-callout-helo", "probe.example.test", "-v", addr)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("probe %s: %v\n%s", addr, err, stderr.String())
		}
		return stdout.String(), stderr.String()
	}
	cases := []struct{ mode, addr, class, evidence, tls string }{
		{"may", "alice@tls.example.test", "exists", "rcpt: 250 2.1.5", "TLS: tls TLS 1.3"},
		{"may", "bob@tls.example.test", "not-exists", "rcpt: 550 5.1.1", "TLS: tls TLS 1.3"},
		{"off", "alice@tls.example.test", "unknown", "mail: 530 5.7.0", "TLS: none"},
	}
	for _, tc := range cases {
		out, trace := probe(tc.mode, tc.addr)
		lines := strings.Split(out, "\n")
		if lines[0] != tc.class || !strings.Contains(lines[1], tc.evidence) || !strings.Contains(trace, tc.tls) {
			t.Errorf("probe -callout-tls %s %s:\n%s%s\nwant %s, %q, %q", tc.mode, tc.addr, out, trace, tc.class, tc.evidence, tc.tls)
		}
		if tc.mode == "may" && !strings.Contains(trace, "C: STARTTLS") {
			t.Errorf("no STARTTLS in the dialogue:\n%s", trace)
		}
	}
}

func TestCalloutOverTLSThroughTheMilter(t *testing.T) {
	tlsPostfix(t)
	c := dial(t, h.postfix.addr, "127.0.0.44")
	c.expect(250, "EHLO client.test")
	c.expect(250, "MAIL FROM:<bob@tls.example.test>")
	if r := c.cmd("RCPT TO:<u@example.test>"); r.Code != 550 || !strings.HasPrefix(r.Text, "5.1.7 ") {
		t.Fatalf("RCPT: %v, want 550 5.1.7", r)
	}
	c.expect(250, "RSET")
	c.expect(250, "MAIL FROM:<alice@tls.example.test>")
	c.expect(250, "RCPT TO:<u@example.test>")
	c.quit()
	for _, s := range []string{"bob@tls.example.test", "alice@tls.example.test"} {
		if l := decisionLine(t, s); !strings.Contains(l, `callout_tls="tls TLS 1.3"`) {
			t.Errorf("decision line of %s: %s", s, l)
		}
	}
}

// BenchmarkProbeRealPostfix: whole probes against real Postfix instances,
// in plaintext (the plain probed Postfix) and with STARTTLS (the one that
// requires it); reports p50. Run: go test -tags e2e -run XXX -bench
// ProbeRealPostfix -benchtime 50x ./e2e
func BenchmarkProbeRealPostfix(b *testing.B) {
	tlsPostfix(b)
	for _, bc := range []struct {
		name, addr string
		mode       callout.TLSMode
	}{
		{"plain", "alice@example.test", callout.TLSOff},
		{"starttls", "alice@tls.example.test", callout.TLSMay},
	} {
		b.Run(bc.name, func(b *testing.B) {
			p := &callout.Prober{Resolver: &resolver.Stub{Servers: []string{h.dns.Addr}, Timeout: time.Second}, Port: h.probePort,
				Helo: "probe.example.test", AllowPrivate: true, StepTimeout: 10 * time.Second, TLS: bc.mode}
			var took []time.Duration
			for b.Loop() {
				start := time.Now()
				if r := p.Probe(context.Background(), bc.addr); r.Class != callout.Exists {
					b.Fatalf("%s: %s %s", bc.addr, r.Class, r.Evidence())
				}
				took = append(took, time.Since(start))
			}
			sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
			b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
		})
	}
}
