package safetext

import "testing"

func TestPrintable(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"plain text", 100, "plain text"},
		{"line\r\nbreak\x00", 100, "line??break?"},
		{"caf\u00e9", 100, "caf??"},
		{"0123456789", 4, "0123"},
	} {
		if got := Printable(tc.in, tc.n); got != tc.want {
			t.Errorf("Printable(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}
