package callout

import (
	"regexp"
	"strconv"
	"strings"

	"github.com/senderguard/senderguard/internal/smtpstatus"
)

// RulesVersion numbers the reply rules below. Cached not-exists entries
// learned under an older version are not trusted (they are probed again):
// until version 1, almost every 5xx at RCPT was read as not-exists.
// Version 2: OpenSMTPD's "550 Invalid recipient", which it also gives
// for domains it does not serve, is not-exists only when postmaster@
// was accepted in the same session.
const RulesVersion = 2

// A rule reads one kind of SMTP reply. The first rule that matches
// decides: its class, and whether the reply refused the prober itself
// (our client, IP, HELO name or null sender), which opens the breaker.
//
// The order is the policy: a false not-exists refuses a real person's
// mail and is cached for days, a false unknown costs one more probe. So
// anything that says the refusal is about us, a rate, a relay or a policy
// is read first, then RFC 3463's enhanced status code, then the text of
// replies whose code says nothing more ("550 5.0.0", "550 5.1.0", none),
// and whatever is left is unknown.
type rule struct {
	name    string
	class   Class
	refused bool
	// match: the basic code range, an enhanced code pattern (subject and
	// detail: a number, "x" for any, "+" for any but 0), the text.
	codes    [2]int
	enhanced string
	text     *regexp.Regexp
	// recall, when set, marks a wording that servers give both for an
	// unknown user and for a domain they do not serve: the prober then
	// asks RCPT TO:<postmaster@domain> (RFC 5321 §4.5.1: it must exist),
	// and when that is accepted the domain is served there, the refusal
	// concerns the address alone, and the rule named recall reads it as
	// not-exists.
	recall string
}

// Wording, lower-cased. Each is a list of phrases, not single words, so
// that "not listed in our directory" is not "listed" as in a blocklist.
var (
	aboutUs = words(`block(ed|ing)?`, `(black|block|deny|ban) ?list(ed)?`, `dnsbl`, `rbl`, `spamhaus`, `spamcop`,
		`barracuda`, `sorbs`, `banned`, `reputation`, `ip`, `your ip`, `client (host|ip|address)`, `ip address`,
		`helo`, `ehlo`, `fully.qualified`, `sender verify`, `sender address rejected`, `null sender`,
		`empty (envelope )?sender`, `bounces? (are )?not accepted`, `reverse (dns|lookup|hostname)`, `rdns`,
		`ptr record`, `not allowed to connect`, `connection (refused|rejected)`, `authentication required`,
		`must (first )?(authenticate|be authenticated|log ?in)`, `auth(entication)? (is )?required`, `hostname`)
	quota = words(`over ?quota`, `quota`, `mailbox (is )?full`, `mailbox full`, `mail ?box size`,
		`insufficient (system )?storage`, `out of storage`, `storage (space|allocation|limit)`, `disk full`, `full mailbox`)
	rate = words(`rate`, `too many`, `too fast`, `limit(ed|s)?`, `throttl(ed|ing)`, `frequency`, `per (hour|minute|day)`,
		`try (again )?later`, `temporarily`)
	relay = words(`relay(ing)? (access )?(is )?(denied|not permitted|prohibited|not allowed|refused|disallowed)`,
		`(unable|not permitted|not allowed|do not|don'?t) (to )?relay`, `no relaying`, `relay not permitted`, `not a local domain`, `not (hosted|handled|served)`, `domain (is )?not (hosted|handled|served|local)`,
		`in my list of allowed rcpthosts`, `rcpthosts`, `not accept mail for`, `unable to route`, `no route`, `unrouteable`, `misrouted`)
	policy = words(`spam`, `polic(y|ies)`, `spf`, `dkim`, `dmarc`, `unsolicited`, `content`, `virus`, `malware`,
		`phish`, `abuse`, `administrative(ly)? (prohibited|denied)`, `access denied`, `not authori[sz]ed`, `prohibited`, `denied`)
	noMailbox = words(`user unknown`, `unknown user`, `unknown (recipient|mailbox|address|local.?part|account|addressee)`,
		`(recipient|addressee|mailbox) unknown`, `no such (user|recipient|mailbox|address|account|person|local user)`,
		`(user|recipient|mailbox|address|account|addressee|e-?mail account)( that you tried to reach)? (does not|doesn'?t|did not|no longer) exists?`,
		`does not exist`, `doesn'?t exist`, `(invalid|bad|non-?existent|unknown) (recipient|mailbox|address|user|account)`,
		`(user|recipient|mailbox|address|account) (not found|invalid|unknown)`, `not (a )?valid (recipient|mailbox|user|address)`,
		`no mailbox (here )?(by that name)?`, `mailbox not found`, `not listed in (our|the) (directory|address book)`,
		`no longer (valid|available|active)`, `(does not|doesn'?t) have an? ([\w.-]+ )?account`, `recip(ient)?notfound`, `(account|mailbox) (has been )?(deleted|removed|closed|terminated)`)
	tlsWords = words(`tls`, `starttls`, `encrypt(ion|ed)?`, `secure connection`)
)

