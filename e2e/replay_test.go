//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// replaySenders are the four kinds of message the replay test records:
// an SPF pass, an SPF fail, a softfail whose probe finds the sender, and
// a neutral whose probe finds no such mailbox (the real probed Postfix).
var replaySenders = []string{"rp-pass@pass.test", "rp-fail@fail.test", "rp-soft@soft.test", "mallory@example.test"}

// recordDryRun sends the four messages through m (whose senderguard is in
// dry-run): all are delivered.
func recordDryRun(t *testing.T, m *mtaInstance, ipBase int) {
	t.Helper()
	for i, sender := range replaySenders {
		c := dial(t, m.addr, fmt.Sprintf("127.0.0.%d", ipBase+i))
		c.expect(250, "EHLO client.test")
		c.deliver(t, sender, "u@example.test")
		c.quit()
	}
}

// replay runs "senderguard replay" on log and returns the new outcome of
// each of the four senders and the summary object.
func replay(t *testing.T, log string, args ...string) (map[string]string, map[string]float64) {
	t.Helper()
	cmd := exec.Command(h.bin, append(append([]string{"replay", "-json", "-config", h.cfgPath}, args...), log)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("replay %v: %v\n%s", args, err, stderr.String())
	}
	got := map[string]string{}
	var sum map[string]float64
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var o map[string]any
		if err := json.Unmarshal([]byte(l), &o); err != nil {
			t.Fatalf("replay output %q: %v", l, err)
		}
		if s, ok := o["sender"].(string); ok {
			got[s] = fmt.Sprintf("%s->%s", o["old"], o["new"])
			continue
		}
		sum = map[string]float64{}
		for k, v := range o {
			sum[k], _ = v.(float64)
		}
	}
	return got, sum
}

// TestReplayDecisionsRecordedThroughPostfix: decisions a dry-run
// senderguard logged through a real Postfix, in the text format (the
// harness's instance) and the JSON format (an instance of its own), are
// replayed: with the same configuration nothing changes; with dry-run
// off exactly the would-be rejections change; with softfail rejected the
// softfail sender changes too. Garbage and cut-short lines lose nothing.
func TestReplayDecisionsRecordedThroughPostfix(t *testing.T) {
	catchAll(t, "127.0.0.61") // soft.test's mail server: the probe finds the sender
	logs := map[string]string{}

	// Text: the harness's instance, reloaded into dry-run.
	h.reload(t, baseConfig+"dry_run: true\n", true)
	before := len(h.log())
	recordDryRun(t, h.postfix, 90)
	time.Sleep(200 * time.Millisecond)
	h.reload(t, baseConfig, true)
	logs["text"] = filepath.Join(h.work, "replay-text.log")
	os.WriteFile(logs["text"], []byte(h.log()[before:]+"garbage line\nlevel=INFO msg=decision queue_id=CUT client_ip=127.0.0.99 sender=\"cut-sh\n"), 0o644)

	// JSON: an instance of its own, with its own Postfix.
	logs["json"] = filepath.Join(h.work, "replay-json.log")
	logf, err := os.Create(logs["json"])
	if err != nil {
		t.Fatal(err)
	}
	milterAddr, metricsAddr := freePort(), freePort()
	cmd := exec.Command(h.bin, "serve", "-config", h.cfgPath, "-listen", "inet:"+milterAddr, "-metrics-listen", metricsAddr,
		"-admin", "", "-dns", h.dns.Addr, "-callout-port", strconv.Itoa(h.probePort), "-log-format", "json", "-dry-run")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Signal(os.Interrupt); cmd.Wait(); logf.Close() }()
	for i := 0; ; i++ {
		if resp, err := http.Get("http://" + metricsAddr + "/readyz"); err == nil && resp.StatusCode == 200 {
			resp.Body.Close()
			break
		}
		if i > 100 {
			t.Fatal("JSON instance not ready")
		}
		time.Sleep(50 * time.Millisecond)
	}
	m := &mtaInstance{name: "postfix", addr: freePort(), dir: filepath.Join(h.work, "replayjson")}
	if err := mtaUp(m, "postfix.sh", "inet:"+milterAddr); err != nil {
		t.Fatal(err)
	}
	defer mtaDown(m, "postfix.sh")
	recordDryRun(t, m, 94)
	time.Sleep(200 * time.Millisecond)
	f, _ := os.OpenFile(logs["json"], os.O_APPEND|os.O_WRONLY, 0o644)
	f.WriteString("{\"msg\":\"decision\",\"client_ip\":\"127.0.0.98\"\nnot json at all\n")
	f.Close()

	for format, log := range logs {
		t.Run(format, func(t *testing.T) {
			got, sum := replay(t, log, "-dry-run")
			want := map[string]string{"rp-pass@pass.test": "accept->accept", "rp-fail@fail.test": "dry-run->dry-run",
				"rp-soft@soft.test": "accept->accept", "mallory@example.test": "dry-run->dry-run"}
			if !sameOutcomes(got, want) || sum["changed"] != 0 || sum["replayed"] != 4 || sum["unreplayable"] != 1 {
				t.Errorf("same configuration: %v %v\nwant %v, 4 replayed, 0 changed, 1 unreplayable", got, sum, want)
			}
			got, sum = replay(t, log)
			want["rp-fail@fail.test"], want["mallory@example.test"] = "dry-run->reject", "dry-run->reject"
			if !sameOutcomes(got, want) || sum["changed"] != 2 {
				t.Errorf("dry-run off: %v %v\nwant %v, 2 changed", got, sum, want)
			}
			got, sum = replay(t, log, "-action-spf-mailfrom-softfail", "reject 550 5.7.23")
			want["rp-soft@soft.test"] = "accept->reject"
			if !sameOutcomes(got, want) || sum["changed"] != 3 {
				t.Errorf("softfail rejected: %v %v\nwant %v, 3 changed", got, sum, want)
			}
		})
	}
}

func sameOutcomes(got, want map[string]string) bool {
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return len(got) == len(want)
}
