package callout

import (
	"bytes"
	"net"
	"strings"
	"testing"
	"time"
)

func FuzzParseAddress(f *testing.F) {
	for _, s := range []string{"a@b.test", "\"a b\"@b.test", "prvs=1234567890=a@b.test", "jösé@bücher.test", "a@b.test>\r\nRCPT TO:<x@y", "a\x00@b.test", "@", "a@[1.2.3.4]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAddress(s)
		if err != nil {
			return
		}
		// Whatever passes must be safe on an SMTP command line.
		out := a.String()
		if strings.ContainsAny(out, "\r\n\x00<>") && !strings.HasPrefix(a.Local, "\"") {
			t.Fatalf("%q passed as %q", s, out)
		}
		if strings.ContainsAny(out, "\r\n\x00") {
			t.Fatalf("%q passed with a line break: %q", s, out)
		}
		if _, err := ParseAddress(out); err != nil {
			t.Fatalf("%q -> %q no longer parses: %v", s, out, err)
		}
		CacheKey(a)
	})
}

// byteConn is a net.Conn that reads from a buffer and discards writes.
type byteConn struct{ r *bytes.Reader }

func (c byteConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c byteConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c byteConn) Close() error                     { return nil }
func (c byteConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c byteConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c byteConn) SetDeadline(time.Time) error      { return nil }
func (c byteConn) SetReadDeadline(time.Time) error  { return nil }
func (c byteConn) SetWriteDeadline(time.Time) error { return nil }

func FuzzReply(f *testing.F) {
	for _, s := range []string{"250 ok\r\n", "250-a\r\n250-b\r\n250 c\r\n", "550 5.1.1 <x>: unknown\r\n", "451-4.7.1 a\r\n452 b\r\n", "2", "999 x\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c := newSMTPConn(byteConn{bytes.NewReader(b)}, time.Second, nil)
		r, lines, err := c.reply()
		if err != nil {
			return
		}
		if r.Code < 200 || r.Code > 599 || len(lines) > maxReplyLines || len(r.Text) > maxReplyText {
			t.Fatalf("reply out of bounds: %+v, %d lines", r, len(lines))
		}
		for _, ch := range []byte(r.Text) {
			if ch < 0x20 || ch > 0x7e {
				t.Fatalf("unprintable evidence %q", r.Text)
			}
		}
	})
}
