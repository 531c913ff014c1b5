package filter_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/senderguard/senderguard/checks/callout"
	"github.com/senderguard/senderguard/config"
	"github.com/senderguard/senderguard/filter"
)

// classVerifier is a fake callout that answers by local part.
type classVerifier struct{}

func (classVerifier) Verify(_ context.Context, addr string) *callout.Result {
	c := callout.Exists
	if strings.HasPrefix(addr, "nobody") {
		c = callout.NotExists
	}
	return &callout.Result{Class: c, Address: addr, Rule: "test"}
}

func (classVerifier) NullMX(context.Context, string) (bool, bool) { return false, true }

// recordDecisions runs messages through a real filter in dry-run (pass,
// SPF fail, softfail probed and found, softfail probed and not found) and
// returns its log, in format "text" or "json".
func recordDecisions(t testing.TB, format string, edit func(*config.Config)) string {
	buf := &logBuf{}
	r := newRigWith(t, "tcp", func(c *config.Config) {
		c.DryRun = true
		c.Callout.Enabled = true
		if edit != nil {
			edit(c)
		}
	}, func(d *filter.Deps) {
		d.Callout = classVerifier{}
		if format == "json" {
			d.Log = slog.New(slog.NewJSONHandler(buf, nil))
		} else {
			d.Log = slog.New(slog.NewTextHandler(buf, nil))
		}
	})
	for _, sender := range []string{"a@pass.test", "b@fail.test", "c@soft.test", "nobody@soft.test"} {
		s := r.session("192.0.2.10")
		r.want(s.Mail(sender, ""))
		r.want(s.Rcpt("u@example.test", ""))
		r.end(s)
	}
	return buf.String()
}

func replayAll(t *testing.T, log string, cfg *config.Config) (byOld map[string]string, changed int) {
	t.Helper()
	rp := filter.NewReplayer(cfg)
	byOld = map[string]string{}
	for _, line := range strings.Split(log, "\n") {
		d, err := filter.ParseDecision([]byte(line))
		if err == filter.ErrNotDecision {
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		out, err := rp.Replay(d)
		if err != nil {
			t.Fatalf("replay %q: %v", line, err)
		}
		byOld[out.Sender] = out.Old + "->" + out.New
		if out.Changed {
			changed++
		}
	}
	return byOld, changed
}

// TestReplayRecordedDecisions: decisions a dry-run filter logged,
// replayed with the same configuration (nothing changes), with dry-run
// off (exactly the would-be rejections change), and with softfail
// rejected (the softfail senders change too), in both log formats.
func TestReplayRecordedDecisions(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			log := recordDecisions(t, format, nil)
			same := config.Default()
			same.DryRun, same.Callout.Enabled = true, true
			got, changed := replayAll(t, log, same)
			want := map[string]string{"a@pass.test": "accept->accept", "b@fail.test": "dry-run->dry-run",
				"c@soft.test": "accept->accept", "nobody@soft.test": "dry-run->dry-run"}
			if changed != 0 || !sameMap(got, want) {
				t.Errorf("same config: %v (%d changed), want %v", got, changed, want)
			}
			live := config.Default()
			got, changed = replayAll(t, log, live)
			want = map[string]string{"a@pass.test": "accept->accept", "b@fail.test": "dry-run->reject",
				"c@soft.test": "accept->accept", "nobody@soft.test": "dry-run->reject"}
			if changed != 2 || !sameMap(got, want) {
				t.Errorf("dry-run off: %v (%d changed), want %v", got, changed, want)
			}
			strict := config.Default()
			strict.Actions.SPFMailFrom.Softfail = mustAction("reject 550 5.7.23")
			got, changed = replayAll(t, log, strict)
			want = map[string]string{"a@pass.test": "accept->accept", "b@fail.test": "dry-run->reject",
				"c@soft.test": "accept->reject", "nobody@soft.test": "dry-run->reject"}
			if changed != 3 || !sameMap(got, want) {
				t.Errorf("softfail rejected: %v (%d changed), want %v", got, changed, want)
			}
		})
	}
}

