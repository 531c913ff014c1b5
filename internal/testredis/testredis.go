// Package testredis runs a real redis-server on loopback for tests: a
// private process on a free port, without persistence, stopped by PID.
package testredis

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// Server is one redis-server process.
type Server struct {
	Addr string
	Port int
	args []string
	dir  string
	cmd  *exec.Cmd
	t    testing.TB
	tls  []string // --tls-* arguments when the server speaks only TLS
}

// Start runs redis-server on a free loopback port with extra args
// ("--cluster-enabled", "yes", ...), stopped when t ends. It skips t when
// redis-server is not installed (scripts/deps.sh installs it).
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	return start(t, nil, args)
}

// StartTLS runs a server that speaks only TLS with the given certificate
// and key, and asks clients for certificates signed by caFile.
func StartTLS(t testing.TB, certFile, keyFile, caFile string, args ...string) *Server {
	t.Helper()
	return start(t, []string{"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-ca-cert-file", caFile, "--tls-auth-clients", "yes"}, args)
}

func start(t testing.TB, tlsArgs, args []string) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server not installed (scripts/deps.sh installs Debian's redis-server)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	s := &Server{Addr: fmt.Sprintf("127.0.0.1:%d", port), Port: port, args: args, dir: t.TempDir(), t: t, tls: tlsArgs}
	s.start()
	t.Cleanup(s.Stop)
	return s
}

func (s *Server) start() {
	s.t.Helper()
	ports := []string{"--port", strconv.Itoa(s.Port)}
	if s.tls != nil {
		ports = append([]string{"--port", "0", "--tls-port", strconv.Itoa(s.Port)}, s.tls...)
	}
	args := append(append(ports, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", s.dir, "--logfile", filepath.Join(s.dir, "redis.log")), s.args...)
	s.cmd = exec.Command("redis-server", args...)
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	for range 100 {
		if c, err := net.Dial("tcp", s.Addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
	s.t.Fatalf("redis-server on %s did not start:\n%s", s.Addr, log)
}

// Stop ends the process (SIGKILL, by PID) and waits for it.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	s.cmd.Wait()
	s.cmd = nil
}

// Restart starts the server again on the same port, empty.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}

// URL is the redis:// (or rediss://) URL of the server.
func (s *Server) URL() string {
	if s.tls != nil {
		return "rediss://" + s.Addr
	}
	return "redis://" + s.Addr
}
