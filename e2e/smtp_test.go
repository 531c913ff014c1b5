//go:build e2e

package e2e

import (
	"fmt"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// client is a plain SMTP client that records every reply.
type client struct {
	t  testing.TB
	tc *textproto.Conn
}

type reply struct {
	Code int
	Text string
}

func (r reply) String() string { return fmt.Sprintf("%d %s", r.Code, r.Text) }

// dial connects to an MTA from localIP (a 127.0.0.x address, so each test
// has its own client IP) and reads the banner.
func dial(t testing.TB, addr, localIP string) *client {
	t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second}
	if localIP != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(localIP)}
	}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	c := &client{t: t, tc: textproto.NewConn(conn)}
	t.Cleanup(func() { c.tc.Close() })
	if r := c.read(); r.Code != 220 {
		t.Fatalf("banner: %v", r)
	}
	return c
}

func (c *client) read() reply {
	code, msg, err := c.tc.ReadResponse(0)
	if err != nil && code == 0 {
		c.t.Fatalf("read reply: %v", err)
	}
	return reply{code, strings.ReplaceAll(msg, "\n", " ")}
}

func (c *client) cmd(format string, args ...any) reply {
	c.t.Helper()
	if err := c.tc.PrintfLine(format, args...); err != nil {
		c.t.Fatalf("send: %v", err)
	}
	return c.read()
}

// expect sends a command and fails the test unless the reply code matches.
func (c *client) expect(code int, format string, args ...any) reply {
	c.t.Helper()
	r := c.cmd(format, args...)
	if r.Code != code {
		c.t.Fatalf("%s: got %v, want %d", fmt.Sprintf(format, args...), r, code)
	}
	return r
}

// data sends a message with the given extra header lines and a unique
// Subject token, and returns the final reply.
func (c *client) data(token string, headers ...string) reply {
	c.t.Helper()
	c.expect(354, "DATA")
	w := c.tc.DotWriter()
	for _, h := range headers {
		fmt.Fprintf(w, "%s\r\n", h)
	}
	fmt.Fprintf(w, "From: someone@sender.test\r\nTo: u@example.test\r\nSubject: %s\r\nMessage-ID: <%s@e2e.test>\r\n\r\nbody of %s\r\n", token, token, token)
	w.Close()
	return c.read()
}

// deliver sends one message that must be accepted and returns its token.
func (c *client) deliver(t testing.TB, sender, rcpt string) string {
	t.Helper()
	c.expect(250, "MAIL FROM:<%s>", sender)
	c.expect(250, "RCPT TO:<%s>", rcpt)
	tok := token(t)
	if r := c.data(tok); r.Code != 250 {
		t.Fatalf("end of data: %v", r)
	}
	return tok
}

func (c *client) quit() { c.tc.PrintfLine("QUIT"); c.tc.ReadResponse(0) }

// delivered waits for the message with token to reach the MTA's store and
// returns its header block.
func delivered(t testing.TB, mta *mtaInstance, token string) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if h := findStored(mta, token); h != "" {
			return h
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: message %s not delivered", mta.name, token)
	return ""
}

func findStored(mta *mtaInstance, token string) string {
	var pattern string
	if mta.name == "postfix" {
		pattern = filepath.Join(mta.dir, "postfix/mail/inbox/new/*")
	} else {
		pattern = filepath.Join(mta.dir, "sendmail/queue/qf*")
	}
	files, _ := filepath.Glob(pattern)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil || !strings.Contains(string(b), "Subject: "+token) {
			continue
		}
		s := string(b)
		if mta.name == "postfix" {
			head, _, _ := strings.Cut(s, "\n\n")
			return head
		}
		// Sendmail qf: header lines start with "H" (H??Name: value).
		var hs []string
		for _, l := range strings.Split(s, "\n") {
			if strings.HasPrefix(l, "H") {
				l = strings.TrimPrefix(l, "H")
				if strings.HasPrefix(l, "?") {
					if i := strings.Index(l[1:], "?"); i >= 0 {
						l = l[i+2:]
					}
				}
				hs = append(hs, l)
			} else if strings.HasPrefix(l, "\t") && len(hs) > 0 {
				hs[len(hs)-1] += "\n" + l
			}
		}
		return strings.Join(hs, "\n")
	}
	return ""
}

// headerLines returns the header block as unfolded lines.
func headerLines(block string) []string {
	var out []string
	for _, l := range strings.Split(block, "\n") {
		if (strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t")) && len(out) > 0 {
			out[len(out)-1] += " " + strings.TrimSpace(l)
			continue
		}
		out = append(out, l)
	}
	return out
}

func headerValues(block, name string) []string {
	var vs []string
	for _, l := range headerLines(block) {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(k, name) {
			vs = append(vs, strings.TrimSpace(v))
		}
	}
	return vs
}
