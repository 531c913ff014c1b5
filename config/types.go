package config

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Duration is a time.Duration written as "5s", "31d" or "12h".
type Duration time.Duration

// ParseDuration accepts time.ParseDuration forms plus a days suffix "d".
func ParseDuration(s string) (Duration, error) {
	s = strings.TrimSpace(s)
	if n, ok := strings.CutSuffix(s, "d"); ok {
		d, err := time.ParseDuration(n + "h")
		if err != nil {
			return 0, fmt.Errorf("bad duration %q", s)
		}
		return Duration(d * 24), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("bad duration %q", s)
	}
	return Duration(d), nil
}

func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	if err != nil {
		return err
	}
	if v < 0 {
		return fmt.Errorf("duration %q is negative", b)
	}
	*d = v
	return nil
}

// Prefix is a network in CIDR form; a bare address is a /32 or /128.
type Prefix struct{ netip.Prefix }

// ParsePrefix parses "192.0.2.0/24", "2001:db8::/32" or "192.0.2.1".
func ParsePrefix(s string) (Prefix, error) {
	s = strings.TrimSpace(s)
	if p, err := netip.ParsePrefix(s); err == nil {
		return Prefix{p.Masked()}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return Prefix{}, fmt.Errorf("bad network %q: want an address or CIDR", s)
	}
	return Prefix{netip.PrefixFrom(a, a.BitLen())}, nil
}

func (p Prefix) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

func (p *Prefix) UnmarshalText(b []byte) error {
	v, err := ParsePrefix(string(b))
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// Networks is a set of prefixes.
type Networks []Prefix

// Contains reports whether ip falls in any of the networks.
func (n Networks) Contains(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range n {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// ParseNetworks parses a comma-separated list; "" is the empty list.
func ParseNetworks(s string) (Networks, error) {
	var n Networks
	for _, f := range SplitList(s) {
		p, err := ParsePrefix(f)
		if err != nil {
			return nil, err
		}
		n = append(n, p)
	}
	return n, nil
}

// SplitList splits a comma-separated flag value, dropping blanks.
func SplitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
