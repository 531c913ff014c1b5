package filter

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/senderguard/senderguard/checks/callout"
	"github.com/senderguard/senderguard/checks/dkim"
	"github.com/senderguard/senderguard/checks/dmarc"
	"github.com/senderguard/senderguard/checks/spf"
	"github.com/senderguard/senderguard/config"
)

// Decision is one decision line read back: the fields replay needs.
// Required fields are pointers, so that an empty value (the null sender)
// and a missing field differ.
type Decision struct {
	Msg              string  `json:"msg"`
	QueueID          string  `json:"queue_id"`
	ClientIP         *string `json:"client_ip"`
	Helo             *string `json:"helo"`
	Sender           *string `json:"sender"`
	Outcome          *string `json:"outcome"`
	Auth             string  `json:"auth"`
	Skipped          string  `json:"skipped"`
	SPFMail          string  `json:"spf_mailfrom"`
	SPFMailMechanism string  `json:"spf_mailfrom_mechanism"`
	SPFMailOpen      string  `json:"spf_mailfrom_open"`
	SPFHelo          string  `json:"spf_helo"`
	SPFMailNoMail    any     `json:"spf_mailfrom_no_mail"` // true (JSON) or "true" (text)
	SPFHeloNoMail    any     `json:"spf_helo_no_mail"`
	Callout          string  `json:"callout"`
	CalloutCached    any     `json:"callout_cached"` // true (JSON) or "true" (text)
	CalloutRule      string  `json:"callout_rule"`
	SPFFailAccepted  string  `json:"spf_fail_accepted"`
	SPFFailRescue    string  `json:"spf_fail_rescue"`
	RcptDomains      string  `json:"rcpt_domains"`
	RcptOutcomes     string  `json:"rcpt_outcomes"`
	// What a held message showed at end of message (since DMARC came):
	// its signatures, author domain and DMARC policy.
	DKIM              string `json:"dkim"`
	HeaderFrom        string `json:"header_from"`
	HeaderFromProblem string `json:"header_from_problem"`
	DMARC             string `json:"dmarc"`
	DMARCPolicy       string `json:"dmarc_policy"`
	DMARCDomain       string `json:"dmarc_domain"`
}

// ErrNotDecision marks a line that is not a decision line (it is
// ignored, not counted).
var ErrNotDecision = errors.New("not a decision line")

// ParseDecision reads one log line in either of our formats: slog's text
// (key=value, values quoted as Go strings where needed) or JSON. A
// decision line cut short returns the decision and an error.
func ParseDecision(line []byte) (*Decision, error) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 || !bytes.Contains(line, []byte("decision")) {
		return nil, ErrNotDecision
	}
	d := &Decision{}
	if line[0] == '{' {
		if err := json.Unmarshal(line, d); err != nil {
			if bytes.Contains(line, []byte(`"msg":"decision"`)) {
				return &Decision{Msg: "decision"}, fmt.Errorf("a decision line that is not whole JSON: %v", err)
			}
			return nil, ErrNotDecision
		}
		if d.Msg != "decision" {
			return nil, ErrNotDecision
		}
		return d, nil
	}
	err := textFields(string(line), d)
	if d.Msg != "decision" {
		return nil, ErrNotDecision
	}
	return d, err
}

// textFields reads slog's text format into d: key=value pairs separated
// by spaces; a value starting with a quote is a Go-quoted string.
func textFields(s string, d *Decision) error {
	for len(s) > 0 {
		s = strings.TrimLeft(s, " ")
		if s == "" {
			break
		}
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			return fmt.Errorf("field without a value: %.40q", s)
		}
		key := s[:eq]
		s = s[eq+1:]
		var v string
		if strings.HasPrefix(s, `"`) {
			q, err := strconv.QuotedPrefix(s)
			if err != nil {
				return fmt.Errorf("%s: unterminated quoted value", key)
			}
			v, _ = strconv.Unquote(q)
			s = s[len(q):]
		} else {
			end := strings.IndexByte(s, ' ')
			if end < 0 {
				end = len(s)
			}
			v, s = s[:end], s[end:]
		}
		d.set(key, v)
	}
	return nil
}

