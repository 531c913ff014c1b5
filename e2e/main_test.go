//go:build e2e

// Package e2e runs senderguard between a real Postfix and a real Sendmail
// and real SMTP clients on loopback. It needs root, the postfix package and
// the Sendmail packages (unpacked by scripts/sendmail.sh); run it with
// "go test -tags e2e ./e2e" (the README's test command does).
package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/senderguard/senderguard/internal/testdns"
)

type mtaInstance struct {
	name string
	addr string // SMTP host:port
	dir  string // MTA_DIR
}

type harness struct {
	bin         string
	work        string
	dns         *testdns.Server
	milterAddr  string
	metricsAddr string
	adminAddr   string
	cfgPath     string
	cmd         *exec.Cmd
	logPath     string
	exited      chan error
	postfix     *mtaInstance
	sendmail    *mtaInstance
	probed      *mtaInstance // the sender domain's mail server, for callouts
	probePort   int
	cleanups    []func() // run after all tests (MTAs started by a test, once)
}

var h *harness

// zone is the DNS every end-to-end test sees. Clients connect from
// 127.0.0.x addresses (Postfix and Sendmail both report them); 127.0.0.1
// is the only trusted network.
var zone = []string{
	`pass.test. 300 IN TXT "v=spf1 ip4:127.0.0.0/24 ip6:2001:db8::/32 -all"`,
	`fail.test. 300 IN TXT "v=spf1 ip4:192.0.2.99 -all exp=why.fail.test"`,
	`why.fail.test. 300 IN TXT "%{i} is not a mail server of %{d}"`,
	`soft.test. 300 IN TXT "v=spf1 ~all"`,
	`badhelo.test. 300 IN TXT "v=spf1 -all"`,
	`client.test. 300 IN A 127.0.0.20`,
	// Callout: example.test's mail server is a second, real Postfix where
	// only alice and bob exist; other domains point at Go test servers
	// that tests start on the same port.
	`example.test. 300 IN TXT "v=spf1 ?all"`,
	`example.test. 300 IN MX 10 mx.example.test.`,
	`mx.example.test. 300 IN A 127.0.0.60`,
	`soft.test. 300 IN MX 10 mx.soft.test.`,
	`mx.soft.test. 300 IN A 127.0.0.61`,
	`once.test. 300 IN TXT "v=spf1 ?all"`,
	`once.test. 300 IN MX 10 mx.once.test.`,
	`mx.once.test. 300 IN A 127.0.0.62`,
	`slow.test. 300 IN MX 10 mx.slow.test.`,
	`mx.slow.test. 300 IN A 127.0.0.63`,
	`passmx.test. 300 IN TXT "v=spf1 ip4:127.0.0.0/24 -all"`,
	`passmx.test. 300 IN MX 10 mx.passmx.test.`,
	`mx.passmx.test. 300 IN A 127.0.0.64`,
	`nullmx.test. 300 IN TXT "v=spf1 ip4:127.0.0.0/24 -all"`,
	`nullmx.test. 300 IN MX 0 .`,
}

func freePort() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func TestMain(m *testing.M) {
	if zone := os.Getenv(zoneServerEnv); zone != "" {
		os.Exit(serveZone(zone)) // re-executed inside a network namespace (policydspf_test.go)
	}
	if os.Geteuid() != 0 {
		fmt.Println("e2e: skipped: needs root to run Postfix and Sendmail")
		os.Exit(0)
	}
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	work, err := os.MkdirTemp("", "senderguard-e2e-")
	if err != nil {
		return 1, err
	}
	os.Chmod(work, 0o755)
	defer os.RemoveAll(work)
	h = &harness{work: work, bin: filepath.Join(work, "senderguard"), logPath: filepath.Join(work, "senderguard.log")}
	build := exec.Command("go", "build", "-o", h.bin, "../cmd/senderguard")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		return 1, fmt.Errorf("build: %w", err)
	}
	h.dns, err = testdns.New("127.0.0.1:0", zone...)
	if err != nil {
		return 1, err
	}
	defer h.dns.Close()
	h.dns.ServFail("temp.test")
	h.milterAddr, h.metricsAddr, h.adminAddr = freePort(), freePort(), freePort()
	_, pp, _ := net.SplitHostPort(freePort())
	h.probePort, _ = strconv.Atoi(pp)
	h.probed = &mtaInstance{name: "postfix", addr: "127.0.0.60:" + pp, dir: filepath.Join(work, "probed")}
	os.Setenv("MTA_USERS", "alice bob")
	if err := mtaUp(h.probed, "postfix.sh", "none"); err != nil {
		return 1, err
	}
	os.Unsetenv("MTA_USERS")
	defer mtaDown(h.probed, "postfix.sh")
	h.cfgPath = filepath.Join(work, "senderguard.yaml")
	if err := os.WriteFile(h.cfgPath, []byte(baseConfig), 0o644); err != nil {
		return 1, err
	}
	if err := h.start(); err != nil {
		return 1, err
	}
	host, port, _ := net.SplitHostPort(h.milterAddr)
	h.postfix = &mtaInstance{name: "postfix", addr: freePort(), dir: filepath.Join(work, "mta")}
	// A gateway for several domains (Sendmail relays example.test's
	// subdomains as it is).
	os.Setenv("MTA_DOMAINS", "example.test strict.example.test trial.example.test noprobe.example.test other.example.test added.example.test")
	err = mtaUp(h.postfix, "postfix.sh", "inet:"+h.milterAddr)
	os.Unsetenv("MTA_DOMAINS")
	if err != nil {
		return 1, err
	}
	defer mtaDown(h.postfix, "postfix.sh")
	h.sendmail = &mtaInstance{name: "sendmail", addr: freePort(), dir: filepath.Join(work, "mta")}
	if err := mtaUp(h.sendmail, "sendmail.sh", "inet:"+port+"@"+host); err != nil {
		return 1, err
	}
	defer mtaDown(h.sendmail, "sendmail.sh")

	code := m.Run()
	for _, f := range h.cleanups {
		f()
	}

	// Lifecycle: SIGTERM drains and exits 0.
	if err := h.stop(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: SIGTERM:", err)
		code = 1
	}
	if code != 0 {
		b, _ := os.ReadFile(h.logPath)
		fmt.Fprintf(os.Stderr, "---- senderguard log ----\n%s\n", tail(string(b), 60))
	}
	return code, nil
}

