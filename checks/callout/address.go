package callout

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// Address is a sender address checked against RFC 5321's Mailbox grammar
// and ready to be written into an SMTP command.
type Address struct {
	Local      string // as given (dot-string or quoted-string)
	Domain     string // A-label form, lower case
	UTF8Local  bool   // the local part needs SMTPUTF8 (RFC 6531)
	UTF8Domain bool   // the domain was given in U-labels
}

// String is the address for RCPT TO.
func (a Address) String() string { return a.Local + "@" + a.Domain }

// ErrBadAddress is wrapped by every validation failure.
var ErrBadAddress = errors.New("not a valid mailbox")

func badAddr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadAddress, fmt.Sprintf(format, args...))
}

// ParseAddress validates s (without angle brackets). Nothing that fails
// here is ever written to a socket.
func ParseAddress(s string) (Address, error) {
	var a Address
	if len(s) > 254 {
		return a, badAddr("longer than 254 octets") // RFC 5321 §4.5.3.1.3, path of 256 with brackets
	}
	if !utf8.ValidString(s) {
		return a, badAddr("not UTF-8")
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return a, badAddr("control character %U", r)
		}
	}
	at := strings.LastIndexByte(s, '@')
	if at <= 0 || at == len(s)-1 {
		return a, badAddr("%q has no local part or domain", s)
	}
	local, domain := s[:at], s[at+1:]
	if len(local) > 64 {
		return a, badAddr("local part longer than 64 octets") // RFC 5321 §4.5.3.1.1
	}
	if err := checkLocal(local); err != nil {
		return a, err
	}
	a.Local = local
	for i := 0; i < len(local); i++ {
		if local[i] >= 0x80 {
			a.UTF8Local = true
			break
		}
	}
	if strings.HasPrefix(domain, "[") {
		return a, badAddr("address literals are not probed")
	}
	domain = strings.TrimSuffix(domain, ".")
	ascii := lowerASCII(domain)
	if ascii == "" {
		// U-labels: probe by the A-label (RFC 5890).
		v, err := idna.Lookup.ToASCII(domain)
		if err != nil {
			return a, badAddr("domain %q: %v", domain, err)
		}
		ascii, a.UTF8Domain = strings.ToLower(v), true
	}
	if err := checkDomain(ascii); err != nil {
		return a, err
	}
	a.Domain = ascii
	return a, nil
}

// checkLocal: Local-part = Dot-string / Quoted-string (RFC 5321 §4.1.2),
// with UTF-8 allowed in atext and qtext as RFC 6531 §3.3 says.
func checkLocal(l string) error {
	if l[0] == '"' {
		if len(l) < 2 || l[len(l)-1] != '"' {
			return badAddr("unterminated quoted local part")
		}
		q := l[1 : len(l)-1]
		for i := 0; i < len(q); i++ {
			c := q[i]
			switch {
			case c == '\\':
				if i+1 >= len(q) || q[i+1] < 32 || q[i+1] > 126 {
					return badAddr("bad quoted-pair in local part")
				}
				i++
			case c == '"':
				return badAddr("unescaped quote in local part")
			case c < 32 || c == 127:
				return badAddr("control character in local part")
			}
		}
		return nil
	}
	for _, atom := range strings.Split(l, ".") {
		if atom == "" {
			return badAddr("empty atom in local part %q", l)
		}
		for i := 0; i < len(atom); i++ {
			c := atom[i]
			if c >= 0x80 {
				continue
			}
			if !isAtext(c) {
				return badAddr("character %q in local part", c)
			}
		}
	}
	return nil
}

func isAtext(c byte) bool {
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

// checkDomain: Domain = sub-domain *("." sub-domain), LDH labels of 1 to 63
// octets, at most 255 octets, at least two labels.
func checkDomain(d string) error {
	if len(d) > 255 || !strings.Contains(d, ".") {
		return badAddr("domain %q is not a fully qualified name", d)
	}
	for _, l := range strings.Split(d, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return badAddr("bad label %q in domain", l)
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-') {
				return badAddr("character %q in domain", c)
			}
		}
	}
	return nil
}

// CacheKey is the address as the caches know it: the domain in lower
// case and per-message tags removed, so one sender is one entry. BATV
// (prvs=TAG=local) is the tag in wide use.
func CacheKey(a Address) string {
	local := a.Local
	if len(local) > 5 && strings.EqualFold(local[:5], "prvs=") {
		if i := strings.IndexByte(local[5:], '='); i >= 0 && i+6 < len(local) {
			local = local[5+i+1:]
		}
	}
	return local + "@" + a.Domain
}

// lowerASCII lower-cases an ASCII name without allocating when it already
// is; "" when s has non-ASCII bytes.
func lowerASCII(s string) string {
	upper := false
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return ""
		}
		upper = upper || (s[i] >= 'A' && s[i] <= 'Z')
	}
	if upper {
		return strings.ToLower(s)
	}
	return s
}
