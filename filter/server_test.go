package filter_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/d--j/go-milter"

	"github.com/senderguard/senderguard/checks/resolver"
	"github.com/senderguard/senderguard/checks/spf"
	"github.com/senderguard/senderguard/config"
	"github.com/senderguard/senderguard/filter"
	"github.com/senderguard/senderguard/internal/testdns"
)

// serve runs a filter server with opts on ln until the test ends.
func serve(t *testing.T, ln net.Listener, opts filter.ServerOptions) (*filter.Server, *logBuf) {
	t.Helper()
	dns := testdns.Start(t, zone...)
	cfg := config.Default()
	cfg.Hostname, cfg.Callout.Enabled = "mx.test", false
	log := &logBuf{}
	f := filter.New(cfg, filter.Deps{SPF: &spf.Checker{Resolver: &resolver.Stub{Servers: []string{dns.Addr}, Timeout: time.Second}, Receiver: "mx.test"},
		Log: slog.New(slog.NewTextHandler(log, nil))})
	srv := filter.NewServer(f, opts)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return srv, log
}

// flakyListener fails its first accepts the way a process out of file
// descriptors does.
type flakyListener struct {
	net.Listener
	fails atomic.Int32
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
	return l.Listener.Accept()
}

func TestAcceptOutOfDescriptorsBacksOffAndRecovers(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := &flakyListener{Listener: ln}
	fl.fails.Store(5)
	_, log := serve(t, fl, filter.ServerOptions{})
	c := newClient("tcp", ln.Addr().String())
	s, err := c.Session(nil)
	if err != nil {
		t.Fatalf("no session after EMFILE: %v", err)
	}
	defer s.Close()
	a, err := s.Conn("client.test", milter.FamilyInet, 1, "192.0.2.10")
	if err != nil || a.Type != milter.ActionContinue {
		t.Fatalf("connect: %v %v", a, err)
	}
	if !strings.Contains(log.String(), "milter accept failed; retrying") {
		t.Errorf("EMFILE not logged:\n%s", log)
	}
}

func TestConnectionCapClosesTheExtraAtOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serve(t, ln, filter.ServerOptions{MaxConnections: 3})
	addr := ln.Addr().String()
	var open []*rawMilter
	for range 3 {
		open = append(open, dialRaw(t, addr)) // negotiated: held by the server
	}
	extra, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	extra.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := extra.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("connection over the cap: read %v, want it closed at once", err)
	}
	open[0].c.Close()
	served := false
	waitFor(t, func() bool {
		if served {
			return true // each try holds a slot until the server sees it closed
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return false
		}
		defer c.Close()
		r := &rawMilter{t: t, c: c}
		served = r.tryNegotiate()
		return served
	}, "no connection accepted after one closed")
}

// isTimeout tells a read that timed out (the server kept the
// connection) from one the server ended.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestIdleConnectionIsClosed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serve(t, ln, filter.ServerOptions{IdleTimeout: 300 * time.Millisecond})
	r := dialRaw(t, ln.Addr().String())
	start := time.Now()
	r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = r.c.Read(make([]byte, 1))
	if err == nil || time.Since(start) > 3*time.Second {
		t.Fatalf("idle connection: read %v after %v, want closed after 300ms", err, time.Since(start))
	}
}

