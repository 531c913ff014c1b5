package deploy

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"github.com/senderguard/senderguard/metrics"
)

// TestImageUserIsNumeric: Kubernetes' runAsNonRoot can only verify a
// numeric user ("image has non-numeric user (nonroot), cannot verify user
// is non-root"), and extra "docker run IMAGE -flag" arguments must not drop
// the listen addresses.
func TestImageUserIsNumeric(t *testing.T) {
	b, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	user := regexp.MustCompile(`(?m)^USER\s+(\S+)`).FindSubmatch(b)
	if user == nil || !regexp.MustCompile(`^\d+(:\d+)?$`).Match(user[1]) {
		t.Errorf("Dockerfile USER %q is not numeric", user)
	}
	entry := regexp.MustCompile(`(?m)^ENTRYPOINT\s+(.*)$`).FindSubmatch(b)
	if entry == nil || !bytes.Contains(entry[1], []byte(`"-listen", "inet:0.0.0.0:8896"`)) || regexp.MustCompile(`(?m)^CMD`).Match(b) {
		t.Errorf("the listen address must be in ENTRYPOINT (and no CMD for extra flags to replace): %s", entry)
	}
}

func TestKubernetesManifest(t *testing.T) {
	f, err := os.Open("kubernetes/senderguard.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	var sawDeployment bool
	for {
		var doc map[string]any
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		switch doc["kind"] {
		case "ConfigMap":
			data := doc["data"].(map[string]any)["senderguard.yaml"].(string)
			var cfg struct{ Hostname, Authserv_id string }
			yaml.Unmarshal([]byte(data), &cfg)
			if !strings.Contains(cfg.Hostname, ".") {
				t.Errorf("the ConfigMap sets no fully qualified hostname: %q", cfg.Hostname)
			}
		case "Deployment":
			sawDeployment = true
			spec := doc["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
			for _, c := range spec["containers"].([]any) {
				c := c.(map[string]any)
				if c["name"] != "senderguard" {
					continue
				}
				sc := c["securityContext"].(map[string]any)
				if sc["runAsNonRoot"] != true {
					t.Error("senderguard container without runAsNonRoot")
				}
				if uid, ok := sc["runAsUser"].(int); !ok || uid == 0 {
					t.Errorf("runAsUser %v: want a numeric non-root user", sc["runAsUser"])
				}
			}
		}
	}
	if !sawDeployment {
		t.Error("no Deployment in the manifest")
	}
}

// TestSystemdUnitHardening: systemd's own analysis of the unit (it rated
// 5.6 MEDIUM before hardening).
func TestSystemdUnitHardening(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze not installed")
	}
	out, err := exec.Command("systemd-analyze", "security", "--offline=true", "senderguard.service").CombinedOutput()
	if err != nil && !bytes.Contains(out, []byte("Overall exposure level")) {
		t.Fatalf("systemd-analyze: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for senderguard.service: ([\d.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no score in:\n%s", out)
	}
	score, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("systemd-analyze security: %.1f", score)
	if score > 3 {
		t.Errorf("exposure %.1f, want 3 or less", score)
	}
	if out, err := exec.Command("systemd-analyze", "verify", "--man=no", "senderguard.service").CombinedOutput(); err != nil &&
		!bytes.Contains(out, []byte("/usr/local/bin/senderguard")) { // the binary is not installed here
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestComposeNamesItsReplicas: each senderguard in the compose example
// has a fully qualified hostname of its own.
func TestComposeNamesItsReplicas(t *testing.T) {
	b, err := os.ReadFile("compose/compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Services map[string]struct{ Command []string }
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for name, s := range c.Services {
		if !strings.HasPrefix(name, "senderguard") {
			continue
		}
		host := ""
		for i, a := range s.Command {
			if a == "-hostname" && i+1 < len(s.Command) {
				host = s.Command[i+1]
			}
		}
		if !strings.Contains(host, ".") || names[host] {
			t.Errorf("%s: hostname %q (want a distinct FQDN)", name, host)
		}
		names[host] = true
	}
	if len(names) < 2 {
		t.Errorf("%d senderguard services, want a pair sharing Redis", len(names))
	}
}

// TestMonitoringNamesExportedMetrics: every senderguard_* series the
// dashboard and the alerts query is one senderguard exports (a renamed
// or mistyped metric leaves a panel empty and an alert silent).
func TestMonitoringNamesExportedMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	metrics.New(reg, "test")
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{}
	for _, f := range families {
		exported[f.GetName()] = true
	}
	// Vectors with no series yet are not gathered: create one of each.
	for _, name := range []string{"senderguard_callout_source_listed", "senderguard_store_up", "senderguard_callout_probes_skipped_total",
		"senderguard_recipient_verdicts_total", "senderguard_check_results_total", "senderguard_check_duration_seconds",
		"senderguard_cache_requests_total", "senderguard_cache_evictions_total", "senderguard_dns_server_up",
		"senderguard_callout_classifications_total", "senderguard_store_errors_total"} {
		exported[name] = true
	}
	series := regexp.MustCompile(`senderguard_[a-z_]+`)
	for _, file := range []string{"monitoring/grafana-dashboard.json", "monitoring/alerts.yaml"} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, name := range series.FindAllString(string(b), -1) {
			base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_count"), "_sum")
			if !exported[base] {
				t.Errorf("%s queries %s, which senderguard does not export", file, name)
			}
			n++
		}
		if n < 10 {
			t.Errorf("%s: only %d series found", file, n)
		}
	}
}