func (d *Decision) set(key, v string) {
	switch key {
	case "msg":
		d.Msg = v
	case "queue_id":
		d.QueueID = v
	case "client_ip":
		d.ClientIP = &v
	case "helo":
		d.Helo = &v
	case "sender":
		d.Sender = &v
	case "outcome":
		d.Outcome = &v
	case "auth":
		d.Auth = v
	case "skipped":
		d.Skipped = v
	case "spf_mailfrom":
		d.SPFMail = v
	case "spf_mailfrom_mechanism":
		d.SPFMailMechanism = v
	case "spf_mailfrom_open":
		d.SPFMailOpen = v
	case "spf_helo":
		d.SPFHelo = v
	case "spf_mailfrom_no_mail":
		d.SPFMailNoMail = v
	case "spf_helo_no_mail":
		d.SPFHeloNoMail = v
	case "callout":
		d.Callout = v
	case "callout_cached":
		d.CalloutCached = v
	case "callout_rule":
		d.CalloutRule = v
	case "spf_fail_accepted":
		d.SPFFailAccepted = v
	case "spf_fail_rescue":
		d.SPFFailRescue = v
	case "rcpt_domains":
		d.RcptDomains = v
	case "rcpt_outcomes":
		d.RcptOutcomes = v
	case "dkim":
		d.DKIM = v
	case "header_from":
		d.HeaderFrom = v
	case "header_from_problem":
		d.HeaderFromProblem = v
	case "dmarc":
		d.DMARC = v
	case "dmarc_policy":
		d.DMARCPolicy = v
	case "dmarc_domain":
		d.DMARCDomain = v
	}
}

func (d *Decision) cached() bool { return isTrue(d.CalloutCached) }

// isTrue reads a logged boolean: true in JSON, "true" in text.
func isTrue(v any) bool { return v == true || v == "true" }

// Replayed is a decision made again.
type Replayed struct {
	QueueID, Sender string
	Old, New        string // accept, reject, tempfail, dry-run
	DecidedBy       string // the check behind New, "" when accepted
	Changed         bool
}

// Replayer decides logged messages again under a configuration, with the
// filter's own policy code and no network.
type Replayer struct {
	rt *runtime
}

// NewReplayer prepares the policy of cfg.
func NewReplayer(cfg *config.Config) *Replayer {
	return &Replayer{rt: New(cfg, Deps{}).rt.Load()}
}