// TestReplayPerRecipientDomains: the logged recipient domains are each
// decided under their own policy.
func TestReplayPerRecipientDomains(t *testing.T) {
	log := recordDecisions(t, "text", nil)
	if !strings.Contains(log, "rcpt_domains=example.test") {
		t.Fatalf("decision lines lack rcpt_domains:\n%s", log)
	}
	cfg := config.Default()
	cfg.RecipientDomains = []config.RecipientDomain{{Domains: []string{"example.test"},
		Actions: map[string]map[string]config.Action{"spf_mailfrom": {"softfail": mustAction("reject 550 5.7.23")}}}}
	got, _ := replayAll(t, log, cfg)
	if got["c@soft.test"] != "accept->reject" {
		t.Errorf("softfail to a strict recipient domain: %v", got)
	}
	cfg.RecipientDomains[0].Domains = []string{"other.test"}
	if got, _ = replayAll(t, log, cfg); got["c@soft.test"] != "accept->accept" {
		t.Errorf("softfail to a lenient recipient domain: %v", got)
	}
}

// TestReplayBadLines: other lines are ignored; decision lines cut short
// or missing fields are unreplayable with a reason; nothing panics.
func TestReplayBadLines(t *testing.T) {
	log := recordDecisions(t, "text", nil)
	var first string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "msg=decision") {
			first = l
			break
		}
	}
	rp := filter.NewReplayer(config.Default())
	for _, tc := range []struct {
		line    string
		ignored bool
	}{
		{"", true},
		{"garbage without structure", true},
		{`time=2026-12-02T00:00:00Z level=WARN msg="callout cache unavailable; probing"`, true},
		{`{"level":"INFO","msg":"ready"}`, true},
		{`{"msg":"other", broken json`, true},
		{`{"msg":"decision","client_ip":"192.0.2.1"`, false}, // cut short
		{first[:len(first)/2] + ` x="unterminated`, false},
		{`level=INFO msg=decision queue_id=Q sender=a@b.test outcome=accept`, false}, // no client_ip
		{strings.Replace(first, "outcome=", "outcome=exploded-", 1), false},
		{strings.Replace(first, "client_ip=192.0.2.10", "client_ip=999.1.1.1", 1), false},
	} {
		d, err := filter.ParseDecision([]byte(tc.line))
		if tc.ignored {
			if err != filter.ErrNotDecision {
				t.Errorf("%q: %v, want ignored", tc.line, err)
			}
			continue
		}
		if err == nil {
			_, err = rp.Replay(d)
		}
		if err == nil {
			t.Errorf("%q: replayed, want unreplayable", tc.line)
		}
	}
}

func sameMap(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func FuzzParseDecision(f *testing.F) {
	f.Add(`time=x level=INFO msg=decision queue_id=Q client_ip=192.0.2.1 helo=h sender=a@b outcome=accept spf_mailfrom=pass rcpt_domains="a.test b.test"`)
	f.Add(`{"msg":"decision","client_ip":"192.0.2.1","helo":"h","sender":"","outcome":"reject","rcpt_outcomes":"a:held"}`)
	f.Add(`msg=decision a="\x`)
	rp := filter.NewReplayer(config.Default())
	f.Fuzz(func(t *testing.T, line string) {
		if d, err := filter.ParseDecision([]byte(line)); err == nil {
			rp.Replay(d)
		}
	})
}

// BenchmarkReplay: decision lines parsed and decided again, per line.
func BenchmarkReplay(b *testing.B) {
	var lines [][]byte
	for _, format := range []string{"text", "json"} {
		for _, l := range strings.Split(recordDecisions(b, format, nil), "\n") {
			if strings.Contains(l, "decision") {
				lines = append(lines, []byte(l))
			}
		}
	}
	rp := filter.NewReplayer(config.Default())
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		d, err := filter.ParseDecision(lines[i%len(lines)])
		if err != nil {
			b.Fatal(err)
		}
		if _, err := rp.Replay(d); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// TestReplayHeldOutcomes: a recipient held for the DKIM rescue counts
// as the end of message judged it.
func TestReplayHeldOutcomes(t *testing.T) {
	rp := filter.NewReplayer(config.Default())
	for rescue, want := range map[string]string{"rescued": "accept", "tempfail": "tempfail", "refused": "reject", "": "reject"} {
		line := `level=INFO msg=decision client_ip=192.0.2.10 helo=h.test sender=a@fail.test outcome=accept spf_mailfrom=fail rcpt_domains=a.test rcpt_outcomes="a.test:held b.test:accept" spf_fail_rescue=` + rescue
		d, err := filter.ParseDecision([]byte(line))
		if err != nil {
			t.Fatal(err)
		}
		out, err := rp.Replay(d)
		if err != nil || out.Old != want {
			t.Errorf("held, %q at end of message: old %v %v, want %s", rescue, out, err, want)
		}
	}
}
