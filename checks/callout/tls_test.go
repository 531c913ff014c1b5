package callout_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/senderguard/senderguard/checks/callout"
	"github.com/senderguard/senderguard/internal/testcert"
	"github.com/senderguard/senderguard/internal/testsmtp"
)

// TestProbeSTARTTLS: each kind of STARTTLS server, in each mode.
func TestProbeSTARTTLS(t *testing.T) {
	certs := testcert.New(t, t.TempDir(), "mx", "mx.tls.test")
	wrong := testcert.New(t, t.TempDir(), "wrong", "other.name.test")
	endless := func(cmd string) string {
		if strings.HasPrefix(strings.ToUpper(cmd), "EHLO") {
			return strings.Repeat("250-more\n", 500) + "250 end"
		}
		return ""
	}
	servers := []struct {
		name      string
		configure func(s *testsmtp.Server)
	}{
		{"offers", func(s *testsmtp.Server) { s.TLS = certs.ServerConfig() }},
		{"requires", func(s *testsmtp.Server) { s.TLS, s.RequireTLS = certs.ServerConfig(), true }},
		{"plain-requires", func(s *testsmtp.Server) { s.RequireTLS = true }},
		{"badcert", func(s *testsmtp.Server) { s.TLS = wrong.ServerConfig() }},
		{"broken", func(s *testsmtp.Server) { s.TLS, s.BreakHandshake = certs.ServerConfig(), true }},
		{"refuses454", func(s *testsmtp.Server) {
			s.TLS, s.StartTLSReply = certs.ServerConfig(), "454 4.7.0 TLS not available due to local problem"
		}},
		{"endless", func(s *testsmtp.Server) { s.TLS, s.AfterTLS = certs.ServerConfig(), endless }},
	}
	var zone []string
	for i, sv := range servers {
		zone = append(zone, fmt.Sprintf("%s.test. 60 IN MX 10 mx.tls.test.%s.", sv.name, sv.name),
			fmt.Sprintf("mx.tls.test.%s. 60 IN A 127.0.1.%d", sv.name, 10+i))
	}
	e := newEnv(t, zone...)
	for i, sv := range servers {
		e.smtp(fmt.Sprintf("127.0.1.%d", 10+i), sv.configure)
	}
	cases := []struct {
		server string
		mode   callout.TLSMode
		class  callout.Class
		tls    callout.TLSOutcome
		step   string
	}{
		{"offers", callout.TLSMay, callout.Exists, callout.TLSUpgraded, "rcpt"},
		{"offers", callout.TLSOff, callout.Exists, callout.TLSNone, "rcpt"},
		{"requires", callout.TLSMay, callout.Exists, callout.TLSUpgraded, "rcpt"},
		{"requires", callout.TLSOff, callout.Unknown, callout.TLSNone, "mail"}, // 530: unknown, not refused
		{"plain-requires", callout.TLSMay, callout.Unknown, callout.TLSNone, "mail"},
		{"badcert", callout.TLSMay, callout.Exists, callout.TLSUpgraded, "rcpt"}, // may: any certificate
		{"badcert", callout.TLSVerify, callout.Unknown, callout.TLSFailed, "starttls"},
		{"broken", callout.TLSMay, callout.Exists, callout.TLSFailedThenPlain, "rcpt"},
		{"broken", callout.TLSVerify, callout.Unknown, callout.TLSFailed, "starttls"},
		{"refuses454", callout.TLSMay, callout.Exists, callout.TLSFailedThenPlain, "rcpt"},
		{"endless", callout.TLSMay, callout.Unknown, callout.TLSUpgraded, "ehlo"},
	}
	for _, tc := range cases {
		t.Run(tc.server+"/"+string(tc.mode), func(t *testing.T) {
			p := e.prober()
			p.TLS, p.RootCAs = tc.mode, certs.Pool
			p.Helo = "probe.example.test"
			var trace []string
			p.Trace = func(s string) { trace = append(trace, s) }
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			r := p.Probe(ctx, "alice@"+tc.server+".test")
			if r.Class != tc.class || r.TLS != tc.tls || r.Step != tc.step || r.Refused() {
				t.Fatalf("got %s tls=%s step=%s refused=%v (%s), want %s tls=%s step=%s\n%s",
					r.Class, r.TLS, r.Step, r.Refused(), r.Evidence(), tc.class, tc.tls, tc.step, strings.Join(trace, "\n"))
			}
			if tc.tls == callout.TLSUpgraded && !strings.HasPrefix(r.TLSVersion, "TLS 1.") {
				t.Errorf("TLS version %q", r.TLSVersion)
			}
		})
	}
}
