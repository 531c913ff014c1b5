//go:build e2e

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestUnixSocketMilter runs a second senderguard on a unix socket behind
// its own Postfix.
func TestUnixSocketMilter(t *testing.T) {
	sock := filepath.Join(h.work, "unix", "milter.sock")
	os.MkdirAll(filepath.Dir(sock), 0o755)
	logPath := filepath.Join(h.work, "unix", "senderguard.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(h.bin, "-config", h.cfgPath, "-listen", "unix:"+sock, "-metrics-listen", "", "-dns", h.dns.Addr, "-callout=false")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); logf.Close() }()
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("exit after SIGTERM: %v", err)
			}
		case <-time.After(40 * time.Second):
			cmd.Process.Kill()
			t.Error("no exit after SIGTERM")
		}
	}()
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	m := &mtaInstance{name: "postfix", addr: freePort(), dir: filepath.Join(h.work, "unix")}
	if err := mtaUp(m, "postfix.sh", "unix:"+sock); err != nil {
		t.Fatal(err)
	}
	defer mtaDown(m, "postfix.sh")
	c := dial(t, m.addr, "127.0.0.31")
	c.expect(250, "EHLO client.test")
	c.expect(250, "MAIL FROM:<unix@fail.test>")
	if r := c.cmd("RCPT TO:<u@example.test>"); r.Code != 550 || !strings.HasPrefix(r.Text, "5.7.23 SPF fail") {
		t.Fatalf("RCPT: %v", r)
	}
	c.expect(250, "RSET")
	tok := c.deliver(t, "unix@pass.test", "u@example.test")
	c.quit()
	if rs := headerValues(delivered(t, m, tok), "Received-SPF"); len(rs) != 1 || !strings.HasPrefix(rs[0], "pass") {
		t.Errorf("Received-SPF: %q", rs)
	}
}
