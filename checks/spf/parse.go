package spf

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// mechanism is one directive of a record (RFC 7208 §4.6.1).
type mechanism struct {
	qualifier Status
	kind      string // all include a mx ptr ip4 ip6 exists
	domain    *macroString
	prefix    netip.Prefix // ip4, ip6
	cidr4     int          // a, mx: -1 when absent
	cidr6     int
	text      string // as written, for evidence
}

// record is a parsed SPF record.
type record struct {
	mechs    []mechanism
	redirect *macroString
	exp      *macroString
	hasAll   bool
}

// IsRecord reports whether a TXT string is an SPF version 1 record
// (RFC 7208 §4.5: "v=spf1" followed by a space or the end): the only TXT
// strings of a policy lookup SPF reads.
func IsRecord(txt string) bool {
	if len(txt) < 6 || !strings.EqualFold(txt[:6], "v=spf1") {
		return false
	}
	return len(txt) == 6 || txt[6] == ' '
}

func syntaxErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrSyntax, fmt.Sprintf(format, args...))
}

// parseRecord parses a whole record; any syntax error anywhere makes it
// unusable (RFC 7208 §4.6).
func parseRecord(txt string) (*record, error) {
	for i := 0; i < len(txt); i++ {
		if txt[i] < 0x20 || txt[i] > 0x7e {
			return nil, syntaxErr("character %q outside printable 7-bit ASCII", txt[i])
		}
	}
	rec := &record{}
	for _, term := range strings.Split(txt[6:], " ") {
		if term == "" {
			continue
		}
		if err := rec.addTerm(term); err != nil {
			return nil, err
		}
	}
	return rec, nil
}

func (rec *record) addTerm(term string) error {
	// A modifier is name "=" value, name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." ).
	n := 0
	if isAlpha(term[0]) {
		n = 1
		for n < len(term) && (isAlnum(term[n]) || term[n] == '-' || term[n] == '_' || term[n] == '.') {
			n++
		}
	}
	if n > 0 && n < len(term) && term[n] == '=' {
		return rec.addModifier(strings.ToLower(term[:n]), term[n+1:], term)
	}
	m, err := parseMechanism(term)
	if err != nil {
		return err
	}
	if m.kind == "all" {
		rec.hasAll = true
	}
	rec.mechs = append(rec.mechs, m)
	return nil
}

func (rec *record) addModifier(name, value, term string) error {
	switch name {
	case "redirect", "exp":
		ms, err := parseDomainSpec(value)
		if err != nil {
			return fmt.Errorf("%s: %w", term, err)
		}
		target := &rec.redirect
		if name == "exp" {
			target = &rec.exp
		}
		if *target != nil {
			return syntaxErr("%s= given twice", name) // RFC 7208 §6
		}
		*target = ms
	default:
		// Unknown modifiers are ignored, but must be well formed (RFC 7208 §6).
		if _, err := parseMacroString(value, macroLettersExp); err != nil {
			return fmt.Errorf("%s: %w", term, err)
		}
	}
	return nil
}

func parseMechanism(term string) (mechanism, error) {
	m := mechanism{qualifier: Pass, cidr4: -1, cidr6: -1, text: term}
	rest := term
	switch rest[0] {
	case '+':
		rest = rest[1:]
	case '-':
		m.qualifier, rest = Fail, rest[1:]
	case '~':
		m.qualifier, rest = Softfail, rest[1:]
	case '?':
		m.qualifier, rest = Neutral, rest[1:]
	}
	name := rest
	arg, hasArg := "", false
	if i := strings.IndexAny(rest, ":/"); i >= 0 {
		name = rest[:i]
		if rest[i] == ':' {
			arg, hasArg = rest[i+1:], true
		} else {
			arg = rest[i:] // a cidr suffix without a domain
		}
	}
	m.kind = strings.ToLower(name)
	var err error
	switch m.kind {
	case "all":
		if arg != "" || hasArg {
			return m, syntaxErr("%q: all takes no argument", term)
		}
	case "include", "exists":
		if !hasArg {
			return m, syntaxErr("%q: %s needs a domain", term, m.kind)
		}
		m.domain, err = parseDomainSpec(arg)
	case "a", "mx":
		spec := arg
		spec, m.cidr4, m.cidr6, err = splitDualCIDR(spec)
		if err != nil {
			return m, fmt.Errorf("%q: %w", term, err)
		}
		if hasArg {
			m.domain, err = parseDomainSpec(spec)
		} else if spec != "" {
			err = syntaxErr("%q: unexpected %q", term, spec)
		}
	case "ptr":
		if hasArg {
			m.domain, err = parseDomainSpec(arg)
		} else if arg != "" {
			err = syntaxErr("%q: ptr takes no cidr", term)
		}
	case "ip4", "ip6":
		if !hasArg {
			return m, syntaxErr("%q: %s needs an address", term, m.kind)
		}
		m.prefix, err = parseNetwork(m.kind, arg)
	default:
		return m, syntaxErr("unknown mechanism %q", term)
	}
	if err != nil {
		return m, fmt.Errorf("%q: %w", term, err)
	}
	return m, nil
}

