// Package testsmtp is a scriptable SMTP server on a loopback address, for
// probing tests: well-behaved by default, and each awkward behaviour
// (greylisting, tarpits, dropped connections, endless replies) one hook
// away.
package testsmtp

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// Server answers SMTP on Addr. Hooks may be set before the first
// connection; counters are safe to read at any time.
type Server struct {
	Addr string

	// Banner is written on connect ("" means "220 test ESMTP"); BannerDelay
	// waits first. RawBanner, when set, is written verbatim instead.
	Banner      string
	BannerDelay time.Duration
	RawBanner   string
	// Users that exist; nil means every address exists (catch-all).
	Users map[string]bool
	// Reply overrides the reply to a command; return "" for the default.
	// Returning "DROP" closes the connection without a reply.
	Reply func(s *Server, cmd string) string

	// TLS, when set, makes EHLO announce STARTTLS and STARTTLS upgrade
	// the connection. RequireTLS refuses MAIL before it with 530.
	// StartTLSReply replaces the 220 (e.g. "454 4.7.0 TLS not available").
	// BreakHandshake answers 220 and then sends garbage instead of a
	// handshake. AfterTLS, when set, overrides replies once upgraded.
	TLS            *tls.Config
	RequireTLS     bool
	StartTLSReply  string
	BreakHandshake bool
	AfterTLS       func(cmd string) string

	ln    net.Listener
	mu    sync.Mutex
	conns int
	cmds  []string
	peers []string
	bytes int
	wg    sync.WaitGroup
}

// Start listens on ip at port (0: any) and stops when t ends.
func Start(t testing.TB, ip string, port int, configure func(*Server)) *Server {
	t.Helper()
	s := &Server{}
	if configure != nil {
		configure(s)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, fmt.Sprint(port)))
	if err != nil {
		t.Fatalf("testsmtp: %v", err)
	}
	s.ln, s.Addr = ln, ln.Addr().String()
	go s.serve()
	t.Cleanup(s.Close)
	return s
}

// Port is the listening port.
func (s *Server) Port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// Close stops accepting and waits for open connections.
func (s *Server) Close() {
	s.ln.Close()
	s.wg.Wait()
}

// Conns is the number of connections accepted.
func (s *Server) Conns() int { s.mu.Lock(); defer s.mu.Unlock(); return s.conns }

// Peers returns the remote address (IP:port) of each connection accepted.
func (s *Server) Peers() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.peers...)
}

// Bytes is the number of bytes clients sent.
func (s *Server) Bytes() int { s.mu.Lock(); defer s.mu.Unlock(); return s.bytes }

// Commands returns the command lines received, in order.
func (s *Server) Commands() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.cmds...)
}

// Count is how many received commands start with prefix (case-insensitive).
func (s *Server) Count(prefix string) int {
	n := 0
	for _, c := range s.Commands() {
		if strings.HasPrefix(strings.ToUpper(c), strings.ToUpper(prefix)) {
			n++
		}
	}
	return n
}

func (s *Server) serve() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns++
		s.peers = append(s.peers, c.RemoteAddr().String())
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handle(c)
		}()
	}
}

func (s *Server) handle(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if s.BannerDelay > 0 {
		// A tarpit: say nothing; stop early if the client gives up.
		c.SetReadDeadline(time.Now().Add(s.BannerDelay))
		if n, _ := c.Read(make([]byte, 1)); n == 0 {
			c.SetReadDeadline(time.Time{})
		}
		c.SetDeadline(time.Now().Add(30 * time.Second))
	}
	switch {
	case s.RawBanner != "":
		if _, err := c.Write([]byte(s.RawBanner)); err != nil {
			return
		}
	case s.Banner != "":
		fmt.Fprintf(c, "%s\r\n", s.Banner)
		if strings.HasPrefix(s.Banner, "421") {
			return
		}
		if !strings.HasPrefix(s.Banner, "220") {
			// RFC 5321 §3.1: after a 554 greeting the server waits for
			// QUIT and refuses everything else.
			s.refuseAll(c)
			return
		}
	default:
		fmt.Fprintf(c, "220 test ESMTP\r\n")
	}
	r := bufio.NewReader(c)
	upgraded := false
	for {
		line, err := r.ReadString('\n')
		s.mu.Lock()
		s.bytes += len(line)
		s.mu.Unlock()
		if err != nil {
			return
		}
		cmd := strings.TrimRight(line, "\r\n")
		s.mu.Lock()
		s.cmds = append(s.cmds, cmd)
		s.mu.Unlock()
		reply := ""
		if upgraded && s.AfterTLS != nil {
			reply = s.AfterTLS(cmd)
		}
		if reply == "" && s.Reply != nil {
			reply = s.Reply(s, cmd)
		}
		u := strings.ToUpper(cmd)
		switch {
		case reply != "":
		case s.TLS != nil && strings.HasPrefix(u, "EHLO") && !upgraded:
			reply = "250-test\n250-STARTTLS\n250 SMTPUTF8"
		case s.TLS != nil && u == "STARTTLS" && !upgraded:
			if s.StartTLSReply != "" {
				reply = s.StartTLSReply
				break
			}
			c.Write([]byte("220 2.0.0 Ready to start TLS\r\n"))
			if s.BreakHandshake {
				c.Write([]byte("this is not a TLS server hello\r\n"))
				return
			}
			tc := tls.Server(c, s.TLS)
			if err := tc.Handshake(); err != nil {
				return
			}
			c, r, upgraded = tc, bufio.NewReader(tc), true
			continue
		case s.RequireTLS && !upgraded && strings.HasPrefix(u, "MAIL FROM:"):
			reply = "530 5.7.0 Must issue a STARTTLS command first"
		}
		if reply == "" {
			reply = s.defaultReply(cmd)
		}
		if reply == "DROP" {
			return
		}
		if _, err := c.Write([]byte(strings.ReplaceAll(strings.TrimRight(reply, "\r\n"), "\n", "\r\n") + "\r\n")); err != nil {
			return
		}
		if strings.EqualFold(cmd, "QUIT") {
			return
		}
	}
}

func (s *Server) defaultReply(cmd string) string {
	u := strings.ToUpper(cmd)
	switch {
	case strings.HasPrefix(u, "EHLO"):
		return "250-test\n250-PIPELINING\n250 SMTPUTF8"
	case strings.HasPrefix(u, "HELO"):
		return "250 test"
	case strings.HasPrefix(u, "MAIL FROM:"):
		return "250 2.1.0 Ok"
	case strings.HasPrefix(u, "RCPT TO:"):
		addr := strings.TrimSuffix(strings.TrimPrefix(cmd[len("RCPT TO:"):], "<"), ">")
		if s.Users == nil || s.Users[strings.ToLower(addr)] {
			return "250 2.1.5 Ok"
		}
		return "550 5.1.1 <" + addr + ">: Recipient address rejected: User unknown"
	case u == "QUIT":
		return "221 2.0.0 Bye"
	case u == "RSET" || u == "NOOP":
		return "250 2.0.0 Ok"
	}
	return "502 5.5.2 Error: command not recognized"
}

// refuseAll answers 503 to every command until QUIT.
func (s *Server) refuseAll(c net.Conn) {
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.TrimRight(line, "\r\n")
		s.mu.Lock()
		s.bytes += len(line)
		s.cmds = append(s.cmds, cmd)
		s.mu.Unlock()
		if strings.EqualFold(cmd, "QUIT") {
			fmt.Fprintf(c, "221 2.0.0 Bye\r\n")
			return
		}
		fmt.Fprintf(c, "503 5.5.1 no SMTP service here\r\n")
	}
}
