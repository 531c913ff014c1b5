//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/senderguard/senderguard/internal/testdkim"
)

// held lists the senders of the messages in a Postfix instance's hold
// queue (postqueue -j).
func held(t *testing.T, m *mtaInstance) []string {
	t.Helper()
	out, err := exec.Command("postqueue", "-c", filepath.Join(m.dir, "postfix/etc"), "-j").Output()
	if err != nil {
		t.Fatalf("postqueue -j: %v", err)
	}
	var senders []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var q struct {
			Queue  string `json:"queue_name"`
			Sender string `json:"sender"`
		}
		if line == "" || json.Unmarshal([]byte(line), &q) != nil {
			continue
		}
		if q.Queue == "hold" {
			senders = append(senders, q.Sender)
		}
	}
	return senders
}

// TestDMARCDecidesThroughPostfix: with spf_fail_rescue: dmarc, mail whose
// envelope sender fails SPF is judged at end of data by its header From
// domain's DMARC policy, through a real Postfix: p=reject refuses it
// unsigned, p=quarantine puts it in Postfix's hold queue, p=none
// delivers it with dmarc=fail in Authentication-Results, and a bulk
// message signed by its From domain (the envelope at a bulk sender's
// bounce domain) is delivered.
func TestDMARCDecidesThroughPostfix(t *testing.T) {
	brand := testdkim.NewEd25519(t, "dmarc-brand.test", "b")
	if err := h.dns.Add(brand.Record(),
		`_dmarc.dmarc-brand.test. 300 IN TXT "v=DMARC1; p=reject"`,
		`_dmarc.dmarc-reject.test. 300 IN TXT "v=DMARC1; p=reject"`,
		`_dmarc.dmarc-quar.test. 300 IN TXT "v=DMARC1; p=quarantine"`,
		`_dmarc.dmarc-none.test. 300 IN TXT "v=DMARC1; p=none"`,
	); err != nil {
		t.Fatal(err)
	}
	in := startInstance(t, "dmarc", "spf_fail_rescue: dmarc\n")
	for i, tc := range []struct {
		name, envelope, from string
		sign                 bool
		code                 int
		status               string
		ar                   string
	}{
		{"p=reject unsigned", "bounces-r@fail.test", "news@dmarc-reject.test", false, 550, "5.7.1", ""},
		{"p=quarantine unsigned", "bounces-q@fail.test", "news@dmarc-quar.test", false, 250, "", ""},
		{"p=none unsigned", "bounces-n@fail.test", "news@dmarc-none.test", false, 250, "", "dmarc=fail (p=none dis=none) header.from=dmarc-none.test"},
		{"bulk mail signed by its From domain", "bounces-b@fail.test", "news@dmarc-brand.test", true, 250, "", "dmarc=pass (p=reject dis=none) header.from=dmarc-brand.test"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, in.mta.addr, fmt.Sprintf("127.0.0.%d", 90+i))
			c.expect(250, "EHLO bulk.example")
			c.expect(250, "MAIL FROM:<%s>", tc.envelope)
			c.expect(250, "RCPT TO:<u@example.test>")
			tok := token(t)
			msg := testdkim.Message(tc.from, "u@example.test", tok, "bulk body of "+tok)
			if tc.sign {
				msg = brand.Sign(t, msg)
			}
			r := c.raw(msg)
			c.quit()
			if r.Code != tc.code || !strings.Contains(r.Text, tc.status) {
				t.Fatalf("end of data: %v, want %d %s", r, tc.code, tc.status)
			}
			if tc.ar == "" {
				return
			}
			hdr := delivered(t, in.mta, tok)
			if ar := headerValues(hdr, "Authentication-Results"); len(ar) != 1 || !strings.Contains(ar[0], "spf=fail smtp.mailfrom=fail.test") || !strings.Contains(ar[0], tc.ar) {
				t.Errorf("Authentication-Results: %q, want %q", ar, tc.ar)
			}
		})
	}
	var hold []string
	for range 50 {
		if hold = held(t, in.mta); len(hold) > 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(hold) != 1 || hold[0] != "bounces-q@fail.test" {
		t.Errorf("hold queue: %q, want the p=quarantine message only", hold)
	}
	for _, want := range []string{`decided_by=dmarc`, `spf_fail_rescue=quarantined`, `rescued_by="dmarc d=dmarc-brand.test s=b"`} {
		if !strings.Contains(in.log(), want) {
			t.Errorf("no decision line with %s:\n%s", want, tail(in.log(), 8))
		}
	}
	for name, want := range map[string]float64{
		`senderguard_dmarc_results_total{disposition="quarantine",policy="quarantine",result="fail"}`: 1,
		`senderguard_dmarc_results_total{disposition="reject",policy="reject",result="fail"}`:         1,
		`senderguard_dmarc_results_total{disposition="none",policy="reject",result="pass"}`:           1,
	} {
		if got := metricAt(in.metrics, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}