var baseConfig string

func init() {
	baseConfig = `# e2e configuration
hostname: mx.example.test
trusted_networks: [127.0.0.1/32]
stage_budget: 2s
callout:
  allow_private: true
  helo: probe.example.test
  greylist_retry: 1h
`
}

func (h *harness) start() error {
	logf, err := os.Create(h.logPath)
	if err != nil {
		return err
	}
	h.cmd = exec.Command(h.bin, "serve", "-config", h.cfgPath, "-listen", "inet:"+h.milterAddr,
		"-metrics-listen", h.metricsAddr, "-admin", h.adminAddr, "-dns", h.dns.Addr, "-callout-port", strconv.Itoa(h.probePort))
	h.cmd.Stdout, h.cmd.Stderr = logf, logf
	if err := h.cmd.Start(); err != nil {
		return err
	}
	h.exited = make(chan error, 1)
	go func() { h.exited <- h.cmd.Wait(); logf.Close() }()
	for i := 0; i < 100; i++ {
		if resp, err := http.Get("http://" + h.metricsAddr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("senderguard did not become ready; log:\n%s", h.log())
}

func (h *harness) stop() error {
	if err := h.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case err := <-h.exited:
		return err
	case <-time.After(40 * time.Second):
		h.cmd.Process.Kill()
		return fmt.Errorf("no exit within 40s of SIGTERM")
	}
}

func (h *harness) log() string {
	b, _ := os.ReadFile(h.logPath)
	return string(b)
}

// reload writes cfg, sends SIGHUP and waits for the log to report the
// reload's outcome, which must match wantOK.
func (h *harness) reload(t testing.TB, cfg string, wantOK bool) {
	t.Helper()
	count := func() (int, int) {
		l := h.log()
		return strings.Count(l, "configuration reloaded"), strings.Count(l, "reload failed")
	}
	ok0, bad0 := count()
	if err := os.WriteFile(h.cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	h.cmd.Process.Signal(syscall.SIGHUP)
	for i := 0; i < 100; i++ {
		ok, bad := count()
		if ok > ok0 || bad > bad0 {
			if (ok > ok0) != wantOK {
				t.Fatalf("reload: success=%v, want %v; log:\n%s", ok > ok0, wantOK, tail(h.log(), 5))
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no reload logged")
}

func mtaUp(m *mtaInstance, script, milter string) error {
	cmd := exec.Command("../scripts/"+script, "up", milter, m.addr)
	cmd.Env = append(os.Environ(), "MTA_DIR="+m.dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s up: %v\n%s", script, err, out)
	}
	return nil
}

func mtaDown(m *mtaInstance, script string) {
	cmd := exec.Command("../scripts/"+script, "down")
	cmd.Env = append(os.Environ(), "MTA_DIR="+m.dir)
	cmd.Run()
}

// metric returns the value of one sample line of /metrics, 0 if absent.
func metric(t testing.TB, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + h.metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, name+" ") {
			v, _ := strconv.ParseFloat(strings.TrimSpace(line[len(name):]), 64)
			return v
		}
	}
	io.Copy(io.Discard, resp.Body)
	return 0
}

// decisionLine waits for the log line of the message from sender.
func decisionLine(t testing.TB, sender string) string {
	t.Helper()
	re := regexp.MustCompile(`msg=decision .*sender=` + regexp.QuoteMeta(sender) + `( |$)`)
	for i := 0; i < 100; i++ {
		for _, l := range strings.Split(h.log(), "\n") {
			if re.MatchString(l) {
				return l
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no decision line for %s", sender)
	return ""
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func runtimeVersion() string { return runtime.Version() }