// Replay decides d again. An error means the line cannot be replayed
// (cut short, fields missing, checks the new policy needs were not run).
func (r *Replayer) Replay(d *Decision) (*Replayed, error) {
	switch {
	case d.ClientIP == nil:
		return nil, errors.New("no client_ip field")
	case d.Helo == nil:
		return nil, errors.New("no helo field")
	case d.Sender == nil:
		return nil, errors.New("no sender field")
	case d.Outcome == nil:
		return nil, errors.New("no outcome field")
	}
	ip, err := netip.ParseAddr(*d.ClientIP)
	if err != nil {
		return nil, fmt.Errorf("client_ip: %v", err)
	}
	old, err := oldOutcome(*d.Outcome)
	if err != nil {
		return nil, err
	}
	if d.RcptOutcomes != "" {
		// Per-recipient verdicts: the message's outcome is the worst of
		// them (a line also says "accept" when postmaster got the message
		// that others were refused; older versions logged "aborted" for
		// one refused to every recipient).
		if old, err = worstOutcome(d.RcptOutcomes, d.SPFFailRescue); err != nil {
			return nil, err
		}
	}
	rt := r.rt
	sender, helo := *d.Sender, *d.Helo
	out := &Replayed{QueueID: d.QueueID, Sender: sender, Old: old}
	if rt.skipReason(ip, helo, d.Auth, sender) != "" {
		out.New = "accept"
		out.Changed = out.Old != out.New
		return out, nil
	}
	if d.Skipped != "" {
		return nil, fmt.Errorf("skipped (%s) when logged: no check results to judge now", d.Skipped)
	}
	msg := &message{rt: rt, sender: sender}
	f := &msg.facts
	f.ClientIP, f.HELO, f.Sender = *d.ClientIP, helo, sender
	if d.SPFMail != "" {
		f.SPFMail = &spf.Result{Status: spf.Status(d.SPFMail), Identity: spf.MailFrom, IP: ip, Sender: sender,
			Mechanism: d.SPFMailMechanism, Open: d.SPFMailOpen != "", NoMail: isTrue(d.SPFMailNoMail)}
		if sender == "" {
			f.SPFMail.Identity = spf.HELO // the null sender is judged by HELO
		}
	}
	if d.SPFHelo != "" {
		f.SPFHelo = &spf.Result{Status: spf.Status(d.SPFHelo), Identity: spf.HELO, IP: ip, Sender: "postmaster@" + helo, NoMail: isTrue(d.SPFHeloNoMail)}
	}
	if d.Callout != "" {
		f.Callout = &callout.Result{Class: callout.Class(d.Callout), Address: sender, Cached: d.cached(), Rule: d.CalloutRule}
	}
	if f.SPFMail != nil && f.SPFMail.Status == spf.Fail {
		if strings.HasPrefix(d.SPFFailAccepted, "trusted forwarder") || rt.trustedForwarder(ip, "") != "" {
			msg.forwarder = "network"
		}
	}
	worst := Verdict{Action: config.Accept}
	worstDry := false
	var unreplayable error
	judge := func(dom string) {
		pol := rt.recipients.match(dom)
		v, held := decide(pol, msg, true)
		if held {
			var err error
			if v, err = replayHeld(pol.rescue, v, d); err != nil {
				unreplayable = err
				return
			}
		}
		dry := pol.dryRun && v.Action != config.Accept
		if v.severity() > worst.severity() || (v.severity() == worst.severity() && worstDry && !dry) {
			worst, worstDry = v, dry
		}
	}
	if d.RcptDomains == "" {
		judge("")
	}
	for dom := range strings.FieldsSeq(d.RcptDomains) {
		judge(dom)
	}
	if unreplayable != nil {
		return nil, unreplayable
	}
	switch {
	case worst.Action == config.Accept:
		out.New = "accept"
	case worstDry:
		out.New, out.DecidedBy = "dry-run", worst.Check
	default:
		out.New, out.DecidedBy = string(worst.Action), worst.Check
	}
	out.Changed = out.Old != out.New
	return out, nil
}

// heldEnd is what end of message made of a held SPF fail, as far as the
// line tells: rescued or tempfailed there, or refused (also when the
// message was not held when logged, so its signatures were never
// checked: the cautious reading).
func heldEnd(held Verdict, logged string) Verdict {
	switch logged {
	case "rescued", "quarantined", "accepted":
		return Verdict{Action: config.Accept}
	case "tempfail":
		return Verdict{Action: config.TempFail, Code: 451, Status: "4.7.24", Check: "dkim"}
	}
	return held
}

// oldOutcome maps a logged outcome to accept, reject, tempfail or
// dry-run: messages that ended without our refusal (aborted, superseded,
// disconnected) were accepted as far as we were concerned.
func oldOutcome(o string) (string, error) {
	switch o {
	case "accept", "reject", "tempfail", "dry-run":
		return o, nil
	case "aborted", "superseded", "disconnected":
		return "accept", nil
	}
	return "", fmt.Errorf("unknown outcome %q", o)
}

// outcomeRank orders outcomes: the worst wins.
var outcomeRank = map[string]int{"accept": 0, "dry-run": 1, "tempfail": 2, "reject": 3}

// worstOutcome reads rcpt_outcomes ("domain:action ...").
func worstOutcome(list, rescue string) (string, error) {
	worst := "accept"
	for _, item := range strings.Fields(list) {
		_, action, ok := strings.Cut(item, ":")
		if !ok {
			return "", fmt.Errorf("rcpt_outcomes: %q", item)
		}
		switch action {
		case "dry_run_reject", "dry_run_tempfail":
			action = "dry-run"
		case "held":
			action = string(heldEnd(Verdict{Action: config.Reject}, rescue).Action)
		case "held_dry_run":
			if heldEnd(Verdict{Action: config.Reject}, rescue).Action == config.Accept {
				action = "accept"
			} else {
				action = "dry-run"
			}
		}
		r, ok := outcomeRank[action]
		if !ok {
			return "", fmt.Errorf("rcpt_outcomes: unknown action %q", action)
		}
		if r > outcomeRank[worst] {
			worst = action
		}
	}
	return worst, nil
}

