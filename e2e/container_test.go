//go:build e2e

package e2e

import (
	"fmt"
	"go.yaml.in/yaml/v3"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	imageOnce sync.Once
	imageErr  error
	imageSkip string
)

// sidecarImage is the image the container tests run.
const sidecarImage = "localhost/senderguard:e2e"

// buildImage builds the image once per run; it skips the test on a
// machine whose container runtime cannot start containers.
func buildImage(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("podman"); err != nil {
		t.Skip("podman not installed (scripts/deps.sh installs it)")
	}
	imageOnce.Do(func() {
		if out, err := exec.Command("../scripts/image.sh", sidecarImage).CombinedOutput(); err != nil {
			imageErr = fmt.Errorf("scripts/image.sh: %v\n%s", err, out)
			return
		}
		out, err := exec.Command("podman", "run", "--rm", "--network", "host", "--entrypoint", "/usr/local/bin/senderguard", sidecarImage, "version").CombinedOutput()
		if err != nil && (strings.Contains(string(out), "OCI") || strings.Contains(string(out), "runc")) {
			imageSkip = "this machine cannot run containers: " + string(out)
		} else if err != nil {
			imageErr = fmt.Errorf("podman run IMAGE version: %v\n%s", err, out)
		}
	})
	if imageSkip != "" {
		t.Skip(imageSkip)
	}
	if imageErr != nil {
		t.Fatal(imageErr)
	}
	return sidecarImage
}

// TestSidecarImage builds the image from the Dockerfile (scripts/image.sh,
// with stand-in base images: no registry is reachable) and runs it with
// podman as an operator would: "docker run IMAGE -dry-run" style, on a
// read-only root filesystem, host network, a host Postfix as its MTA.
func TestSidecarImage(t *testing.T) {
	image := buildImage(t)
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

// TestSidecarPodKubePlay runs the senderguard container of
// deploy/kubernetes/senderguard.yaml as a Pod with podman kube play (host
// network, our image, the manifest's securityContext and grace period):
// it answers a host Postfix and /readyz, and drains on SIGTERM within
// terminationGracePeriodSeconds.
func TestSidecarPodKubePlay(t *testing.T) {
	image := buildImage(t)
	f, err := os.Open("../deploy/kubernetes/senderguard.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var podSpec map[string]any
	dec := yaml.NewDecoder(f)
	for {
		var doc map[string]any
		if err := dec.Decode(&doc); err != nil {
			break
		}
		if doc["kind"] == "Deployment" {
			podSpec = doc["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
		}
	}
	if podSpec == nil {
		t.Fatal("no Deployment in the manifest")
	}
	var sg map[string]any
	for _, c := range podSpec["containers"].([]any) {
		if c := c.(map[string]any); c["name"] == "senderguard" {
			sg = c
		}
	}
	grace := podSpec["terminationGracePeriodSeconds"].(int)
	// The manifest's container, with our image; what needs the cluster
	// (Redis and web-config Secrets, the ConfigMap, HTTPS probes) is left
	// out.
	pod := map[string]any{
		"apiVersion": "v1", "kind": "Pod", "metadata": map[string]any{"name": "senderguard-e2e"},
		"spec": map[string]any{
			"hostNetwork": true, "terminationGracePeriodSeconds": grace, "restartPolicy": "Never",
			"containers": []any{map[string]any{
				"name": "senderguard", "image": image, "securityContext": sg["securityContext"],
				"args": []string{"-dry-run", "-dns", h.dns.Addr, "-hostname", "mx.example.test", "-callout=false",
					"-trusted-networks", "127.0.0.1/32", "-listen", "inet:127.0.0.1:18896", "-metrics-listen", "127.0.0.1:19896"},
			}},
		},
	}
	b, _ := yaml.Marshal(pod)
	manifest := filepath.Join(h.work, "pod.yaml")
	os.WriteFile(manifest, b, 0o644)
	exec.Command("podman", "kube", "down", manifest).Run()
	if out, err := exec.Command("podman", "kube", "play", manifest).CombinedOutput(); err != nil {
		t.Fatalf("podman kube play: %v\n%s", err, out)
	}
	defer exec.Command("podman", "kube", "down", manifest).Run()
	ready := false
	for range 100 {
		if resp, err := http.Get("http://127.0.0.1:19896/readyz"); err == nil {
			resp.Body.Close()
			if ready = resp.StatusCode == 200; ready {
				break
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !ready {
		logs, _ := exec.Command("podman", "logs", "senderguard-e2e-senderguard").CombinedOutput()
		t.Fatalf("pod not ready:\n%s", logs)
	}
	m := &mtaInstance{name: "postfix", addr: freePort(), dir: filepath.Join(h.work, "podmta")}
	if err := mtaUp(m, "postfix.sh", "inet:127.0.0.1:18896"); err != nil {
		t.Fatal(err)
	}
	defer mtaDown(m, "postfix.sh")
	c := dial(t, m.addr, "127.0.0.49")
	c.expect(250, "EHLO client.test")
	tok := c.deliver(t, "pod@fail.test", "u@example.test")
	c.quit()
	if xs := headerValues(delivered(t, m, tok), "X-Senderguard"); len(xs) != 1 || !strings.HasPrefix(xs[0], "dry-run=would-reject") {
		t.Errorf("X-Senderguard: %q", xs)
	}
	start := time.Now()
	if out, err := exec.Command("podman", "pod", "stop", "-t", fmt.Sprint(grace), "senderguard-e2e").CombinedOutput(); err != nil {
		t.Fatalf("podman pod stop: %v\n%s", err, out)
	}
	if d := time.Since(start); d > time.Duration(grace)*time.Second {
		t.Errorf("pod stop took %v, past terminationGracePeriodSeconds %d", d, grace)
	}
	code, _ := exec.Command("podman", "inspect", "-f", "{{.State.ExitCode}}", "senderguard-e2e-senderguard").Output()
	logs, _ := exec.Command("podman", "logs", "senderguard-e2e-senderguard").CombinedOutput()
	if strings.TrimSpace(string(code)) != "0" || !strings.Contains(string(logs), "msg=stopped") {
		t.Errorf("exit code %s after SIGTERM; log:\n%s", code, tail(string(logs), 5))
	}
}
