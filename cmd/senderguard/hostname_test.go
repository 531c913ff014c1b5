package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestUnqualifiedHostnameWarns: a pod name as hostname is warned about at
// start (it becomes the authserv-id and the probes' EHLO).
func TestUnqualifiedHostnameWarns(t *testing.T) {
	bin := build(t)
	for _, tc := range []struct {
		hostname string
		warn     bool
	}{{"3f2a1b9c8d7e", true}, {"mx.example.org", false}} {
		addr := freeAddr()
		logPath := filepath.Join(t.TempDir(), "log")
		logf, _ := os.Create(logPath)
		cmd := exec.Command(bin, "serve", "-listen", "inet:"+addr, "-metrics-listen", "", "-admin", "", "-dns", "127.0.0.1:1", "-hostname", tc.hostname)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var log string
		for range 100 {
			b, _ := os.ReadFile(logPath)
			if log = string(b); strings.Contains(log, "senderguard serving") {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		cmd.Process.Kill()
		cmd.Wait()
		if got := strings.Contains(log, "hostname is not a fully qualified domain name"); got != tc.warn {
			t.Errorf("-hostname %s: warned=%v, want %v:\n%s", tc.hostname, got, tc.warn, log)
		}
	}
}