// TestShutdownServesQueuedConnections: connections the kernel accepted
// before SIGTERM are served to the end, not reset.
func TestShutdownServesQueuedConnections(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gl := &gatedListener{TCPListener: ln.(*net.TCPListener), gate: make(chan struct{})}
	gl.pass.Store(1)
	srv, _ := serve(t, gl, filter.ServerOptions{})
	addr := ln.Addr().String()
	dialRaw(t, addr) // Serve is running and now waits at the gate
	const n = 30
	conns := make([]net.Conn, n)
	for i := range conns {
		if conns[i], err = net.Dial("tcp", addr); err != nil {
			t.Fatal(err)
		}
		defer conns[i].Close()
	}
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shut <- srv.Shutdown(ctx)
	}()
	time.Sleep(20 * time.Millisecond) // Shutdown has begun; the kernel holds n connections
	close(gl.gate)
	var wg sync.WaitGroup
	var failed atomic.Int32
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &rawMilter{t: t, c: c}
			if !r.tryNegotiate() || !r.tryConversation() {
				failed.Add(1)
			}
			c.Close()
		}()
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		t.Errorf("%d of %d connections queued at shutdown were not served", f, n)
	}
	// The first connection is still open: Shutdown waits for it.
	select {
	case err := <-shut:
		t.Errorf("Shutdown returned %v with a session open", err)
	default:
	}
}

// gatedListener holds Accept until its gate opens, so that connections
// wait in the kernel's queue as they do under load.
type gatedListener struct {
	*net.TCPListener
	gate chan struct{}
	pass atomic.Int32 // accepts let through before the gate is used
}

func (l *gatedListener) Accept() (net.Conn, error) {
	if l.pass.Add(-1) < 0 {
		<-l.gate
	}
	return l.TCPListener.Accept()
}

