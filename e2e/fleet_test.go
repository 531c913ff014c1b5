//go:build e2e

package e2e

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/senderguard/senderguard/internal/testredis"
	"github.com/senderguard/senderguard/internal/testsmtp"
)

// replica is one senderguard of a fleet, with its own Postfix in front.
type replica struct {
	milter, metrics, admin string
	cmd                    *exec.Cmd
	log                    string
	mta                    *mtaInstance
}

func startReplica(t *testing.T, i int, redisURL string, r *replica) {
	t.Helper()
	if r.milter == "" {
		r.milter, r.metrics, r.admin = freePort(), freePort(), freePort()
		r.log = filepath.Join(h.work, fmt.Sprintf("replica%d.log", i))
	}
	logf, err := os.OpenFile(r.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	r.cmd = exec.Command(h.bin, "serve", "-config", h.cfgPath, "-listen", "inet:"+r.milter, "-metrics-listen", r.metrics,
		"-admin", r.admin, "-dns", h.dns.Addr, "-callout-port", strconv.Itoa(h.probePort), "-redis", redisURL,
		"-redis-timeout", "100ms",
		// All the senders here share one mail host, and per-host limits
		// are fleet-wide: this test counts probes, not host limits
		// (checks/callout's TestFleetSharesThePerHostLimits does).
		"-callout-per-host-concurrency", "30")
	r.cmd.Stdout, r.cmd.Stderr = logf, logf
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.cmd.Wait(); logf.Close() }()
	for range 100 {
		if resp, err := http.Get("http://" + r.metrics + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("replica %d not ready", i)
}

func (r *replica) stop() {
	if r.cmd != nil && r.cmd.Process != nil {
		r.cmd.Process.Signal(os.Interrupt)
		time.Sleep(200 * time.Millisecond)
		r.cmd.Process.Kill()
	}
}

// metricAt reads one sample of a replica's /metrics; -1 when absent.
func metricAt(addr, name string) float64 {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, name+" ") {
			v, _ := strconv.ParseFloat(strings.TrimSpace(line[len(name):]), 64)
			return v
		}
	}
	return -1
}

// rcpt runs one SMTP transaction up to RCPT from localIP and returns the
// RCPT reply code and how long MAIL and RCPT took together.
func rcpt(addr, localIP, sender string) (int, time.Duration, error) {
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(localIP)}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	tc := textproto.NewConn(conn)
	if _, _, err := tc.ReadResponse(220); err != nil {
		return 0, 0, err
	}
	tc.PrintfLine("EHLO client.test")
	if _, _, err := tc.ReadResponse(250); err != nil {
		return 0, 0, err
	}
	start := time.Now()
	tc.PrintfLine("MAIL FROM:<%s>", sender)
	if _, _, err := tc.ReadResponse(250); err != nil {
		return 0, 0, err
	}
	tc.PrintfLine("RCPT TO:<u@example.test>")
	code, _, _ := tc.ReadResponse(0)
	took := time.Since(start)
	tc.PrintfLine("QUIT")
	return code, took, nil
}

// TestFleetThroughRedis: three Postfix instances, each with its own
// senderguard, one Redis. One probe per sender for the whole fleet; a
// restarted replica answers from Redis; a Redis outage costs nothing but
// sharing; sharing resumes when Redis is back.
func TestFleetThroughRedis(t *testing.T) {
	redis := testredis.Start(t)
	zone := []string{"mx.fleet.test. 300 IN A 127.0.0.70"}
	for i := range 20 {
		zone = append(zone, fmt.Sprintf(`s%d.fleet.test. 300 IN TXT "v=spf1 ?all"`, i), fmt.Sprintf("s%d.fleet.test. 300 IN MX 10 mx.fleet.test.", i))
	}
	if err := h.dns.Add(zone...); err != nil {
		t.Fatal(err)
	}
	probed := testsmtp.Start(t, "127.0.0.70", h.probePort, nil) // accepts every recipient
	fleet := make([]*replica, 3)
	for i := range fleet {
		fleet[i] = &replica{}
		startReplica(t, i, redis.URL(), fleet[i])
		defer fleet[i].stop()
		fleet[i].mta = &mtaInstance{name: "postfix", addr: freePort(), dir: filepath.Join(h.work, fmt.Sprintf("fleet%d", i))}
		if err := mtaUp(fleet[i].mta, "postfix.sh", "inet:"+fleet[i].milter); err != nil {
			t.Fatal(err)
		}
		defer mtaDown(fleet[i].mta, "postfix.sh")
	}
	send := func(n int, senders func(i int) string) []error {
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				code, took, err := rcpt(fleet[i%3].mta.addr, fmt.Sprintf("127.0.0.%d", 100+i%50), senders(i))
				switch {
				case err != nil:
					errs[i] = err
				case code != 250:
					errs[i] = fmt.Errorf("%s via replica %d: RCPT %d", senders(i), i%3, code)
				case took > 3*time.Second:
					errs[i] = fmt.Errorf("%s via replica %d: %v, past the 2s budget", senders(i), i%3, took)
				}
			}()
		}
		wg.Wait()
		return errs
	}
	check := func(errs []error) {
		t.Helper()
		for _, err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
	}

	// 30 transactions from 10 never-seen senders over three MTAs at once.
	check(send(30, func(i int) string { return fmt.Sprintf("user@s%d.fleet.test", i%10) }))
	if n := probed.Count("RCPT"); n != 10 {
		t.Errorf("10 senders over a fleet of 3: %d RCPT probes, want 10", n)
	}

	// A restarted replica answers known senders from Redis.
	fleet[0].stop()
	startReplica(t, 0, redis.URL(), fleet[0])
	check(send(3, func(i int) string { return fmt.Sprintf("user@s%d.fleet.test", i) })) // i%3 == i: replica 0 gets s0
	if n := probed.Count("RCPT"); n != 10 {
		t.Errorf("after a replica restart: %d RCPT probes, want still 10", n)
	}

	// Redis dies: every message is still answered within the budget and
	// none refused; the replicas work alone.
	redis.Stop()
	check(send(6, func(i int) string { return fmt.Sprintf("user@s%d.fleet.test", 10+i%3) }))
	for i, r := range fleet {
		if v := metricAt(r.metrics, "senderguard_store_up"); v != 0 {
			t.Errorf("replica %d: senderguard_store_up %v during the outage", i, v)
		}
	}

	// Redis is back: sharing resumes without a restart.
	redis.Restart()
	deadline := time.Now().Add(5 * time.Second)
	for _, r := range fleet {
		for metricAt(r.metrics, "senderguard_store_up") != 1 && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
	}
	before := probed.Count("RCPT")
	check(send(1, func(int) string { return "late@s15.fleet.test" }))
	check(send(3, func(int) string { return "late@s15.fleet.test" }))
	if n := probed.Count("RCPT") - before; n != 1 {
		t.Errorf("after Redis came back: %d probes for one sender on three replicas, want 1", n)
	}
	for i, r := range fleet {
		if b, _ := os.ReadFile(r.log); strings.Count(string(b), "shared store unreachable") > 1 {
			t.Errorf("replica %d logged the outage more than once:\n%s", i, tail(string(b), 10))
		}
	}
}
