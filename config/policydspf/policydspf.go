// Package policydspf reads a policyd-spf.conf (spf-engine 3.x, the
// format and defaults of policyd-spf.conf(5); Debian's
// postfix-policyd-spf-python) and writes the senderguard configuration
// that makes the same decisions: accept, defer or reject for the same
// SMTP transaction. Options senderguard cannot honour are named with the
// reason, never dropped silently.
package policydspf

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"

	"github.com/senderguard/senderguard/config"
)

// Option is one "name = value" line of the file.
type Option struct {
	Name, Value string
	Line        int
}

// Error is a problem with one line of the file.
type Error struct {
	File   string
	Line   int
	Option string
	Reason string
}

func (e *Error) Error() string {
	if e.Option == "" {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Reason)
	}
	return fmt.Sprintf("%s:%d: %s: %s", e.File, e.Line, e.Option, e.Reason)
}

// Parse reads the file as spf-engine does: "#" starts a comment, blank
// lines are skipped, each other line is "name = value" (one "="). A line
// without "=" is named (spf-engine logs and skips it); a line with more
// than one "=" is an error (spf-engine skips it, which hides a mistake).
func Parse(r io.Reader, file string) (opts []Option, notes []string, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(strings.SplitN(sc.Text(), "#", 2)[0])
		if line == "" {
			continue
		}
		parts := strings.Split(line, "=")
		for i := range parts {
			parts[i] = strings.TrimSpace(parts[i])
		}
		switch len(parts) {
		case 2:
			opts = append(opts, Option{Name: parts[0], Value: parts[1], Line: n})
		case 1:
			notes = append(notes, fmt.Sprintf("%s:%d: %q has no value; ignored (as policyd-spf does)", file, n, line))
		default:
			return nil, nil, &Error{File: file, Line: n, Reason: fmt.Sprintf("%q: more than one \"=\" (policyd-spf ignores such a line)", line)}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", file, err)
	}
	return opts, notes, nil
}

// Settings are the options that decide, after the defaults of
// policyd-spf.conf(5) and the file; Source names the file's line of
// each option set there.
type Settings struct {
	HELOReject, MailFromReject string
	PermErrorReject            bool
	TempErrorDefer             bool
	NoMail                     bool
	TestOnly                   bool // test mode: TestOnly = 0
	EnhancedCodes              bool
	HeaderType                 string
	AuthservID                 string
	HideReceiver               bool
	LookupTime                 int
	VoidLimit                  int
	ReasonMessage              string
	SkipAddresses, Whitelist   []netip.Prefix
	HELOWhitelist              []string
	DomainWhitelist            []string
	DomainWhitelistPTR         []string
	RejectNotPassDomains       []string
	DebugLevel                 int
	Source                     map[string]int // option → line
	Unsupported                []string       // options named, with why
}

// defaults are spf-engine 3.x's (policydspfsupp.defaultConfigData).
func defaults() *Settings {
	return &Settings{HELOReject: "Fail", MailFromReject: "Fail", EnhancedCodes: true, HeaderType: "SPF",
		AuthservID: "HOSTNAME", LookupTime: 20, VoidLimit: 2, DebugLevel: 1,
		ReasonMessage: "Message {rejectdefer} due to: {spf}. Please see {url}",
		SkipAddresses: mustPrefixes("127.0.0.0/8", "::ffff:127.0.0.0/104", "::1/128"), Source: map[string]int{}}
}

