package filter

import (
	"encoding/binary"
	"testing"
)

// FuzzPacketGuard feeds the packet follower arbitrary streams in
// arbitrary fragments: it must never panic, and must refuse exactly the
// streams that announce an oversized packet.
func FuzzPacketGuard(f *testing.F) {
	pkt := func(code byte, payload string) []byte {
		b := binary.BigEndian.AppendUint32(nil, uint32(len(payload)+1))
		return append(append(b, code), payload...)
	}
	f.Add(append(pkt('M', "<a@b.test>\x00SIZE=10\x00"), pkt('R', "<u@x>\x00")...), uint8(3))
	f.Add([]byte{0, 0, 0, 0, 'M'}, uint8(2))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff}, uint8(1))
	f.Fuzz(func(t *testing.T, stream []byte, chunk uint8) {
		c := &conn{}
		step := int(chunk%16) + 1
		var got error
		for i := 0; i < len(stream) && got == nil; i += step {
			got = c.follow(stream[i:min(i+step, len(stream))])
		}
		// The same walk, whole: the first oversized length decides.
		var want error
		for i := 0; i+4 <= len(stream); {
			n := int(binary.BigEndian.Uint32(stream[i:]))
			if n > maxPacket {
				want = errPacketTooLarge
				break
			}
			if n == 0 {
				want = errPacketEmpty
				break
			}
			i += 4 + n
		}
		if got != want {
			t.Fatalf("follow = %v, want %v", got, want)
		}
	})
}

func FuzzAuthservID(f *testing.F) {
	f.Add("mx.example.test; spf=pass smtp.mailfrom=a@b")
	f.Add("  mx 1 ; none")
	f.Fuzz(func(t *testing.T, v string) { authservIDOf(v) })
}
