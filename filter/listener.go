package filter

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/senderguard/senderguard/internal/quickack"
)

// maxPacket bounds one milter packet. The library would allocate what the
// length prefix announces (up to 512 MiB); the MTAs send headers one per
// packet (Postfix's header_size_limit is 100 KiB) and no body to us.
const maxPacket = 4 << 20

// drainWindow is how long a draining listener keeps accepting: long
// enough to take every connection already queued by the kernel.
const drainWindow = 100 * time.Millisecond

// listener wraps the milter listener: it counts and caps connections,
// retries temporary accept errors with backoff (as net/http does; a
// process out of descriptors must not exit), and drains on shutdown.
type listener struct {
	net.Listener
	f   *Filter
	max int

	mu       sync.Mutex
	conns    map[*conn]struct{}
	wg       sync.WaitGroup
	draining atomic.Bool
	lastLog  time.Time
}

func newListener(ln net.Listener, f *Filter, max int) *listener {
	return &listener{Listener: ln, f: f, max: max, conns: map[*conn]struct{}{}}
}

// temporaryAccept reports accept errors that pass: out of descriptors or
// buffers, a connection aborted before we took it.
func temporaryAccept(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EPROTO, syscall.EAGAIN} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (l *listener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if l.draining.Load() {
				return nil, net.ErrClosed // the drain window ended
			}
			if !temporaryAccept(err) {
				return nil, err
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			l.acceptError(err, delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		l.mu.Lock()
		over := len(l.conns) >= l.max
		var mc *conn
		if !over {
			// The MTA streams the commands we do not answer
			// (wantProtocol): ACK at once, or its Nagle waits 40 ms.
			mc = &conn{Conn: c, l: l, br: bufio.NewReaderSize(quickack.Wrap(c), 4096)}
			l.conns[mc] = struct{}{}
			l.wg.Add(1)
		}
		l.mu.Unlock()
		if over {
			c.Close()
			l.refused()
			continue
		}
		l.f.deps.Metrics.ActiveSessions.Inc()
		return mc, nil
	}
}

func (l *listener) acceptError(err error, delay time.Duration) {
	l.f.deps.Metrics.MilterErrors.WithLabelValues("accept").Inc()
	if l.logNow() {
		l.f.deps.Log.Error("milter accept failed; retrying", "err", err, "retry_in", delay)
	}
}

func (l *listener) refused() {
	l.f.deps.Metrics.MilterErrors.WithLabelValues("connection_limit").Inc()
	if l.logNow() {
		l.f.deps.Log.Warn("milter connection limit reached; closing new connections (the MTA applies its default action)", "max_connections", l.max)
	}
}

// logNow allows one log line a second for a flood of the same trouble.
func (l *listener) logNow() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if time.Since(l.lastLog) < time.Second {
		return false
	}
	l.lastLog = time.Now()
	return true
}

// drain lets Accept take what the kernel already queued for a short
// window, then end; the listener itself is closed after the accept loop.
func (l *listener) drain() {
	l.draining.Store(true)
	if d, ok := l.Listener.(interface{ SetDeadline(time.Time) error }); ok && d.SetDeadline(time.Now().Add(drainWindow)) == nil {
		return
	}
	l.Listener.Close()
}

func (l *listener) closeAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for c := range l.conns {
		c.Conn.Close()
	}
}

// conn is one MTA connection: buffered reads (the library reads a
// packet's length and body separately) and the packet size bound.
type conn struct {
	net.Conn
	l         *listener
	br        *bufio.Reader
	closeOnce sync.Once

	hdr  [4]byte // length prefix being read
	hdrN int
	left int // bytes of the current packet still to come

	out outPackets // what the library writes, sent a reply at a time
}

// errPacketTooLarge ends a connection whose MTA announces a packet larger
// than any an MTA sends.
var errPacketTooLarge = fmt.Errorf("milter packet larger than %d bytes", maxPacket)

// errPacketEmpty ends a connection that sends a packet without even a
// command byte.
var errPacketEmpty = errors.New("empty milter packet")

func (c *conn) Read(p []byte) (int, error) {
	n, err := c.br.Read(p)
	if gerr := c.follow(p[:n]); gerr != nil {
		return 0, gerr
	}
	return n, err
}

// follow walks the packet stream and fails on an oversized length prefix,
// before the library allocates it.
func (c *conn) follow(b []byte) error {
	for len(b) > 0 {
		if c.left == 0 {
			k := copy(c.hdr[c.hdrN:], b)
			c.hdrN += k
			b = b[k:]
			if c.hdrN == 4 {
				c.hdrN = 0
				length := binary.BigEndian.Uint32(c.hdr[:])
				if length > maxPacket {
					return errPacketTooLarge
				}
				if length == 0 {
					// go-milter v0.10.1 indexes the command byte of
					// every packet: an empty one would panic the process.
					return errPacketEmpty
				}
				c.left = int(length)
			}
			continue
		}
		k := min(len(b), c.left)
		c.left -= k
		b = b[k:]
	}
	return nil
}

// Write sends the library's packets a reply at a time. go-milter writes
// each packet in two calls (its header, then its data) and each
// modification before the final answer as a packet of its own: with
// TCP_NODELAY every call was a TCP segment the MTA had to read. Packets
// are held until one that ends the reply (anything but a modification)
// is complete, then sent in one write.
func (c *conn) Write(p []byte) (int, error) {
	if c.out.add(p) {
		return len(p), nil
	}
	_, err := c.Conn.Write(c.out.buf)
	c.out.reset()
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// outPackets follows the packets written to a connection; buf holds those
// not sent yet.
type outPackets struct {
	buf  []byte
	hdrN int // bytes of the current packet's 5-byte header seen
	hdr  [5]byte
	left int // data bytes of the current packet still to come
}

// maxHeld bounds what is held back (a reply that inserts many header
// fields is sent in parts).
const maxHeld = 64 << 10

// add takes p and reports whether it may wait: the packets in buf so far
// end with an incomplete packet or a modification.
func (o *outPackets) add(p []byte) (hold bool) {
	if o.buf == nil {
		o.buf = make([]byte, 0, 512) // a reply with header insertions fits
	}
	o.buf = append(o.buf, p...)
	final := false
	for len(p) > 0 {
		if o.left == 0 && o.hdrN < len(o.hdr) {
			k := copy(o.hdr[o.hdrN:], p)
			o.hdrN += k
			p = p[k:]
			if o.hdrN < len(o.hdr) {
				break
			}
			o.left = int(binary.BigEndian.Uint32(o.hdr[:4])) - 1
			if o.left < 0 {
				o.left = 0 // not a packet go-milter writes: send it as it is
			}
		} else {
			k := min(len(p), o.left)
			o.left -= k
			p = p[k:]
		}
		if o.hdrN == len(o.hdr) && o.left == 0 {
			final = !isModification(o.hdr[4])
			o.hdrN = 0
		}
	}
	return !final && len(o.buf) < maxHeld
}

func (o *outPackets) reset() {
	if cap(o.buf) > maxHeld {
		o.buf = nil
		return
	}
	o.buf = o.buf[:0]
}

// isModification reports the milter reply codes that precede the final
// answer at end of message (SMFIR_ADDRCPT ... SMFIR_ADDRCPT_PAR).
func isModification(code byte) bool {
	switch code {
	case '+', '-', '2', 'b', 'e', 'h', 'i', 'm', 'q':
		return true
	}
	return false
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		l := c.l
		l.mu.Lock()
		delete(l.conns, c)
		l.mu.Unlock()
		l.f.deps.Metrics.ActiveSessions.Dec()
		l.wg.Done()
	})
	return err
}
