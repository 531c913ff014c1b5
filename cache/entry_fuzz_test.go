package cache

import "testing"

// FuzzDecodeEntry: any value read from Redis decodes or is refused, never
// panics, and what decodes encodes back to the same value.
func FuzzDecodeEntry(f *testing.F) {
	for _, s := range []string{"1|exists|250|2.1.5|1700000000", "1|not-exists|550|5.1.1|1|r1", "1|x|0||0|r", "garbage", "1|||||"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := decodeEntry(s)
		if err != nil {
			return
		}
		if again, err := decodeEntry(encodeEntry(e)); err != nil || again != e {
			t.Fatalf("%q: decoded %+v, round trip %+v %v", s, e, again, err)
		}
	})
}
