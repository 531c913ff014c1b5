// Package quickack turns off delayed ACKs on a TCP connection we read
// from, where the peer's Nagle algorithm would otherwise wait for them.
package quickack

import (
	"net"
	"syscall"
)

// Wrap makes the kernel acknowledge at once what c receives. A peer that
// writes twice without reading in between meets Nagle's algorithm: its
// second write waits for the ACK our side delays by 40 ms. Postfix after
// STARTTLS sends its TLS 1.3 session ticket, then the EHLO reply (a
// STARTTLS probe took 48 ms instead of 6); an MTA streaming milter
// commands that need no reply does the same. TCP_QUICKACK does not stick,
// so it is set before every read.
func Wrap(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	return &quickAckConn{Conn: c, raw: raw}
}

type quickAckConn struct {
	net.Conn
	raw syscall.RawConn
}

func (c *quickAckConn) Read(p []byte) (int, error) {
	c.raw.Control(func(fd uintptr) {
		syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
	})
	return c.Conn.Read(p)
}
