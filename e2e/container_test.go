//go:build e2e

package e2e

import (
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSidecarImage builds the image from the Dockerfile (scripts/image.sh,
// with stand-in base images: no registry is reachable) and runs it with
// podman as an operator would: "docker run IMAGE -dry-run" style, on a
// read-only root filesystem, host network, a host Postfix as its MTA.
func TestSidecarImage(t *testing.T) {
	if _, err := exec.LookPath("podman"); err != nil {
		t.Skip("podman not installed (scripts/deps.sh installs it)")
	}
	const image = "localhost/senderguard:e2e"
	if out, err := exec.Command("../scripts/image.sh", image).CombinedOutput(); err != nil {
		t.Fatalf("scripts/image.sh: %v\n%s", err, out)
	}
	if out, err := exec.Command("podman", "run", "--rm", "--network", "host", "--entrypoint", "/usr/local/bin/senderguard", image, "version").CombinedOutput(); err != nil {
		if strings.Contains(string(out), "OCI") || strings.Contains(string(out), "runc") {
			t.Skipf("this machine cannot run containers: %s", out)
		}
		t.Fatalf("podman run IMAGE version: %v\n%s", err, out)
	}
	name := "senderguard-e2e"
	exec.Command("podman", "rm", "-f", name).Run()
	// Extra arguments add to the entrypoint's: it still listens on
	// 0.0.0.0:8896 (milter) and 0.0.0.0:9896 (metrics).
	out, err := exec.Command("podman", "run", "-d", "--name", name, "--read-only", "--network", "host", image,
		"-dry-run", "-dns", h.dns.Addr, "-hostname", "mx.example.test", "-callout=false", "-trusted-networks", "127.0.0.1/32").CombinedOutput()
	if err != nil {
		t.Fatalf("podman run: %v\n%s", err, out)
	}
	defer exec.Command("podman", "rm", "-f", name).Run()
	ready := false
	for range 100 {
		if resp, err := http.Get("http://127.0.0.1:9896/readyz"); err == nil {
			resp.Body.Close()
			if ready = resp.StatusCode == 200; ready {
				break
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !ready {
		logs, _ := exec.Command("podman", "logs", name).CombinedOutput()
		t.Fatalf("container not ready on 0.0.0.0:9896:\n%s", logs)
	}
	if out, _ := exec.Command("podman", "top", name, "huser").CombinedOutput(); !strings.Contains(string(out), "65532") {
		t.Errorf("container does not run as 65532:\n%s", out)
	}
	m := &mtaInstance{name: "postfix", addr: freePort(), dir: filepath.Join(h.work, "imagemta")}
	if err := mtaUp(m, "postfix.sh", "inet:127.0.0.1:8896"); err != nil {
		t.Fatal(err)
	}
	defer mtaDown(m, "postfix.sh")
	c := dial(t, m.addr, "127.0.0.48")
	c.expect(250, "EHLO client.test")
	tok := c.deliver(t, "image@fail.test", "u@example.test") // dry run: delivered, marked
	c.quit()
	if xs := headerValues(delivered(t, m, tok), "X-Senderguard"); len(xs) != 1 || !strings.HasPrefix(xs[0], "dry-run=would-reject (550 5.7.23") {
		t.Errorf("X-Senderguard: %q", xs)
	}
	// SIGTERM drains and exits 0 well within the 45 s the examples give.
	start := time.Now()
	if out, err := exec.Command("podman", "stop", "-t", "45", name).CombinedOutput(); err != nil {
		t.Fatalf("podman stop: %v\n%s", err, out)
	}
	if d := time.Since(start); d > 35*time.Second {
		t.Errorf("stop took %v", d)
	}
	code, _ := exec.Command("podman", "inspect", "-f", "{{.State.ExitCode}}", name).Output()
	logs, _ := exec.Command("podman", "logs", name).CombinedOutput()
	if strings.TrimSpace(string(code)) != "0" || !strings.Contains(string(logs), "msg=stopped") {
		t.Errorf("exit code %s after SIGTERM; log:\n%s", code, tail(string(logs), 5))
	}
}
