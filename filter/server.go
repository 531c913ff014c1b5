package filter

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"sync"

	"github.com/emersion/go-milter"
)

// Server runs the milter protocol on a listener with go-milter and adds
// what go-milter lacks: a graceful drain, session accounting, and the
// ESMTP arguments of MAIL FROM (go-milter passes only the address).
type Server struct {
	f  *Filter
	ms *milter.Server
	mu sync.Mutex
	ln *trackingListener
}

// NewServer prepares a milter server for f.
func NewServer(f *Filter) *Server {
	s := &Server{f: f}
	s.ms = &milter.Server{
		NewMilter: s.newSession,
		Actions:   milter.OptAddHeader | milter.OptChangeHeader,
		Protocol:  milter.OptNoBody,
	}
	return s
}

// newSession is called by go-milter's accept loop right after Accept
// returned, in the same goroutine, so the connection just accepted is the
// one this session serves.
func (s *Server) newSession() milter.Milter {
	sess := &session{f: s.f}
	s.mu.Lock()
	ln := s.ln
	s.mu.Unlock()
	if ln != nil {
		if c := ln.last; c != nil {
			ln.last = nil
			sess.mailArgs = c.mailArgs
			c.onClose = sess.closed
		}
	}
	return sess
}

// Serve accepts milter connections on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	tl := &trackingListener{Listener: ln, conns: map[*sniffConn]struct{}{}, f: s.f}
	s.mu.Lock()
	s.ln = tl
	s.mu.Unlock()
	err := s.ms.Serve(tl)
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting, waits for open sessions to end until ctx is
// done, then closes the rest.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	ln := s.ln
	s.mu.Unlock()
	if ln == nil {
		return nil
	}
	// Not milter.Server.Close: it writes a flag Serve reads without a lock.
	ln.Listener.Close()
	done := make(chan struct{})
	go func() { ln.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		ln.closeAll()
		<-done
		return ctx.Err()
	}
}

type trackingListener struct {
	net.Listener
	f     *Filter
	last  *sniffConn // handed to newSession by the accept goroutine
	mu    sync.Mutex
	conns map[*sniffConn]struct{}
	wg    sync.WaitGroup
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	sc := &sniffConn{Conn: c, l: l, br: bufio.NewReaderSize(c, 8192)}
	l.mu.Lock()
	l.conns[sc] = struct{}{}
	l.mu.Unlock()
	l.wg.Add(1)
	if m := l.f.deps.Metrics; m != nil {
		m.ActiveSessions.Inc()
	}
	l.last = sc
	return sc, nil
}

func (l *trackingListener) closeAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for c := range l.conns {
		c.Conn.Close()
	}
}

// sniffConn follows the milter packet stream it reads and keeps the ESMTP
// arguments of the last SMFIC_MAIL packet.
type sniffConn struct {
	net.Conn
	l         *trackingListener
	closeOnce sync.Once
	onClose   func() // the session's last word; runs in its goroutine
	// br halves the read system calls: go-milter reads each packet's
	// length and body with separate unbuffered reads.
	br *bufio.Reader

	hdr     [5]byte // length (4) and command (1)
	hdrN    int
	left    int    // payload bytes still to come
	mail    []byte // payload of an 'M' packet being read
	inMail  bool
	lastArg []string
}

const maxSniff = 64 << 10

func (c *sniffConn) Read(p []byte) (int, error) {
	n, err := c.br.Read(p)
	c.follow(p[:n])
	return n, err
}

func (c *sniffConn) follow(b []byte) {
	for len(b) > 0 {
		if c.left == 0 && c.hdrN < 5 {
			k := copy(c.hdr[c.hdrN:], b)
			c.hdrN += k
			b = b[k:]
			if c.hdrN == 5 {
				length := int(binary.BigEndian.Uint32(c.hdr[:4]))
				c.left = length - 1
				c.inMail = c.hdr[4] == byte(milter.CodeMail) && length <= maxSniff
				c.mail = c.mail[:0]
				if c.left <= 0 {
					c.left, c.hdrN = 0, 0
				}
			}
			continue
		}
		k := min(len(b), c.left)
		if c.inMail {
			c.mail = append(c.mail, b[:k]...)
		}
		c.left -= k
		b = b[k:]
		if c.left == 0 {
			c.hdrN = 0
			if c.inMail {
				c.lastArg = mailArgs(c.mail)
			}
		}
	}
}

// mailArgs splits an SMFIC_MAIL payload: NUL-terminated sender, then args.
func mailArgs(payload []byte) []string {
	parts := strings.Split(strings.TrimRight(string(payload), "\x00"), "\x00")
	if len(parts) <= 1 {
		return nil
	}
	return parts[1:]
}

func (c *sniffConn) mailArgs() []string { return c.lastArg }

func (c *sniffConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		if c.onClose != nil {
			c.onClose()
		}
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
		if m := c.l.f.deps.Metrics; m != nil {
			m.ActiveSessions.Dec()
		}
		c.l.wg.Done()
	})
	return err
}

// LibraryLog is where go-milter's log.Printf lines go: each is counted
// as a milter protocol error and logged through slog.
type LibraryLog struct{ f *Filter }

// LibraryLog returns an io.Writer for log.SetOutput.
func (f *Filter) LibraryLog() *LibraryLog { return &LibraryLog{f: f} }

func (w *LibraryLog) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	kind := "other"
	switch {
	case strings.Contains(line, "Error reading milter command"):
		kind = "read"
	case strings.Contains(line, "Error performing milter command"):
		kind = "command"
	case strings.Contains(line, "Error writing packet"):
		kind = "write"
	case strings.Contains(line, "panic"):
		kind = "panic"
	case strings.Contains(line, "Unrecognized command"):
		kind = "unknown_command"
	}
	if m := w.f.deps.Metrics; m != nil {
		m.MilterErrors.WithLabelValues(kind).Inc()
	}
	w.f.deps.Log.Warn("milter protocol error", "kind", kind, "detail", line)
	return len(p), nil
}