func mustPrefixes(list ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range list {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

var (
	heloLevels = []string{"SPF_Not_Pass", "Softfail", "Fail", "Null", "False", "No_Check"}
	mailLevels = []string{"SPF_Not_Pass", "Softfail", "Fail", "False", "No_Check"}
)

// unsupported are the options senderguard does not honour, with why.
var unsupported = map[string]string{
	"HELO_pass_restriction":      "names a Postfix restriction class to apply on HELO pass; senderguard answers through the milter and has no restriction classes: keep that check in smtpd_recipient_restrictions",
	"Mail_From_pass_restriction": "names a Postfix restriction class to apply on MAIL FROM pass; senderguard answers through the milter and has no restriction classes: keep that check in smtpd_recipient_restrictions",
	"Prospective":                "checks outgoing mail as if sent from another address; senderguard judges incoming mail",
	"Per_User":                   "per-recipient policyd-spf files; use recipient_domains (actions, dry_run, spf rules per recipient domain) instead",
	"Whitelist_Lookup_Time":      "the whitelist lookups share stage_budget with the SPF checks",
	"Mock":                       "works around Postfix hiding a policy server's first header from milters; senderguard is a milter. (policyd-spf reads its value with bool(): \"Mock = False\" turns it on)",
	"QueueID":                    "senderguard's decision lines always carry queue_id",
	"Socket":                     "an option of spf-engine's milter front end; senderguard listens on listen",
	"PidFile":                    "an option of spf-engine's milter front end",
	"UserID":                     "an option of spf-engine's milter front end; run senderguard as its own user (deploy/senderguard.service)",
	"UMask":                      "an option of spf-engine's milter front end; see listen_mode",
	"InternalHosts":              "an option of spf-engine's milter front end; see trusted_networks",
	"IntHosts":                   "an option of spf-engine's milter front end",
	"MacroList":                  "an option of spf-engine's milter front end; senderguard skips SASL-authenticated clients (skip_authenticated)",
}

// Read applies the options to the defaults, checking each value as
// spf-engine would use it.
func Read(opts []Option, file string) (*Settings, error) {
	s := defaults()
	for _, o := range opts {
		bad := func(format string, args ...any) error {
			return &Error{File: file, Line: o.Line, Option: o.Name, Reason: fmt.Sprintf(format, args...)}
		}
		s.Source[o.Name] = o.Line
		if strings.ContainsFunc(o.Value, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return nil, bad("a control character in the value")
		}
		switch o.Name {
		case "HELO_reject":
			if !contains(heloLevels, o.Value) {
				return nil, bad("%q: want one of %s", o.Value, strings.Join(heloLevels, ", "))
			}
			s.HELOReject = o.Value
		case "Mail_From_reject":
			if !contains(mailLevels, o.Value) {
				return nil, bad("%q: want one of %s", o.Value, strings.Join(mailLevels, ", "))
			}
			s.MailFromReject = o.Value
		case "PermError_reject", "TempError_Defer", "No_Mail":
			if o.Value != "True" && o.Value != "False" {
				return nil, bad("%q: want True or False", o.Value)
			}
			v := o.Value == "True"
			switch o.Name {
			case "PermError_reject":
				s.PermErrorReject = v
			case "TempError_Defer":
				s.TempErrorDefer = v
			default:
				s.NoMail = v
			}
		case "TestOnly", "defaultSeedOnly":
			n, err := strconv.Atoi(o.Value)
			if err != nil {
				return nil, bad("%q: want a number (0: test only)", o.Value)
			}
			s.TestOnly = n == 0
		case "debugLevel":
			n, err := strconv.Atoi(o.Value)
			if err != nil {
				return nil, bad("%q: want a number", o.Value)
			}
			s.DebugLevel = n
		case "SPF_Enhanced_Status_Codes":
			s.EnhancedCodes = o.Value != "No"
		case "Header_Type":
			switch o.Value {
			case "SPF", "AR", "None":
				s.HeaderType = o.Value
			default:
				return nil, bad("%q: want SPF, AR or None (one of them: policyd-spf refuses both)", o.Value)
			}
		case "Authserv_Id":
			if o.Value == "" {
				return nil, bad("empty")
			}
			s.AuthservID = o.Value
		case "Hide_Receiver":
			s.HideReceiver = o.Value != "No"
		case "Lookup_Time", "Void_Limit":
			n, err := strconv.Atoi(o.Value)
			if err != nil || n < 0 {
				return nil, bad("%q: want a whole number of %s", o.Value, map[bool]string{true: "seconds", false: "lookups"}[o.Name == "Lookup_Time"])
			}
			if o.Name == "Lookup_Time" {
				s.LookupTime = n
			} else {
				s.VoidLimit = n
			}
		case "Reason_Message":
			s.ReasonMessage = o.Value
		case "skip_addresses", "Whitelist":
			nets, err := networks(o.Value)
			if err != nil {
				return nil, bad("%v", err)
			}
			if o.Name == "Whitelist" {
				s.Whitelist = nets
			} else {
				s.SkipAddresses = nets
			}
		case "HELO_Whitelist", "Domain_Whitelist", "Domain_Whitelist_PTR", "Reject_Not_Pass_Domains":
			names, err := domains(o.Value)
			if err != nil {
				return nil, bad("%v", err)
			}
			switch o.Name {
			case "HELO_Whitelist":
				s.HELOWhitelist = names
			case "Domain_Whitelist":
				s.DomainWhitelist = names
			case "Domain_Whitelist_PTR":
				s.DomainWhitelistPTR = names
			default:
				s.RejectNotPassDomains = names
			}
		default:
			why, ok := unsupported[o.Name]
			if !ok {
				why = "not an option of policyd-spf.conf(5) (policyd-spf ignores it too)"
			}
			s.Unsupported = append(s.Unsupported, fmt.Sprintf("%s:%d: %s = %s: not imported: %s", file, o.Line, o.Name, o.Value, why))
		}
	}
	return s, nil
}

func contains(list []string, v string) bool {
	for _, l := range list {
		if l == v {
			return true
		}
	}
	return false
}

// networks reads a comma-separated CIDR list as spf-engine does: an
// address alone is one host; host bits set are refused (Python's
// ipaddress is strict), as they make policyd-spf skip the whole list.
func networks(v string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !strings.Contains(f, "/") {
			a, err := netip.ParseAddr(f)
			if err != nil {
				return nil, fmt.Errorf("%q is not an IP network", f)
			}
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not an IP network", f)
		}
		if p.Masked() != p {
			return nil, fmt.Errorf("%q has host bits set (policyd-spf then skips the whole list)", f)
		}
		out = append(out, p)
	}
	return out, nil
}

// domains reads a comma-separated list of domain names.
func domains(v string) ([]string, error) {
	var out []string
	for _, f := range strings.Split(v, ",") {
		f = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(f), "."))
		if f == "" {
			continue
		}
		canon, err := config.CanonicalDomain(f)
		if err != nil || strings.ContainsAny(canon, " /*@") || !strings.Contains(canon, ".") {
			return nil, fmt.Errorf("%q is not a domain name", f)
		}
		out = append(out, canon)
	}
	return out, nil
}

// ErrNotPolicydSPF is returned for a file that sets nothing policyd-spf
// knows (a wrong file).
var ErrNotPolicydSPF = errors.New("no policyd-spf option in the file")