// splitDualCIDR splits "spec/24//64" into spec and the two prefix lengths
// (RFC 7208 §5.6: dual-cidr-length).
func splitDualCIDR(s string) (string, int, int, error) {
	c4, c6 := -1, -1
	if i := strings.LastIndex(s, "//"); i >= 0 && allDigits(s[i+2:]) {
		v, err := cidrLen(s[i+2:], 128)
		if err != nil {
			return "", 0, 0, err
		}
		c6, s = v, s[:i]
	}
	if i := strings.LastIndexByte(s, '/'); i >= 0 && allDigits(s[i+1:]) {
		v, err := cidrLen(s[i+1:], 32)
		if err != nil {
			return "", 0, 0, err
		}
		c4, s = v, s[:i]
	}
	return s, c4, c6, nil
}

// cidrLen parses a prefix length: no leading zeros, at most maxBits.
func cidrLen(s string, maxBits int) (int, error) {
	if s == "" || (len(s) > 1 && s[0] == '0') || len(s) > 3 {
		return 0, syntaxErr("bad prefix length %q", s)
	}
	v, err := strconv.Atoi(s)
	if err != nil || v > maxBits {
		return 0, syntaxErr("bad prefix length %q", s)
	}
	return v, nil
}

func parseNetwork(kind, s string) (netip.Prefix, error) {
	bits := -1
	if i := strings.IndexByte(s, '/'); i >= 0 {
		maxBits := 32
		if kind == "ip6" {
			maxBits = 128
		}
		v, err := cidrLen(s[i+1:], maxBits)
		if err != nil {
			return netip.Prefix{}, err
		}
		bits, s = v, s[:i]
	}
	ip, err := netip.ParseAddr(s)
	if err != nil || ip.Zone() != "" || (kind == "ip4") != ip.Is4() {
		return netip.Prefix{}, syntaxErr("bad %s address %q", kind, s)
	}
	if bits < 0 {
		bits = ip.BitLen()
	}
	return netip.PrefixFrom(ip, bits).Masked(), nil
}

// parseDomainSpec parses domain-spec = macro-string domain-end
// (RFC 7208 §7.1): it must end in a macro-expand ("%{...}", "%%", "%_" or
// "%-") or in "." toplabel ["."].
func parseDomainSpec(s string) (*macroString, error) {
	ms, err := parseMacroString(s, macroLettersDomain)
	if err != nil {
		return nil, err
	}
	if ms.endsInExpand {
		return ms, nil
	}
	tail := ""
	if n := len(ms.parts); n > 0 {
		tail = ms.parts[n-1].literal
	}
	tail = strings.TrimSuffix(tail, ".")
	i := strings.LastIndexByte(tail, '.')
	if i < 0 || !isTopLabel(tail[i+1:]) {
		return nil, syntaxErr("domain %q does not end in a top-level label or macro", s)
	}
	return ms, nil
}

// isTopLabel: toplabel = ( *alphanum ALPHA *alphanum ) /
// ( 1*alphanum "-" *( alphanum / "-" ) alphanum ) (RFC 7208 §7.1).
func isTopLabel(l string) bool {
	if l == "" || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	alpha, dash := false, false
	for i := 0; i < len(l); i++ {
		switch c := l[i]; {
		case isAlpha(c):
			alpha = true
		case c >= '0' && c <= '9':
		case c == '-':
			dash = true
		default:
			return false
		}
	}
	return alpha || dash
}

func isAlpha(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }
func isAlnum(c byte) bool { return isAlpha(c) || (c >= '0' && c <= '9') }

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
