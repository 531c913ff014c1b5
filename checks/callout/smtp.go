package callout

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/senderguard/senderguard/internal/safetext"

	"github.com/senderguard/senderguard/internal/smtpstatus"
)

// Bounds on what a remote server may send us.
const (
	maxReplyLine  = 2048 // RFC 5321 §4.5.3.1.5 says 512; be lenient, not unbounded
	maxReplyLines = 100
	maxReplyText  = 512 // of the joined text kept as evidence
)

var (
	errLineTooLong  = errors.New("reply line too long")
	errTooManyLines = errors.New("reply has too many lines")
	errMalformed    = errors.New("malformed reply")
)

// smtpConn is the client side of one probe dialogue.
type smtpConn struct {
	conn  net.Conn
	r     *bufio.Reader
	step  time.Duration
	trace func(string)
}

func newSMTPConn(c net.Conn, step time.Duration, trace func(string)) *smtpConn {
	return &smtpConn{conn: c, r: bufio.NewReaderSize(c, 4096), step: step, trace: trace}
}

func (c *smtpConn) tracef(format string, args ...any) {
	if c.trace != nil {
		c.trace(fmt.Sprintf(format, args...))
	}
}

// cmd writes one command line and reads the reply, within one step's
// deadline. line must already be validated: no CR, LF or NUL.
func (c *smtpConn) cmd(line string) (*Reply, []string, error) {
	if strings.ContainsAny(line, "\r\n\x00") {
		return nil, nil, fmt.Errorf("refusing to send a command with a line break")
	}
	c.conn.SetDeadline(time.Now().Add(c.step))
	c.tracef("C: %s", line)
	if _, err := io.WriteString(c.conn, line+"\r\n"); err != nil {
		return nil, nil, err
	}
	return c.reply()
}

// reply reads one possibly multi-line reply (RFC 5321 §4.2.1).
func (c *smtpConn) reply() (*Reply, []string, error) {
	if c.step > 0 {
		c.conn.SetReadDeadline(time.Now().Add(c.step))
	}
	var lines []string
	code := 0
	for {
		line, err := c.readLine()
		if err != nil {
			return nil, lines, err
		}
		c.tracef("S: %s", line)
		if len(line) < 3 {
			return nil, lines, errMalformed
		}
		n, err := strconv.Atoi(line[:3])
		if err != nil || n < 200 || n > 599 || (code != 0 && n != code) {
			return nil, lines, fmt.Errorf("%w: %q", errMalformed, bounded(line))
		}
		code = n
		more := len(line) > 3 && line[3] == '-'
		if len(line) > 3 && line[3] != '-' && line[3] != ' ' {
			return nil, lines, fmt.Errorf("%w: %q", errMalformed, bounded(line))
		}
		text := ""
		if len(line) > 4 {
			text = line[4:]
		}
		lines = append(lines, text)
		if !more {
			break
		}
		if len(lines) >= maxReplyLines {
			return nil, lines, errTooManyLines
		}
	}
	return newReply(code, strings.Join(lines, " ")), lines, nil
}

// newReply is the reply of code whose text (its lines joined by " ")
// may start with an enhanced status code (RFC 2034) of the code's class.
func newReply(code int, text string) *Reply {
	e, rest := smtpstatus.Leading(code, text)
	return &Reply{Code: code, Enhanced: e.String(), Text: bounded(rest)}
}

// readLine reads a CRLF (or LF) terminated line of at most maxReplyLine.
func (c *smtpConn) readLine() (string, error) {
	var buf []byte
	for {
		frag, err := c.r.ReadSlice('\n')
		if len(buf)+len(frag) > maxReplyLine {
			return "", errLineTooLong
		}
		buf = append(buf, frag...)
		if err == nil {
			return string(bytes.TrimRight(buf, "\r\n")), nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return "", err
		}
	}
}

func (c *smtpConn) close() { c.conn.Close() }

// quit says QUIT and reads the reply, within step and at most 2 s: the
// manners RFC 5321 §4.1.1.10 asks for after a refusal too.
func (c *smtpConn) quit(step time.Duration) {
	c.conn.SetDeadline(time.Now().Add(min(step, 2*time.Second)))
	c.cmd("QUIT")
}

// bounded keeps printable ASCII and cuts to maxReplyText: remote text goes
// into logs and headers.
func bounded(s string) string { return safetext.Printable(s, maxReplyText) }
