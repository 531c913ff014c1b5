package filter_test

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/senderguard/senderguard/config"
)

// The milter command codes an MTA may send (libmilter's SMFIC_*), and a
// few that no MTA sends. The fuzzer picks among them by index so that
// every code is reached quickly; a code byte ≥ 0x80 in the input is sent
// as it is.
var wireCodes = []byte("ABCDEHKLMNOQRTU" + "\x00Zz\xff")

// wireStream turns fuzzer input into milter packets after a valid
// negotiation. The input is read as frames: a code selector, a length
// byte, then that many bytes of command data (fewer at the end of the
// input: the packet then announces more than follows, a truncated
// packet). A selector of 0xfe sends the rest of the input raw, so that
// length prefixes themselves are fuzzed too.
func wireStream(in []byte) []byte {
	var out []byte
	for len(in) >= 2 {
		sel, n := in[0], int(in[1])
		in = in[2:]
		if sel == 0xfe {
			return append(out, in...)
		}
		code := sel
		if sel < 0x80 {
			code = wireCodes[int(sel)%len(wireCodes)]
		}
		data := in[:min(n, len(in))]
		in = in[len(data):]
		out = binary.BigEndian.AppendUint32(out, uint32(n+1))
		out = append(out, code)
		out = append(out, data...)
	}
	return out
}

// negotiation is what Postfix 3.7 sends first: protocol 6, every action,
// every protocol step offered.
func negotiation() []byte {
	b := binary.BigEndian.AppendUint32(nil, 13)
	b = append(b, 'O')
	b = binary.BigEndian.AppendUint32(b, 6)
	b = binary.BigEndian.AppendUint32(b, 0x1ff)
	return binary.BigEndian.AppendUint32(b, 0x1fffff)
}

// frame builds one fuzzer frame: the selector of code c, then data.
func frame(c byte, data string) []byte {
	for i, w := range wireCodes {
		if w == c {
			return append([]byte{byte(i), byte(len(data))}, data...)
		}
	}
	panic("no such code")
}

// FuzzMilterWire drives the real milter server over a real loopback
// connection with a valid negotiation followed by fuzzer-chosen packets:
// any command code, truncated, oversized and empty data, strings without
// their NUL, odd macro lists, commands out of order. The process must
// not crash (a panic in the library's connection goroutine ends the fuzz
// process), the connection must end once the peer stops sending, and the
// server must still serve a well-formed session afterwards.
func FuzzMilterWire(f *testing.F) {
	r := newRig(f, "tcp", func(c *config.Config) {
		c.StageBudget = config.Duration(200 * time.Millisecond)
	})
	seeds := [][]byte{
		// The reported crasher: a host name without its NUL.
		frame('C', "hostwithoutnul"),
		frame('C', "host\x00"),
		frame('C', "host\x004\x00"),
		frame('C', "host\x004\x00\x19192.0.2.1"),
		frame('C', "host\x006\x00\x19IPv6:[2001:db8::1]\x00"),
		frame('C', "host\x00L\x00\x00/tmp/sock\x00"),
		frame('C', "host\x00U"),
		frame('H', "helo.test"),
		frame('M', "<a@pass.test>"),
		frame('M', "<a@pass.test>\x00SIZE=10\x00BODY=8BITMIME\x00"),
		frame('R', "<postmaster@x.test>"),
		frame('D', "Ci\x00ABC123\x00{auth_authen}"),
		frame('D', "M"),
		frame('D', ""),
		frame('D', "X\x00\x00\x00"),
		frame('L', "Subject\x00hello\x00"),
		frame('L', "Subject"),
		frame('L', "\x00"),
		frame('N', ""), frame('E', "body"), frame('B', ""), frame('A', ""),
		frame('U', "XYZZY"), frame('K', ""), frame('Q', ""), frame('O', "\x00\x00\x00\x06"),
		append(append(frame('C', "h\x004\x00\x19192.0.2.1\x00"), frame('H', "h")...), frame('M', "<x@fail.test>\x00")...),
		append(frame('R', "<u@x.test>\x00"), frame('M', "<a@b>\x00")...), // out of order
		append(frame('E', ""), frame('T', "")...),
		{0xfe, 0, 0, 0, 0, 0},                   // an empty packet, raw
		{0xfe, 0, 0xff, 0xff, 0xff, 0xff},       // 4 GiB announced
		{0xfe, 0, 0, 0, 0, 5, 'C', 'h', 0, '4'}, // raw, cut short
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := net.Dial("tcp", r.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(negotiation()); err != nil {
			t.Fatal(err)
		}
		var head [4]byte
		if _, err := io.ReadFull(c, head[:]); err != nil {
			t.Fatalf("no answer to a valid negotiation: %v", err)
		}
		if _, err := io.CopyN(io.Discard, c, int64(binary.BigEndian.Uint32(head[:]))); err != nil {
			t.Fatal(err)
		}
		// Write and read at once: replies must not fill the socket buffers.
		drained := make(chan error, 1)
		go func() {
			_, err := io.Copy(io.Discard, c)
			drained <- err
		}()
		c.Write(wireStream(in)) // the server may hang up half way: fine
		c.(*net.TCPConn).CloseWrite()
		select {
		case err := <-drained:
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("the server kept the connection open after the peer stopped sending")
			}
		case <-time.After(3 * time.Second):
			t.Fatal("the connection did not end within 3 s of the peer's last byte")
		}
	})
	// Still serving after the whole corpus.
	s := r.session("192.0.2.10")
	r.want(s.Mail("a@pass.test", ""))
}