// exact matches the whole text, case-insensitively.
func exact(pattern string) *regexp.Regexp {
	return regexp.MustCompile(`(?i)^` + pattern + `$`)
}

// words builds one case-insensitive pattern of phrases, each at word
// boundaries.
func words(phrases ...string) *regexp.Regexp {
	return regexp.MustCompile(`(?i)\b(` + strings.Join(phrases, "|") + `)\b`)
}

var any5xx = [2]int{500, 599}

// rcptRules reads the reply to RCPT TO:<sender>.
var rcptRules = []rule{
	{name: "2xx-accepted", class: Exists, codes: [2]int{200, 299}},
	{name: "4xx-temporary", class: Unknown, codes: [2]int{400, 499}},
	// RFC 3207: the server wants TLS first; nothing about the address.
	{name: "tls-required", class: Unknown, codes: [2]int{530, 530}},
	{name: "tls-required", class: Unknown, codes: any5xx, enhanced: "5.7.x", text: tlsWords},
	// About us, whatever code it carries: a blocklist, our IP, our HELO
	// name (Postfix applies its HELO rules at RCPT), our null sender.
	{name: "refused-us", class: Unknown, refused: true, codes: any5xx, text: aboutUs},
	{name: "x.1.7-our-sender", class: Unknown, refused: true, codes: any5xx, enhanced: "5.1.7"},
	{name: "x.1.8-our-sender-domain", class: Unknown, refused: true, codes: any5xx, enhanced: "5.1.8"},
	{name: "x.5.x-protocol", class: Unknown, refused: true, codes: any5xx, enhanced: "5.5.+"},
	// The mailbox exists: it is full.
	{name: "x.2.2-mailbox-full", class: Exists, codes: any5xx, enhanced: "5.2.2"},
	{name: "mailbox-full-text", class: Exists, codes: any5xx, text: quota},
	// The default wordings of an unknown local part in Exim ("550
	// Unrouteable address": no router took the address; also a domain no
	// router handles) and OpenSMTPD (6.x: "550 Invalid recipient: <a>",
	// also for a domain it does not serve; "524 5.2.4 Mailing list
	// expansion problem: <a>" for a user its virtual table lacks):
	// unknown, unless postmaster@ is accepted (see recall).
	{name: "exim-unrouteable", class: Unknown, codes: any5xx, text: exact(`(<[^>]*>:? )?unrouteable address\.?`),
		recall: "exim-unrouteable-postmaster-ok"},
	{name: "opensmtpd-invalid-recipient", class: Unknown, codes: any5xx, text: exact(`invalid recipient(: <[^>]*>)?\.?`),
		recall: "opensmtpd-invalid-recipient-postmaster-ok"},
	{name: "opensmtpd-expansion-problem", class: Unknown, codes: any5xx, text: exact(`mailing list expansion problem(: <[^>]*>)?\.?`),
		recall: "opensmtpd-expansion-problem-postmaster-ok"},
	// Rate limits, relaying and policy are not verdicts on the address.
	{name: "rate-limit", class: Unknown, codes: any5xx, text: rate},
	{name: "relay-refused", class: Unknown, codes: any5xx, text: relay},
	// RFC 3463 X.1.1 "bad destination mailbox address" and X.1.6
	// "mailbox has moved, no forwarding address".
	{name: "x.1.1-no-mailbox", class: NotExists, codes: any5xx, enhanced: "5.1.1"},
	{name: "x.1.6-mailbox-moved", class: NotExists, codes: any5xx, enhanced: "5.1.6"},
	// RFC 7505 gave X.1.10 to null MX, but Microsoft 365 answers an
	// unknown recipient with it: only its words can tell.
	{name: "x.1.10-recipient-not-found", class: NotExists, codes: any5xx, enhanced: "5.1.10", text: noMailbox},
	{name: "policy", class: Unknown, codes: any5xx, text: policy},
	// Codes that say something other than "no such mailbox": a system or
	// domain not served here (X.1.2), syntax (X.1.3), ambiguity (X.1.4),
	// null MX (X.1.10), a disabled mailbox or its rate (X.2.x), the mail
	// system (X.3.x), routing (X.4.x), content (X.6.x), security (X.7.x).
	{name: "x.1.x-other-address", class: Unknown, codes: any5xx, enhanced: "5.1.+"},
	{name: "x.2.x-mailbox-status", class: Unknown, codes: any5xx, enhanced: "5.2.+"},
	{name: "x.3.x-mail-system", class: Unknown, codes: any5xx, enhanced: "5.3.+"},
	{name: "x.4.x-routing", class: Unknown, codes: any5xx, enhanced: "5.4.+"},
	{name: "x.6.x-content", class: Unknown, codes: any5xx, enhanced: "5.6.+"},
	{name: "x.7.x-security", class: Unknown, codes: any5xx, enhanced: "5.7.+"},
	// Code-less replies and generic codes (X.0.0, X.1.0, X.2.0, ...,
	// which the rules above leave to the text): the words decide.
	{name: "no-mailbox-text", class: NotExists, codes: any5xx, text: noMailbox},
	{name: "5xx-unclear", class: Unknown, codes: any5xx},
}

