package filter_test

import (
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/senderguard/senderguard/checks/resolver"
	"github.com/senderguard/senderguard/checks/spf"
	"github.com/senderguard/senderguard/config"
	"github.com/senderguard/senderguard/filter"
	"github.com/senderguard/senderguard/internal/testdns"
	"github.com/senderguard/senderguard/metrics"
)

// TestVerdictCountedOncePerMessage: a message tempfailed at three
// recipients adds one to verdicts_total, so the tempfail alert's ratio to
// messages_total is a true fraction.
func TestVerdictCountedOncePerMessage(t *testing.T) {
	dns := testdns.Start(t)
	dns.ServFail("temp.test")
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, "test")
	cfg := config.Default()
	cfg.Hostname, cfg.Callout.Enabled = "mx.test", false
	f := filter.New(cfg, filter.Deps{SPF: &spf.Checker{Resolver: &resolver.Stub{Servers: []string{dns.Addr}, Timeout: time.Second}},
		Log: slog.New(slog.DiscardHandler), Metrics: m})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := filter.NewServer(f, filter.ServerOptions{})
	go srv.Serve(ln)
	defer srv.Shutdown(t.Context())
	r := &rig{t: t, client: newClient("tcp", ln.Addr().String())}
	s := r.session("192.0.2.10")
	r.want(s.Mail("x@temp.test", ""))
	for _, rcpt := range []string{"a@example.test", "b@example.test", "c@example.test"} {
		a, err := s.Rcpt(rcpt, "")
		r.reply(a, err, 451, "4.7.24 ")
	}
	r.must(s.Abort(nil))
	s.Close()
	waitFor(t, func() bool {
		return testutil.ToFloat64(m.Verdicts.WithLabelValues("rcpt", "tempfail")) > 0
	}, "no tempfail verdict counted")
	if got := testutil.ToFloat64(m.Verdicts.WithLabelValues("rcpt", "tempfail")); got != 1 {
		t.Errorf("tempfail verdicts for one message to three recipients: %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.Messages); got != 1 {
		t.Errorf("messages: %v", got)
	}
}