// TestHeaderFloodMemoryIsBounded: ten concurrent messages of 200,000 short
// header fields each (pipelined, as fast as the filter answers); the
// filter keeps nothing of them. The test command runs it without the race
// detector, whose shadow memory would dominate the measure.
func TestHeaderFloodMemoryIsBounded(t *testing.T) {
	if raceEnabled {
		t.Skip("measures heap; run without -race (scripts/test.sh does)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serve(t, ln, filter.ServerOptions{})
	const messages, fields = 10, 200000
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	var wg sync.WaitGroup
	for i := range messages {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := dialRaw(t, ln.Addr().String())
			replies := make(chan string, 1)
			go func() { replies <- r.drain() }()
			w := bufio.NewWriterSize(r.c, 64<<10)
			put := func(code byte, payload string) {
				w.Write(binary.BigEndian.AppendUint32(nil, uint32(len(payload)+1)))
				w.WriteByte(code)
				w.WriteString(payload)
			}
			put('C', "client.test\x004\x00\x19192.0.2.10\x00")
			put('H', "client.test\x00")
			put('M', fmt.Sprintf("<m%d@pass.test>\x00", i))
			put('R', "<u@example.test>\x00")
			put('T', "")
			for j := range fields {
				put('L', fmt.Sprintf("X-Flood\x00%d\x00", j))
			}
			put('N', "")
			put('E', "")
			if err := w.Flush(); err != nil {
				t.Error(err)
				return
			}
			// 5 stages, the fields, end of headers: continue each; then our
			// two header insertions and accept.
			if got, want := <-replies, strings.Repeat("c", 5+fields+1)+"iia"; got != want {
				t.Errorf("message %d: %d replies ending %q, want %d ending %q", i, len(got), got[max(len(got)-4, 0):], len(want), want[len(want)-4:])
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-sampled
	t.Logf("peak heap in use: %.1f MiB", float64(peak.Load())/(1<<20))
	if p := peak.Load(); p > 64<<20 {
		t.Errorf("peak heap %d MiB with ten 200k-field messages, want < 64 MiB", p>>20)
	}
}

// TestMalformedConnectsUnderLoad: sessions that end in protocol errors
// beside well-formed ones; run with -race (the test command does). Each
// message must keep its own ESMTP arguments: with go-milter v0.5.0 a
// session could take another connection's.
func TestMalformedConnectsUnderLoad(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, log := serve(t, ln, filter.ServerOptions{})
	addr := ln.Addr().String()
	client := newClient("tcp", addr)
	const workers, rounds = 4, 50
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(2)
		go func() { // well-formed
			defer wg.Done()
			for i := range rounds {
				s, err := client.Session(nil)
				if err != nil {
					t.Error(err)
					return
				}
				sender := fmt.Sprintf("w%d-%d@pass.test", w, i)
				s.Conn("client.test", milter.FamilyInet, 1, "192.0.2.10")
				s.Helo("client.test")
				s.Mail(sender, "ENVID="+sender)
				s.Rcpt("u@example.test", "")
				s.Close()
			}
		}()
		go func() { // malformed connects: bad family, truncated, bad address
			defer wg.Done()
			for i := range rounds {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Error(err)
					return
				}
				r := &rawMilter{t: t, c: c}
				if r.tryNegotiate() {
					r.trySend('C', []string{"h\x00Z\x00", "h\x004", "h\x004\x00\x19not-an-ip\x00"}[i%3])
					r.tryExpect('c')
				}
				c.Close()
			}
		}()
	}
	wg.Wait()
	want := workers * rounds
	waitFor(t, func() bool { return strings.Count(log.String(), "msg=decision") >= want }, "decision lines")
	for _, l := range strings.Split(log.String(), "\n") {
		if !strings.Contains(l, "msg=decision") {
			continue
		}
		var sender, args string
		for _, f := range strings.Fields(l) {
			if v, ok := strings.CutPrefix(f, "sender="); ok {
				sender = v
			}
			if v, ok := strings.CutPrefix(f, `esmtp_args="ENVID=`); ok {
				args = strings.TrimSuffix(v, `"`)
			}
		}
		if sender != args {
			t.Errorf("message of %s carries the arguments of %s: %s", sender, args, l)
		}
	}
}

// TestHelperLowDescriptorServer is not a test: it is the server process of
// TestOutOfDescriptorsRealProcess, run with 40 file descriptors.
func TestHelperLowDescriptorServer(t *testing.T) {
	if os.Getenv("SENDERGUARD_LOW_FD_CHILD") == "" {
		t.Skip("helper process of TestOutOfDescriptorsRealProcess")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, log := serve(t, ln, filter.ServerOptions{})
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: 40, Max: 40}); err != nil {
		t.Fatal(err)
	}
	fmt.Println("listening", ln.Addr())
	io.Copy(io.Discard, os.Stdin) // until the parent is done
	fmt.Println("log:", log.String())
}

// TestOutOfDescriptorsRealProcess: a server out of file descriptors keeps
// running and serves again once descriptors are free.
func TestOutOfDescriptorsRealProcess(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run", "^TestHelperLowDescriptorServer$", "-test.v")
	cmd.Env = append(os.Environ(), "SENDERGUARD_LOW_FD_CHILD=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	out := bufio.NewReader(stdout)
	var addr string
	for addr == "" {
		line, err := out.ReadString('\n')
		if err != nil {
			t.Fatalf("helper: %v", err)
		}
		addr, _ = strings.CutPrefix(strings.TrimSpace(line), "listening ")
		if addr == strings.TrimSpace(line) {
			addr = ""
		}
	}
	var rest strings.Builder
	copied := make(chan struct{})
	go func() { io.Copy(&rest, out); close(copied) }()
	// More connections than the process has descriptors.
	var conns []net.Conn
	for range 60 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	time.Sleep(time.Second)
	for _, c := range conns {
		c.Close()
	}
	served := false
	waitFor(t, func() bool {
		if served {
			return true
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return false
		}
		defer c.Close()
		r := &rawMilter{t: t, c: c}
		served = r.tryNegotiate() && r.tryConversation()
		return served
	}, "no session served after descriptors were freed")
	stdin.Close()
	err = cmd.Wait()
	<-copied
	if err != nil {
		t.Fatalf("server process ended with %v:\n%s", err, rest.String())
	}
	if !strings.Contains(rest.String(), "milter accept failed; retrying") || !strings.Contains(rest.String(), "too many open files") {
		t.Errorf("EMFILE not seen or not logged:\n%s", rest.String())
	}
}
