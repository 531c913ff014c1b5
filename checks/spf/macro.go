package spf

import (
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Macro letters (RFC 7208 §7.2): c, r and t only in explanation text.
const (
	macroLettersDomain = "slodiphv"
	macroLettersExp    = "slodiphvcrt"
)

// macroPart is a literal run or one macro-expand.
type macroPart struct {
	literal string
	letter  byte // lower case; 0 for a literal
	upper   bool // URL-escape the expansion
	digits  int  // keep this many right-hand parts; 0 = all
	reverse bool
	delims  string // "" means "."
}

type macroString struct {
	parts []macroPart
	raw   string
	// endsInExpand: the last token is a macro-expand, which RFC 7208 §7.1
	// defines as "%{...}" or one of the escapes "%%", "%_", "%-": a
	// domain-spec may end in any of them (domain-end).
	endsInExpand bool
}

// parseMacroString parses macro-string (RFC 7208 §7.1) allowing the given
// macro letters. explain-string additionally allows spaces, which callers
// pass through as literals.
func parseMacroString(s, letters string) (*macroString, error) {
	ms := &macroString{raw: s}
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			ms.parts = append(ms.parts, macroPart{literal: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			if c < 0x20 || c > 0x7e {
				return nil, syntaxErr("character %q in %q", c, s)
			}
			lit.WriteByte(c)
			ms.endsInExpand = false
			continue
		}
		ms.endsInExpand = true
		if i+1 >= len(s) {
			return nil, syntaxErr("%q ends in a lone %%", s)
		}
		i++
		switch s[i] {
		case '%':
			lit.WriteByte('%')
		case '_':
			lit.WriteByte(' ')
		case '-':
			lit.WriteString("%20")
		case '{':
			end := strings.IndexByte(s[i:], '}')
			if end < 0 {
				return nil, syntaxErr("unterminated macro in %q", s)
			}
			p, err := parseMacroExpand(s[i+1:i+end], letters)
			if err != nil {
				return nil, syntaxErr("macro %q in %q: %v", s[i-1:i+end+1], s, err)
			}
			flush()
			ms.parts = append(ms.parts, p)
			i += end
		default:
			return nil, syntaxErr("%%%c in %q", s[i], s)
		}
	}
	flush()
	return ms, nil
}

// parseMacroExpand parses the inside of "%{...}":
// macro-letter transformers *delimiter.
func parseMacroExpand(s, letters string) (macroPart, error) {
	var p macroPart
	if s == "" {
		return p, syntaxErr("empty macro")
	}
	l := s[0]
	p.upper = l >= 'A' && l <= 'Z'
	p.letter = l | 0x20
	if !isAlpha(l) || strings.IndexByte(letters, p.letter) < 0 {
		return p, syntaxErr("macro letter %q not allowed here", l)
	}
	i := 1
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i > 1 {
		n, err := strconv.Atoi(s[1:i])
		if err != nil || n == 0 {
			return p, syntaxErr("bad digit transformer %q", s[1:i]) // RFC 7208 §7.3: nonzero
		}
		p.digits = min(n, 128)
	}
	if i < len(s) && (s[i] == 'r' || s[i] == 'R') {
		p.reverse = true
		i++
	}
	p.delims = s[i:]
	for ; i < len(s); i++ {
		if strings.IndexByte(".-+,/_=", s[i]) < 0 {
			return p, syntaxErr("bad delimiter %q", s[i])
		}
	}
	return p, nil
}

// macroEnv holds what macros expand to for one check_host() call.
type macroEnv struct {
	sender, local, senderDomain string
	domain                      string
	ip                          netip.Addr
	helo                        string
	receiver                    string
	now                         func() time.Time
	eval                        *evaluation // for %{p}, looked up on demand
}

// expand renders ms in env.
func (ms *macroString) expand(env *macroEnv) string {
	if len(ms.parts) == 1 && ms.parts[0].letter == 0 {
		return ms.parts[0].literal
	}
	var b strings.Builder
	for _, p := range ms.parts {
		if p.letter == 0 {
			b.WriteString(p.literal)
			continue
		}
		v := p.transform(env.value(p.letter))
		if p.upper {
			v = urlEscape(v)
		}
		b.WriteString(v)
	}
	return b.String()
}

func (env *macroEnv) value(letter byte) string {
	switch letter {
	case 's':
		return env.sender
	case 'l':
		return env.local
	case 'o':
		return env.senderDomain
	case 'd':
		return env.domain
	case 'i':
		return dottedIP(env.ip)
	case 'p':
		if env.eval != nil {
			return env.eval.validatedName()
		}
		return "unknown"
	case 'v':
		if env.ip.Is4() {
			return "in-addr"
		}
		return "ip6"
	case 'h':
		return env.helo
	case 'c':
		return env.ip.String()
	case 'r':
		if env.receiver == "" {
			return "unknown"
		}
		return env.receiver
	case 't':
		now := time.Now
		if env.now != nil {
			now = env.now
		}
		return strconv.FormatInt(now().Unix(), 10)
	}
	return ""
}

// transform applies the digit, reverse and delimiter transformers
// (RFC 7208 §7.3); the parts are always joined with ".".
func (p *macroPart) transform(v string) string {
	if p.digits == 0 && !p.reverse && (p.delims == "" || p.delims == ".") {
		return v
	}
	delims := p.delims
	if delims == "" {
		delims = "."
	}
	parts := splitAny(v, delims)
	if p.reverse {
		for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
			parts[i], parts[j] = parts[j], parts[i]
		}
	}
	if p.digits > 0 && p.digits < len(parts) {
		parts = parts[len(parts)-p.digits:]
	}
	return strings.Join(parts, ".")
}

func splitAny(s, delims string) []string {
	var parts []string
	start := 0
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(delims, s[i]) >= 0 {
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}

// dottedIP is the %{i} form: dotted quad, or 32 dot-separated nibbles.
func dottedIP(ip netip.Addr) string {
	if ip.Is4() {
		return ip.String()
	}
	// Upper-case nibbles, as the RFC 7208 test suite expects in exp= text
	// (DNS names compare case-insensitively, so queries are unaffected).
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, 63)
	for i, x := range ip.As16() {
		if i > 0 {
			b = append(b, '.')
		}
		b = append(b, hex[x>>4], '.', hex[x&0xf])
	}
	return string(b)
}

// urlEscape escapes all but RFC 3986 unreserved characters (RFC 7208 §7.3).
func urlEscape(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isAlnum(c) || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c)
		} else {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
		}
	}
	return b.String()
}
