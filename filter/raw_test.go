package filter_test

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"
)

// rawMilter writes milter packets by hand, for what no MTA library sends
// on purpose: a second connect, junk, silence.
type rawMilter struct {
	t *testing.T
	c net.Conn
}

// dialRaw connects and negotiates protocol 6 with no protocol options, so
// the filter answers every stage.
func dialRaw(t *testing.T, addr string) *rawMilter {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := &rawMilter{t: t, c: c}
	neg := binary.BigEndian.AppendUint32(nil, 6)
	neg = binary.BigEndian.AppendUint32(neg, 0x1ff) // every action
	neg = binary.BigEndian.AppendUint32(neg, 0)
	r.send('O', string(neg))
	r.expect('O')
	return r
}

func (r *rawMilter) send(code byte, payload string) {
	r.t.Helper()
	b := binary.BigEndian.AppendUint32(nil, uint32(len(payload)+1))
	b = append(append(b, code), payload...)
	if _, err := r.c.Write(b); err != nil {
		r.t.Fatal(err)
	}
}

// expect reads one packet and checks its code; it returns the payload
// without a trailing NUL.
func (r *rawMilter) expect(code byte) string {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var hdr [5]byte
	if _, err := io.ReadFull(r.c, hdr[:]); err != nil {
		r.t.Fatalf("waiting for %c: %v", code, err)
	}
	body := make([]byte, binary.BigEndian.Uint32(hdr[:4])-1)
	if _, err := io.ReadFull(r.c, body); err != nil {
		r.t.Fatal(err)
	}
	if hdr[4] != code {
		r.t.Fatalf("got packet %c %q, want %c", hdr[4], body, code)
	}
	if n := len(body); n > 0 && body[n-1] == 0 {
		body = body[:n-1]
	}
	return string(body)
}

// tryNegotiate is the negotiation without failing the test: for checks
// that poll.
func (r *rawMilter) tryNegotiate() bool {
	neg := binary.BigEndian.AppendUint32(nil, 6)
	neg = binary.BigEndian.AppendUint32(neg, 0x1ff)
	neg = binary.BigEndian.AppendUint32(neg, 0)
	return r.trySend('O', string(neg)) && r.tryExpect('O')
}

// tryConversation runs connect, HELO, MAIL and RCPT of a pass sender and
// reports whether each was answered with continue.
func (r *rawMilter) tryConversation() bool {
	for _, p := range []struct {
		code    byte
		payload string
	}{{'C', "client.test\x004\x00\x19192.0.2.10\x00"}, {'H', "client.test\x00"}, {'M', "<a@pass.test>\x00"}, {'R', "<u@example.test>\x00"}} {
		if !r.trySend(p.code, p.payload) || !r.tryExpect('c') {
			return false
		}
	}
	return true
}

func (r *rawMilter) trySend(code byte, payload string) bool {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(payload)+1))
	_, err := r.c.Write(append(append(b, code), payload...))
	return err == nil
}

func (r *rawMilter) tryExpect(code byte) bool {
	r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var hdr [5]byte
	if _, err := io.ReadFull(r.c, hdr[:]); err != nil {
		return false
	}
	n := binary.BigEndian.Uint32(hdr[:4])
	if n == 0 || n > 1<<16 {
		return false
	}
	if _, err := io.ReadFull(r.c, make([]byte, n-1)); err != nil {
		return false
	}
	return hdr[4] == code
}

// drain reads packets until accept ('a') or an error and returns their
// codes.
func (r *rawMilter) drain() string {
	br := bufio.NewReader(r.c)
	var codes []byte
	for {
		r.c.SetReadDeadline(time.Now().Add(30 * time.Second))
		var hdr [5]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return string(codes)
		}
		if _, err := br.Discard(int(binary.BigEndian.Uint32(hdr[:4])) - 1); err != nil {
			return string(codes)
		}
		codes = append(codes, hdr[4])
		if hdr[4] == 'a' {
			return string(codes)
		}
	}
}
