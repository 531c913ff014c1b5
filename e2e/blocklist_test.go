//go:build e2e

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// instance is a senderguard of a test's own, on its own configuration,
// with its own Postfix in front.
type instance struct {
	milter, metrics, logPath string
	mta                      *mtaInstance
}

// startInstance runs senderguard on cfg (added to the e2e base
// configuration) and a Postfix in front of it; both stop when t ends.
func startInstance(t *testing.T, name, cfg string) *instance {
	t.Helper()
	return startInstanceRaw(t, name, baseConfig+cfg)
}

// startInstanceRaw is startInstance on cfg alone (no base configuration).
func startInstanceRaw(t *testing.T, name, cfg string) *instance {
	t.Helper()
	in := &instance{milter: freePort(), metrics: freePort(), logPath: filepath.Join(h.work, name+".log")}
	path := filepath.Join(h.work, name+".yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(in.logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(h.bin, "serve", "-config", path, "-listen", "inet:"+in.milter, "-metrics-listen", in.metrics,
		"-admin", "", "-dns", h.dns.Addr, "-callout-port", strconv.Itoa(h.probePort))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
		}
		logf.Close()
	})
	for i := 0; metricAt(in.metrics, "senderguard_milter_sessions_active") < 0; i++ {
		if i == 100 {
			t.Fatalf("%s not ready:\n%s", name, in.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	in.mta = &mtaInstance{name: "postfix", addr: freePort(), dir: filepath.Join(h.work, name+"-mta")}
	if err := mtaUp(in.mta, "postfix.sh", "inet:"+in.milter); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mtaDown(in.mta, "postfix.sh") })
	return in
}

func (in *instance) log() string {
	b, _ := os.ReadFile(in.logPath)
	return string(b)
}

// decision waits for the decision line of sender in the instance's log.
func (in *instance) decision(t *testing.T, sender string) string {
	t.Helper()
	for range 100 {
		for _, l := range strings.Split(in.log(), "\n") {
			if strings.Contains(l, "msg=decision") && strings.Contains(l, "sender="+sender+" ") {
				return l
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no decision line for %s:\n%s", sender, tail(in.log(), 20))
	return ""
}

// TestProbesPausedWhileListed: senderguard's probe address (127.0.0.70)
// is listed on one blocklist and refused by another at start. Mail from
// a never-seen sender through a real Postfix makes no probe connection
// and is delivered, its decision line naming the paused rule; the
// metrics say which list listed it; the probe command says the same.
func TestProbesPausedWhileListed(t *testing.T) {
	if err := h.dns.Add(
		`70.0.0.127.bl.e2e.test. 60 IN A 127.0.0.2`,
		`70.0.0.127.quota.e2e.test. 60 IN A 127.255.255.254`,
		`paused.test. 300 IN MX 10 mx.paused.test.`,
		`mx.paused.test. 300 IN A 127.0.0.66`,
	); err != nil {
		t.Fatal(err)
	}
	srv := catchAll(t, "127.0.0.66")
	in := startInstance(t, "paused", `  source_ipv4: 127.0.0.70
  blocklists: [bl.e2e.test, quota.e2e.test]
`)
	c := dial(t, in.mta.addr, "127.0.0.22")
	c.expect(250, "EHLO client.test")
	tok := c.deliver(t, "never-seen@paused.test", "u@example.test")
	c.quit()
	if !strings.Contains(delivered(t, in.mta, tok), "callout=unknown") {
		t.Error("delivered message lacks X-Senderguard: callout=unknown")
	}
	line := in.decision(t, "never-seen@paused.test")
	if !strings.Contains(line, "callout=unknown callout_rule=paused-listed") || !strings.Contains(line, "outcome=accept") {
		t.Errorf("decision line: %s", line)
	}
	if n := srv.Conns(); n != 0 {
		t.Errorf("%d probe connections while listed", n)
	}
	for name, want := range map[string]float64{
		`senderguard_callout_source_listed{address="127.0.0.70",list="bl.e2e.test"}`:    1,
		`senderguard_callout_source_listed{address="127.0.0.70",list="quota.e2e.test"}`: 0,
		`senderguard_callout_probes_paused`:                                             1,
		`senderguard_callout_classifications_total{rule="paused-listed"}`:               1,
		`senderguard_callout_connections_total`:                                         0,
	} {
		if got := metricAt(in.metrics, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if l := in.log(); !strings.Contains(l, "probe address listed") || !strings.Contains(l, "the list refused our query") {
		t.Errorf("log lacks the listing and refusal warnings:\n%s", tail(l, 20))
	}
	// The probe command reads the same lists and says why it did nothing.
	out, err := exec.Command(h.bin, "probe", "-v", "-dns", h.dns.Addr, "-callout-port", strconv.Itoa(h.probePort),
		"-callout-allow-private", "-callout-source-ipv4", "127.0.0.70", "-callout-blocklists", "bl.e2e.test",
		"other@paused.test").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "rule=paused-listed class=unknown") || srv.Conns() != 0 {
		t.Errorf("probe: %v, %d connections:\n%s", err, srv.Conns(), out)
	}
}
