package filter

import (
	"bytes"
	"encoding/binary"
	"net"
	"strings"
	"testing"
)

// recorder is a net.Conn that keeps each write.
type recorder struct {
	net.Conn
	writes [][]byte
}

func (r *recorder) Write(p []byte) (int, error) {
	r.writes = append(r.writes, append([]byte(nil), p...))
	return len(p), nil
}

// libraryWrites is how go-milter writes one packet: its header, then its
// data when there is any.
func libraryWrites(code byte, data string) [][]byte {
	h := make([]byte, 5)
	binary.BigEndian.PutUint32(h, uint32(len(data)+1))
	h[4] = code
	if data == "" {
		return [][]byte{h}
	}
	return [][]byte{h, []byte(data)}
}

type pkt struct {
	code byte
	data string
}

func TestRepliesAreWrittenWhole(t *testing.T) {
	cases := []struct {
		name    string
		packets []pkt
		writes  int
	}{
		{"continue", []pkt{{'c', ""}}, 1},
		{"reply code in one write", []pkt{{'y', "550 5.7.23 no\x00"}}, 1},
		{"end of message: insertions and the answer together", []pkt{{'i', "\x00\x00\x00\x01Received-SPF\x00 pass\x00"}, {'i', "\x00\x00\x00\x01Authentication-Results\x00 mx; spf=pass\x00"}, {'m', "\x00\x00\x00\x01X\x00\x00"}, {'c', ""}}, 1},
		{"progress is not held", []pkt{{'p', ""}, {'c', ""}}, 2},
		{"many insertions are sent in parts", func() (ps []pkt) {
			for range 40 {
				ps = append(ps, pkt{'i', strings.Repeat("x", 4000)})
			}
			return append(ps, pkt{'c', ""})
		}(), 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			c := &conn{Conn: rec}
			var want []byte
			for _, p := range tc.packets {
				for _, w := range libraryWrites(p.code, p.data) {
					want = append(want, w...)
					if n, err := c.Write(w); err != nil || n != len(w) {
						t.Fatalf("Write: %d, %v", n, err)
					}
				}
			}
			if got := bytes.Join(rec.writes, nil); !bytes.Equal(got, want) {
				t.Fatalf("bytes on the wire differ from those written (%d vs %d)", len(got), len(want))
			}
			if len(rec.writes) != tc.writes {
				t.Errorf("%d writes, want %d", len(rec.writes), tc.writes)
			}
		})
	}
}
