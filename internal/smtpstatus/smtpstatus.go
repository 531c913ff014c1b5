// Package smtpstatus is the one parser of RFC 3463 enhanced status codes
// (class.subject.detail, e.g. 5.1.1) in senderguard: the configured
// replies, the replies probes read, and the cached evidence all use it.
package smtpstatus

import "strconv"

// Enhanced is an enhanced status code; the zero value is "none".
type Enhanced [3]uint16

// Parse reads "C.S.D": class one digit, 2, 4 or 5; subject and detail
// of 1 to 3 digits (RFC 3463 §2).
func Parse(s string) (Enhanced, bool) {
	var e Enhanced
	part := 0
	digits := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			if digits++; digits > 3 || (part == 0 && digits > 1) {
				return Enhanced{}, false
			}
			e[part] = e[part]*10 + uint16(c-'0')
		case c == '.' && digits > 0 && part < 2:
			part++
			digits = 0
		default:
			return Enhanced{}, false
		}
	}
	if part != 2 || digits == 0 || (e[0] != 2 && e[0] != 4 && e[0] != 5) {
		return Enhanced{}, false
	}
	return e, true
}

// Leading splits an enhanced code of the reply code's class off the
// start of a reply's text ("5.1.1 User unknown"), as RFC 2034 writes it.
func Leading(code int, text string) (Enhanced, string) {
	end := 0
	for end < len(text) && text[end] != ' ' && text[end] != '\t' {
		end++
	}
	e, ok := Parse(text[:end])
	if !ok || int(e[0]) != code/100 {
		return Enhanced{}, text
	}
	for end < len(text) && (text[end] == ' ' || text[end] == '\t') {
		end++
	}
	return e, text[end:]
}

// IsZero reports "none".
func (e Enhanced) IsZero() bool { return e[0] == 0 }

func (e Enhanced) String() string {
	if e.IsZero() {
		return ""
	}
	b := make([]byte, 0, 11)
	b = strconv.AppendUint(b, uint64(e[0]), 10)
	b = append(b, '.')
	b = strconv.AppendUint(b, uint64(e[1]), 10)
	b = append(b, '.')
	b = strconv.AppendUint(b, uint64(e[2]), 10)
	return string(b)
}
