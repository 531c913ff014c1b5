package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/senderguard/senderguard/internal/testcert"
)

// TestMetricsBehindTLSAndBasicAuth: the metrics listener with an exporter
// web configuration: TLS with a test CA and a bcrypt-hashed user.
func TestMetricsBehindTLSAndBasicAuth(t *testing.T) {
	bin := build(t)
	dir := t.TempDir()
	certs := testcert.New(t, dir, "metrics", "127.0.0.1")
	hash, _ := bcrypt.GenerateFromPassword([]byte("scrape-pw"), bcrypt.MinCost)
	webCfg := filepath.Join(dir, "web.yaml")
	os.WriteFile(webCfg, []byte(fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\nbasic_auth_users:\n  prometheus: %s\n", certs.CertFile, certs.KeyFile, hash)), 0o600)
	metrics := freeAddr()
	logPath := filepath.Join(dir, "log")
	logf, _ := os.Create(logPath)
	cmd := exec.Command(bin, "serve", "-listen", "inet:"+freeAddr(), "-metrics-listen", metrics, "-admin", "", "-dns", "127.0.0.1:1", "-web-config", webCfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: certs.Pool}}}
	get := func(url, user, pw string) (int, string, error) {
		req, _ := http.NewRequest("GET", url, nil)
		if user != "" {
			req.SetBasicAuth(user, pw)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	var code int
	var err error
	for range 100 {
		if code, _, err = get("https://"+metrics+"/healthz", "prometheus", "scrape-pw"); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	cases := []struct {
		url, user, pw string
		code          int
		body          string
	}{
		{"https://" + metrics + "/metrics", "prometheus", "scrape-pw", 200, "senderguard_build_info"},
		{"https://" + metrics + "/metrics", "", "", 401, ""},
		{"https://" + metrics + "/metrics", "prometheus", "wrong", 401, ""},
		{"https://" + metrics + "/readyz", "prometheus", "scrape-pw", 200, "ready"},
	}
	for _, tc := range cases {
		code, body, err := get(tc.url, tc.user, tc.pw)
		if err != nil || code != tc.code || !strings.Contains(body, tc.body) {
			t.Errorf("%s as %q/%q: %d %v, want %d containing %q", tc.url, tc.user, tc.pw, code, err, tc.code, tc.body)
		}
	}
	// Plain HTTP to the TLS listener gets nothing useful.
	if resp, err := http.Get("http://" + metrics + "/metrics"); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(b), "senderguard_build_info") {
			t.Error("metrics served over plain HTTP")
		}
	}
	cmd.Process.Signal(os.Interrupt)
	cmd.Wait()
	log, _ := os.ReadFile(logPath)
	if strings.Contains(string(log), string(hash)) || strings.Contains(string(log), "scrape-pw") {
		t.Errorf("the bcrypt hash or password reached the log:\n%s", log)
	}
	if !strings.Contains(string(log), "TLS is enabled") {
		t.Errorf("log does not say TLS is on:\n%s", log)
	}

	// check-config validates the web configuration file.
	bad := filepath.Join(dir, "bad-web.yaml")
	os.WriteFile(bad, []byte("tls_server_config:\n  cert_file: /nonexistent.pem\n  key_file: /nonexistent.key\n"), 0o600)
	out, code := run(t, bin, "check-config", "-web-config", bad)
	if code != 1 || !strings.Contains(out, "metrics_web_config") {
		t.Errorf("check-config with a broken web config: exit %d\n%s", code, out)
	}
	out, code = run(t, bin, "check-config", "-web-config", webCfg)
	if code != 0 || strings.Contains(out, string(hash)) {
		t.Errorf("check-config with a good web config: exit %d\n%s", code, out)
	}
}
