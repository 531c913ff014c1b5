package filter

import (
	"encoding/binary"
	"testing"
)

// FuzzSniff feeds the milter packet follower arbitrary streams in
// arbitrary fragments: it must never panic nor keep more than it may.
func FuzzSniff(f *testing.F) {
	pkt := func(code byte, payload string) []byte {
		b := binary.BigEndian.AppendUint32(nil, uint32(len(payload)+1))
		return append(append(b, code), payload...)
	}
	f.Add(append(pkt('M', "<a@b.test>\x00SIZE=10\x00BODY=8BITMIME\x00"), pkt('R', "<u@x>\x00")...), uint8(3))
	f.Add(pkt('M', ""), uint8(1))
	f.Add([]byte{0, 0, 0, 0, 'M'}, uint8(2))
	f.Fuzz(func(t *testing.T, stream []byte, chunk uint8) {
		c := &sniffConn{}
		step := int(chunk%16) + 1
		for i := 0; i < len(stream); i += step {
			c.follow(stream[i:min(i+step, len(stream))])
		}
		if len(c.mail) > maxSniff {
			t.Fatalf("kept %d bytes", len(c.mail))
		}
	})
}

func FuzzAuthservID(f *testing.F) {
	f.Add("mx.example.test; spf=pass smtp.mailfrom=a@b")
	f.Add("  mx 1 ; none")
	f.Fuzz(func(t *testing.T, v string) { authservIDOf(v) })
}
