// Package safetext makes text that a remote party controls (SMTP replies,
// SPF explanations, DNS error text) safe to put into logs, headers and SMTP
// replies.
package safetext

// Printable keeps printable ASCII of s, turns other bytes into '?', and
// cuts the result to at most n bytes.
func Printable(s string, n int) string {
	b := []byte(s)
	if len(b) > n {
		b = b[:n]
	}
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	return string(b)
}
