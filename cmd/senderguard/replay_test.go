package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Decision lines as serve writes them (text and JSON), among other lines.
const replayLog = `time=2026-12-02T10:00:00Z level=INFO msg=ready listen=inet:127.0.0.1:8896
time=2026-12-02T10:00:01Z level=INFO msg=decision queue_id=A1 client_ip=192.0.2.10 helo=client.example sender=a@pass.example outcome=accept spf_mailfrom=pass spf_mailfrom_mechanism=ip4:192.0.2.0/24 spf_helo=none verdict=accept dry_run=true duration=1ms
time=2026-12-02T10:00:02Z level=INFO msg=decision queue_id=NOQUEUE client_ip=192.0.2.11 helo=client.example sender=b@fail.example outcome=dry-run spf_mailfrom=fail spf_mailfrom_mechanism=-all spf_helo=none rcpt_domains=example.org verdict=reject decided_by=spf_mailfrom reply="550 5.7.23 SPF fail: ..." stage=rcpt dry_run=true duration=1ms
{"time":"2026-12-02T10:00:03Z","level":"INFO","msg":"decision","queue_id":"C3","client_ip":"192.0.2.12","helo":"client.example","sender":"c@soft.example","outcome":"accept","spf_mailfrom":"softfail","spf_mailfrom_mechanism":"~all","callout":"exists","callout_rule":"2xx-accepted","callout_cached":true,"rcpt_domains":"example.org","dry_run":true}
this line is not ours
time=2026-12-02T10:00:04Z level=INFO msg=decision queue_id=D4 client_ip=192.0.2.13 helo=client.example sender="d@fail.exam
`

func TestReplayCommand(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "mail.log")
	if err := os.WriteFile(logPath, []byte(replayLog), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(stdin string, args ...string) (string, int) {
		var out bytes.Buffer
		code := runReplay(args, strings.NewReader(stdin), &out)
		return out.String(), code
	}
	// Same policy as logged (dry-run): nothing changes; the cut-short
	// line is unreplayable; the other lines are ignored.
	out, code := run("", "-dry-run", "-v", logPath)
	if code != 0 || !strings.HasPrefix(out, "replayed 3, changed 0, unreplayable 1\n") || !strings.Contains(out, "unreplayable: "+logPath+":6: ") {
		t.Errorf("same policy: exit %d\n%s", code, out)
	}
	// Live: the would-be rejection changes, and only it.
	out, code = run("", "-v", logPath)
	if code != 0 || !strings.Contains(out, "replayed 3, changed 1, unreplayable 1\n") ||
		!strings.Contains(out, "changed: queue_id=NOQUEUE sender=b@fail.example dry-run -> reject decided_by=spf_mailfrom") ||
		!strings.Contains(out, "dry-run    reject     1") || !strings.Contains(out, "fail.example") {
		t.Errorf("live: exit %d\n%s", code, out)
	}
	// Softfail rejected, JSON out, the log from standard input.
	out, code = run(replayLog, "-json", "-action-spf-mailfrom-softfail", "reject 550 5.7.23", "-")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 4 {
		t.Fatalf("json: exit %d\n%s", code, out)
	}
	var soft, sum map[string]any
	json.Unmarshal([]byte(lines[2]), &soft)
	json.Unmarshal([]byte(lines[3]), &sum)
	if soft["sender"] != "c@soft.example" || soft["old"] != "accept" || soft["new"] != "reject" || soft["changed"] != true || soft["decided_by"] != "spf_mailfrom" {
		t.Errorf("softfail line: %v", soft)
	}
	if sum["replayed"] != 3.0 || sum["changed"] != 2.0 || sum["unreplayable"] != 1.0 {
		t.Errorf("summary: %v", sum)
	}
	// A missing file is an error, before any output.
	if out, code = run("", filepath.Join(dir, "absent.log")); code != 1 || out != "" {
		t.Errorf("missing file: exit %d, output %q", code, out)
	}
	if _, code = run(""); code != 2 {
		t.Errorf("no file: exit %d, want 2", code)
	}
}
