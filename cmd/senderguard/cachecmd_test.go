package main

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/senderguard/senderguard/cache"
	"github.com/senderguard/senderguard/internal/testredis"
)

func run(t *testing.T, bin string, args ...string) (string, int) {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

// TestCacheCommandOnRedis: show and forget fleet-wide on Redis directly,
// with a password from a file that never appears in the output.
func TestCacheCommandOnRedis(t *testing.T) {
	srv := testredis.Start(t, "--requirepass", "s3cret-pw")
	bin := build(t)
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("s3cret-pw\n"), 0o600)
	r, err := cache.NewRedis(cache.RedisOptions{URL: srv.URL(), KeyPrefix: "senderguard:", Password: "s3cret-pw", Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx := context.Background()
	r.Set(ctx, "a:alice@wrong.test", cache.Entry{Kind: "not-exists", Code: 550, Enhanced: "5.1.1", Stored: time.Now().Add(-time.Hour).Unix()}, 72*time.Hour)
	r.Set(ctx, "a:bob@wrong.test", cache.Entry{Kind: "exists", Code: 250, Stored: time.Now().Unix()}, time.Hour)
	r.Set(ctx, "d:wrong.test", cache.Entry{Kind: "breaker", Stored: time.Now().Unix()}, time.Hour)
	flags := []string{"-redis", srv.URL(), "-redis-password-file", pw}
	cases := []struct {
		args      []string
		code      int
		contains  []string
		forbidden string
	}{
		{append([]string{"cache", "show"}, append(flags, "alice@WRONG.test")...), 0, []string{"a:alice@wrong.test\tnot-exists\t550 5.1.1\tage 1h0m", "d:wrong.test\tbreaker"}, "bob"},
		{append([]string{"cache", "show"}, append(flags, "wrong.test")...), 0, []string{"a:alice@wrong.test", "a:bob@wrong.test", "d:wrong.test"}, ""},
		{append([]string{"cache", "forget"}, append(flags, "alice@wrong.test")...), 0, []string{"2 entries removed"}, ""},
		{append([]string{"cache", "show"}, append(flags, "alice@wrong.test")...), 1, []string{"no cached entry applies"}, ""},
		{append([]string{"cache", "forget"}, append(flags, "nobody@else.test")...), 1, []string{"0 entries removed"}, ""},
		{append([]string{"cache", "show"}, "-redis", "redis://u:wrongpw@"+srv.Addr, "x@y.test"), 2, []string{"senderguard cache:"}, "wrongpw"},
		{[]string{"cache", "show"}, 2, []string{"usage: senderguard cache"}, ""},
		{[]string{"check-config", "-redis", "redis://u:hunter2@127.0.0.1:1"}, 0, []string{"redis://REDACTED@127.0.0.1:1"}, "hunter2"},
	}
	for _, tc := range cases {
		out, code := run(t, bin, tc.args...)
		if code != tc.code {
			t.Errorf("%v: exit %d, want %d:\n%s", tc.args, code, tc.code, out)
		}
		for _, c := range tc.contains {
			if !strings.Contains(out, c) {
				t.Errorf("%v: output lacks %q:\n%s", tc.args, c, out)
			}
		}
		if tc.forbidden != "" && strings.Contains(out, tc.forbidden) {
			t.Errorf("%v: output shows %q:\n%s", tc.args, tc.forbidden, out)
		}
		if strings.Contains(out, "s3cret-pw") {
			t.Errorf("%v: password printed:\n%s", tc.args, out)
		}
	}
}

// TestCacheCommandOnARunningInstance: without Redis, show and forget go to
// the admin endpoint of a running senderguard.
func TestCacheCommandOnARunningInstance(t *testing.T) {
	bin := build(t)
	admin := freeAddr()
	cmd := exec.Command(bin, "serve", "-listen", "inet:"+freeAddr(), "-metrics-listen", "", "-admin", admin, "-dns", "127.0.0.1:1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp", admin); err == nil {
			c.Close()
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	out, code := run(t, bin, "cache", "show", "-admin", admin, "nobody@nowhere.test")
	if code != 1 || !strings.Contains(out, "no cached entry applies") {
		t.Errorf("show on an empty cache: exit %d\n%s", code, out)
	}
	out, code = run(t, bin, "cache", "forget", "-admin", admin, "not an address")
	if code != 2 {
		t.Errorf("forget of garbage: exit %d, want 2\n%s", code, out)
	}
	out, code = run(t, bin, "cache", "show", "-admin", freeAddr(), "x@y.test")
	if code != 2 || !strings.Contains(out, "running instance at") {
		t.Errorf("no instance: exit %d\n%s", code, out)
	}
}
