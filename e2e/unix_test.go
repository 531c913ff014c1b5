//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestUnixSocketMilter runs a second senderguard on a unix socket behind
// its own Postfix whose smtpd runs chrooted in the queue directory, as
// Debian's does: the socket lives under the spool, mode 0660, group
// postfix, and Postfix names it by its path inside the chroot, as
// deploy/postfix-main.cf says.
func TestUnixSocketMilter(t *testing.T) {
	spool := filepath.Join(h.work, "unix", "postfix", "queue")
	sock := filepath.Join(spool, "senderguard", "milter.sock")
	os.MkdirAll(spool, 0o755)
	// The socket's directory: reachable by Postfix's group only.
	grp, err := user.LookupGroup("postfix")
	if err != nil {
		t.Fatal(err)
	}
	gid, _ := strconv.Atoi(grp.Gid)
	os.Mkdir(filepath.Dir(sock), 0o750)
	os.Chown(filepath.Dir(sock), 0, gid)
	logPath := filepath.Join(h.work, "unix", "senderguard.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(h.bin, "-config", h.cfgPath, "-listen", "unix:"+sock, "-listen-mode", "0660", "-listen-group", "postfix",
		"-metrics-listen", "", "-admin", "", "-dns", h.dns.Addr, "-callout=false")
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
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 || fmt.Sprint(fi.Sys().(*syscall.Stat_t).Gid) != grp.Gid {
		t.Errorf("socket mode %v gid %d, want 0660 and postfix (%s)", fi.Mode().Perm(), fi.Sys().(*syscall.Stat_t).Gid, grp.Gid)
	}
	m := &mtaInstance{name: "postfix", addr: freePort(), dir: filepath.Join(h.work, "unix")}
	os.Setenv("MTA_CHROOT", "y")
	err = mtaUp(m, "postfix.sh", "unix:/senderguard/milter.sock")
	os.Unsetenv("MTA_CHROOT")
	if err != nil {
		t.Fatal(err)
	}
	defer mtaDown(m, "postfix.sh")
	c := dial(t, m.addr, "127.0.0.31")
	c.expect(250, "EHLO client.test")
	refusedAtEnd(t, c, "unix@fail.test")
	tok := c.deliver(t, "unix@pass.test", "u@example.test")
	c.quit()
	if rs := headerValues(delivered(t, m, tok), "Received-SPF"); len(rs) != 1 || !strings.HasPrefix(rs[0], "pass") {
		t.Errorf("Received-SPF: %q", rs)
	}
}