// replayHeld decides a held SPF fail again under the rescue mode the new
// policy gives it, from the facts its line recorded at end of message:
// the signatures (dkim=), the author domain and the DMARC policy found.
// Lines without those facts (not held when logged, or logged before
// senderguard recorded them) replay as before for dkim (the logged
// outcome, refused when there is none) and cannot be replayed for dmarc.
func replayHeld(mode string, held Verdict, d *Decision) (Verdict, error) {
	recorded := d.HeaderFrom != "" || d.HeaderFromProblem != ""
	if !recorded {
		if mode == rescueDMARC {
			return held, errors.New("spf_fail_rescue: dmarc needs the DMARC facts of the message (header_from, dmarc, dkim), which this line lacks: it was not held when logged, or an older senderguard logged it")
		}
		return heldEnd(held, d.SPFFailRescue), nil
	}
	sigs, err := parseSigList(d.DKIM)
	if err != nil {
		return held, err
	}
	if mode == rescueDMARC {
		v, decided, err := replayDMARC(held, d, sigs)
		if err != nil || decided {
			return v, err
		}
	}
	sender := domainOf(*d.Sender)
	var temp *dkim.Signature
	for i := range sigs {
		if !dkim.Aligned(sigs[i].Domain, sender) {
			continue
		}
		switch sigs[i].Status {
		case dkim.Pass:
			return Verdict{Action: config.Accept}, nil
		case dkim.TempError:
			temp = &sigs[i]
		}
	}
	if temp != nil {
		return keyTempfail(temp), nil
	}
	return held, nil
}

// replayDMARC is dmarcEnd on a logged line; pct= is read as sampling the
// message in (the strictest reading: replay cannot know the draw).
func replayDMARC(held Verdict, d *Decision, sigs []dkim.Signature) (Verdict, bool, error) {
	accept := Verdict{Action: config.Accept}
	switch {
	case d.HeaderFromProblem != "":
		return held, true, nil
	case d.DMARC == "temperror":
		return Verdict{Action: config.TempFail, Code: 451, Status: "4.7.24", Check: "dmarc"}, true, nil
	case d.DMARC == "pass":
		return accept, true, nil
	case d.DMARC != "fail":
		return held, false, nil // no policy: the DKIM rescue decides
	}
	rec, err := parsePolicyComment(d.DMARCDomain, d.DMARCPolicy)
	if err != nil {
		return held, false, err
	}
	rec.Org = d.DMARCDomain != d.HeaderFrom
	for _, s := range sigs {
		if s.Status == dkim.TempError && dmarc.Aligned(rec.Strict, s.Domain, d.HeaderFrom) {
			return keyTempfail(&s), true, nil
		}
	}
	if rec.Disposition(0) == dmarc.Reject {
		return Verdict{Action: config.Reject, Code: 550, Status: "5.7.1", Check: "dmarc"}, true, nil
	}
	return accept, true, nil
}

// parseSigList reads the decision line's dkim= ("d/s:status ...").
func parseSigList(list string) ([]dkim.Signature, error) {
	var sigs []dkim.Signature
	for item := range strings.FieldsSeq(list) {
		ds, status, ok := strings.Cut(item, ":")
		dom, sel, ok2 := strings.Cut(ds, "/")
		if !ok || !ok2 {
			return nil, fmt.Errorf("dkim: %q", item)
		}
		sigs = append(sigs, dkim.Signature{Domain: dom, Selector: sel, Status: dkim.Status(status)})
	}
	return sigs, nil
}

// parsePolicyComment reads dmarc_policy ("p=reject sp=none pct=30
// adkim=s", as Record.Comment writes it).
func parsePolicyComment(domain, c string) (*dmarc.Record, error) {
	txt := "v=DMARC1"
	for f := range strings.FieldsSeq(c) {
		txt += "; " + f
	}
	rec, err := dmarc.Parse(domain, txt)
	if err != nil {
		return nil, fmt.Errorf("dmarc_policy %q: %v", c, err)
	}
	return rec, nil
}
