package spf_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestConformanceSuite runs the openspf RFC 7208 suite (and reports the RFC
// 4408 score) through "senderguard spf", with the runner from
// ../shared/spf-suite, in both of its timeout modes.
func TestConformanceSuite(t *testing.T) {
	if testing.Short() {
		t.Skip("conformance suite skipped in -short mode")
	}
	suiteDir, err := filepath.Abs("../../../shared/spf-suite")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(suiteDir, "main.go")); err != nil {
		t.Skipf("conformance suite not found at %s (it ships beside the project in CI): %v", suiteDir, err)
	}
	bin := t.TempDir()
	build := func(dir, out string, args ...string) {
		cmd := exec.Command("go", append([]string{"build", "-o", filepath.Join(bin, out)}, args...)...)
		cmd.Dir = dir
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", out, err, b)
		}
	}
	build(suiteDir, "spf-suite", ".")
	build("../../cmd/senderguard", "senderguard", ".")
	template := filepath.Join(bin, "senderguard") + " spf -dns {dns} -ip {ip} -helo {helo} -sender {sender}"
	run := func(suite, mode string) string {
		cmd := exec.Command(filepath.Join(bin, "spf-suite"), "-suite", filepath.Join(suiteDir, "testdata", suite),
			"-timeout-mode", mode, "-cmd", template)
		out, _ := cmd.CombinedOutput()
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		last := lines[len(lines)-1]
		if !strings.HasPrefix(last, "spf-suite: ") {
			t.Fatalf("%s %s: unexpected output:\n%s", suite, mode, out)
		}
		if !strings.HasSuffix(last, " 0 failed") {
			t.Logf("%s (%s):\n%s", suite, mode, out)
		}
		return last
	}
	for _, mode := range []string{"servfail", "drop"} {
		if got, want := run("rfc7208-tests.yml", mode), "spf-suite: 203 passed, 0 failed"; got != want {
			t.Errorf("rfc7208 suite, timeout mode %s: %s, want %s", mode, got, want)
		}
	}
	t.Logf("rfc4408 suite (servfail): %s", run("rfc4408-tests.yml", "servfail"))
}