// RuleNames lists every rule name a probe can report, for metrics.
func RuleNames() []string {
	seen := map[string]bool{}
	var out []string
	for _, rs := range [][]rule{rcptRules, beforeRcptRules} {
		for _, r := range rs {
			for _, n := range []string{r.name, r.recall} {
				if n != "" && !seen[n] {
					seen[n] = true
					out = append(out, n)
				}
			}
		}
	}
	return append(out, ruleDNS, ruleNoReply, RulePausedListed, RuleSkipMXHost)
}

// ruleDNS names a probe DNS decided (null MX, no mail host); ruleNoReply
// one that ended without a decisive reply (connection failures,
// timeouts, limits).
const (
	ruleDNS     = "dns"
	ruleNoReply = "no-reply"
)

// beforeRcptRules read a refusal of the banner, EHLO/HELO or MAIL
// FROM:<>: a 5xx there refuses the prober itself (never not-exists), a
// 4xx lets the next host try.
var beforeRcptRules = []rule{
	{name: "tls-required", class: Unknown, codes: [2]int{530, 530}},
	{name: "tls-required", class: Unknown, codes: any5xx, enhanced: "5.7.x", text: tlsWords},
	{name: "refused-before-rcpt", class: Unknown, refused: true, codes: any5xx},
	{name: "4xx-before-rcpt", class: Unknown, codes: [2]int{400, 499}},
}

// ClassifyRcpt reads the reply to RCPT TO:<sender>.
func ClassifyRcpt(rep *Reply) (c Class, ruleName string, refused bool) {
	return classify(rcptRules, rep)
}

func classify(rules []rule, rep *Reply) (Class, string, bool) {
	r := match(rules, rep)
	return r.class, r.name, r.refused
}

// unmatched reads a reply no rule reads.
var unmatched = rule{name: "unmatched", class: Unknown}

// match is the first rule that reads rep, unmatched when none does.
func match(rules []rule, rep *Reply) *rule {
	for i := range rules {
		if rules[i].matches(rep) {
			return &rules[i]
		}
	}
	return &unmatched
}

func (r *rule) matches(rep *Reply) bool {
	if rep.Code < r.codes[0] || rep.Code > r.codes[1] {
		return false
	}
	if r.enhanced != "" && !enhancedMatches(r.enhanced, rep.Enhanced) {
		return false
	}
	return r.text == nil || r.text.MatchString(rep.Text)
}

// enhancedMatches compares an enhanced status code with a pattern whose
// parts may be "x" (any) or "+" (any but 0: X.1.0, "other address
// status", is generic and left to the text). The class is the reply's
// (the reply parser keeps only an enhanced code of the reply's class); a
// reply without an enhanced code matches no pattern.
func enhancedMatches(pattern, code string) bool {
	e, ok := smtpstatus.Parse(code)
	if !ok {
		return false
	}
	p := strings.Split(pattern, ".")
	for i := 1; i < 3; i++ {
		switch p[i] {
		case "x":
		case "+":
			if e[i] == 0 {
				return false
			}
		default:
			if pn, _ := strconv.Atoi(p[i]); pn != int(e[i]) {
				return false
			}
		}
	}
	return true
}
