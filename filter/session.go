package filter

import (
	"context"
	"fmt"
	"net/netip"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/d--j/go-milter"

	"github.com/senderguard/senderguard/checks/callout"
	"github.com/senderguard/senderguard/checks/dkim"
	"github.com/senderguard/senderguard/checks/spf"
	"github.com/senderguard/senderguard/config"
)

// connState is what the connection has told us; it outlives messages.
type connState struct {
	ip       netip.Addr
	name     string // client host name as the MTA resolved it
	helo     string
	mta      string      // macro j
	daemon   string      // macro {daemon_name}
	heloSPF  *spf.Result // cached for this IP and HELO
	connects int
}

// message is one MAIL FROM transaction.
type message struct {
	rt       *runtime
	start    time.Time
	sender   string
	args     string // ESMTP arguments of MAIL FROM
	queueID  string // macro i: at MAIL (Sendmail) or from end of headers (Postfix)
	auth     string // macro {auth_authen}
	skip     string
	facts    Facts
	verdict  Verdict
	applied  string // stage where a tempfail/reject was sent
	logged   bool
	arSeen   int   // Authentication-Results fields seen
	forgedAR []int // their 1-based indices that claim our authserv-id
	// receivedSPF counts incoming Received-SPF fields (removed with the
	// forged Authentication-Results).
	receivedSPF int

	// The transaction's recipients all get one end (rescue.go): plain, or
	// a held SPF fail that a DKIM signature may rescue at end of message.
	mode       txMode
	held       *Verdict
	forwarder  string // why the client is a trusted forwarder, "" if not
	dkim       *dkim.Check
	dkimCancel context.CancelFunc
	rescue     *rescue
	sigs       []dkim.Signature // a held message's signatures, as verified
	// froms are a held message's From field values (at most two kept,
	// each bounded) and fromCount how many there were: DMARC's author.
	froms       []string
	fromCount   int
	dmarc       *dmarcCheck // what DMARC says of a held message
	dmarcLookup *dmarcLookup
	// quarantine, when set, is the reason a held message is accepted
	// into the MTA's quarantine (DMARC p=quarantine).
	quarantine string

	// nullMX is the null-MX answer asked for beside SPF (runChecks), when
	// it was.
	nullMX nullMXAnswer

	// What each recipient got.
	outcomes    []string // "domain:action", in RCPT order
	rcptDomains []string // each recipient domain once, for the decision line (replay)
	wouldReject []string // dry-run recipients' refusals, for X-Senderguard
	wouldBe     Verdict  // the worst of them, for the decision line
	wouldStage  string   // where it would have been given
}

// session follows one milter connection through the stages; the library
// calls it from one goroutine per connection. It keeps only what it
// needs of what the MTA sends (never the header section), so its memory
// does not grow with the message.
type session struct {
	f    *Filter
	conn connState
	msg  *message
}

var _ milter.Milter = (*session)(nil)

// respContinue goes on to the next stage; at end of message the library
// turns it into accept.
var respContinue = milter.RespContinue

// recoverTo turns a panic in a callback (a bug) into a temporary failure
// of this SMTP session: the library does not recover panics, and one
// session must never end the process.
func (s *session) recoverTo(resp **milter.Response, err *error) {
	if p := recover(); p != nil {
		s.f.milterError("panic", "callback panicked: %v\n%s", p, debug.Stack())
		*resp, *err = milter.RespTempFail, fmt.Errorf("internal error: %v", p)
	}
}

func (s *session) NewConnection(m milter.Modifier) error {
	s.conn, s.msg = connState{}, nil
	return nil
}

func (s *session) Connect(host, family string, port uint16, addr string, m milter.Modifier) (resp *milter.Response, err error) {
	defer s.recoverTo(&resp, &err)
	// Postfix XCLIENT sends a second connect in the same session: it wins.
	s.conn = connState{name: host, mta: m.Get("j"), daemon: m.Get("{daemon_name}"), connects: s.conn.connects + 1}
	s.msg = nil
	if ip, perr := netip.ParseAddr(addr); perr == nil {
		s.conn.ip = ip.Unmap()
	}
	if s.conn.connects == 1 {
		s.f.deps.Metrics.Sessions.Inc()
	}
	return respContinue, nil
}

func (s *session) Helo(name string, m milter.Modifier) (*milter.Response, error) {
	s.conn.helo = name
	s.conn.heloSPF = nil
	return respContinue, nil
}

func (s *session) MailFrom(from, esmtpArgs string, m milter.Modifier) (resp *milter.Response, err error) {
	defer s.recoverTo(&resp, &err)
	s.endMessage("superseded")
	rt := s.f.rt.Load()
	msg := &message{rt: rt, start: time.Now(), sender: from, args: esmtpArgs, queueID: m.Get("i"), auth: m.Get("{auth_authen}")}
	s.msg = msg
	s.f.deps.Metrics.Messages.Inc()
	msg.skip = rt.skipReason(s.conn.ip, s.conn.helo, msg.auth, msg.sender)
	if msg.skip != "" {
		return respContinue, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), rt.cfg.StageBudget.D())
	defer cancel()
	if msg.skip = s.dnsWhitelisted(ctx, rt); msg.skip != "" {
		return respContinue, nil
	}
	s.runChecks(ctx, rt, msg)
	if f := msg.facts.SPFMail; f != nil && f.Status == spf.Fail {
		if msg.forwarder = rt.trustedForwarder(s.conn.ip, s.conn.name); msg.forwarder != "" {
			s.countRescue("trusted_forwarder")
		}
	}
	msg.verdict = Verdict{Action: config.Accept}
	if pol := rt.recipients.sole(); pol != nil && rt.cfg.RejectAt == "mail" {
		// Every recipient will get this verdict: a refusal is given now.
		return s.mailVerdict(pol), nil
	}
	return respContinue, nil
}

// mailVerdict gives at MAIL the verdict pol will give every recipient
// (reject_at: mail). A held SPF fail waits for end of message and a
// dry-run refusal is only noted: the recipients join them at RCPT.
func (s *session) mailVerdict(pol *rcptPolicy) *milter.Response {
	msg := s.msg
	v, held := s.judge(pol)
	switch {
	case held || v.Action == config.Accept:
		return respContinue
	case pol.dryRun:
		msg.wouldRefuse(v, "mail", pol, "")
		return respContinue
	}
	msg.verdict, msg.applied = v, "mail"
	s.logDecision("")
	return replyResponse(v)
}

// runChecks runs SPF on both identities at once; the callout waits for a
// recipient whose policy wants it (judge).
func (s *session) runChecks(ctx context.Context, rt *runtime, msg *message) {
	cfg := rt.cfg
	f := &msg.facts
	f.ClientIP, f.HELO, f.Sender = s.conn.ip.String(), s.conn.helo, msg.sender
	var wg sync.WaitGroup
	if v := s.f.deps.Callout; v != nil && rt.recipients.allCallout && msg.sender != "" {
		// Every recipient's policy runs the null-MX check, which needs the
		// domain's MX: ask beside the SPF record, so that a cold cache
		// waits for one round trip, not two; runCallout uses the answer.
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { recover() }() // unanswered then: runCallout asks again
			null, known := v.NullMX(ctx, domainOf(msg.sender))
			msg.nullMX = nullMXAnswer{asked: true, null: known && null}
		}()
	}
	if cfg.SPF.CheckHELO && s.conn.helo != "" && s.conn.heloSPF == nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// go-milter recovers panics in the session's goroutine only.
			defer func() {
				if p := recover(); p != nil {
					s.f.deps.Log.Error("HELO check panicked", "panic", fmt.Sprint(p))
					f.SPFHelo = nil
				}
			}()
			start := time.Now()
			r := s.f.deps.SPF.CheckHELO(ctx, s.conn.ip, s.conn.helo)
			s.observe("spf_helo", string(r.Status), start)
			if r.Status != spf.TempError {
				s.conn.heloSPF = &r // a temporary failure is asked again next time
			}
			f.SPFHelo = &r
		}()
	} else if cfg.SPF.CheckHELO {
		f.SPFHelo = s.conn.heloSPF
	}
	if cfg.SPF.CheckMailFrom && msg.sender != "" {
		start := time.Now()
		r := s.f.deps.SPF.CheckMailFrom(ctx, s.conn.ip, s.conn.helo, msg.sender)
		s.observe("spf_mailfrom", string(r.Status), start)
		f.SPFMail = &r
	}
	wg.Wait()
	if msg.sender == "" {
		// RFC 7208 §2.4: for the null reverse path the HELO result is the
		// MAIL FROM result; never probed.
		f.SPFMail = f.SPFHelo
		if f.SPFMail == nil && cfg.SPF.CheckMailFrom && s.conn.helo != "" {
			r := s.f.deps.SPF.CheckMailFrom(ctx, s.conn.ip, s.conn.helo, "")
			f.SPFMail = &r
		}
	}
}

// runCallout runs the null-MX check, then a probe when probeOn covers the
// SPF result; each at most once per message, within the stage budget.
func (s *session) runCallout(msg *message, probeOn map[spf.Status]bool) {
	v := s.f.deps.Callout
	f := &msg.facts
	if v == nil || msg.sender == "" || f.Callout != nil {
		return
	}
	if f.SPFMail != nil && f.SPFMail.Status == spf.Fail {
		return // already decided by SPF; never probe for a forged sender
	}
	probe := wantsProbe(probeOn, f.SPFMail) && !matchName(msg.rt.skipProbe, domainOf(msg.sender), true)
	if msg.nullMX.asked && !msg.nullMX.null && !probe {
		return // nothing to ask: no context, no timer
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), msg.rt.cfg.StageBudget.D())
	defer cancel()
	// RFC 7505: a null MX refuses mail, whatever SPF said. Asked once
	// per message (beside SPF, or here).
	if !msg.nullMX.asked {
		null, known := v.NullMX(ctx, domainOf(msg.sender))
		msg.nullMX = nullMXAnswer{asked: true, null: known && null}
	}
	if msg.nullMX.null {
		f.Callout = &callout.Result{Class: callout.NullMX, Address: msg.sender}
		s.observe("callout", string(callout.NullMX), start)
		return
	}
	if !probe {
		return
	}
	f.Callout = v.Verify(ctx, msg.sender)
	s.observe("callout", string(f.Callout.Class), start)
}

// nullMXAnswer is the outcome of the RFC 7505 check: null is true only
// for a known null MX.
type nullMXAnswer struct{ asked, null bool }

// wantsProbe reports whether an SPF result leads to a probe: one that
// probeOn lists, or a pass from a term that authorizes every address
// (+all), which is no evidence at all.
func wantsProbe(probeOn map[spf.Status]bool, r *spf.Result) bool {
	return r != nil && (probeOn[r.Status] || (r.Status == spf.Pass && r.Open))
}

func (s *session) observe(check, result string, start time.Time) {
	s.f.deps.Metrics.CheckResults.WithLabelValues(check, result).Inc()
	s.f.deps.Metrics.CheckDuration.WithLabelValues(check).Observe(since(start))
}

func (s *session) RcptTo(rcpt, esmtpArgs string, m milter.Modifier) (resp *milter.Response, err error) {
	defer s.recoverTo(&resp, &err)
	msg := s.msg
	if msg == nil || msg.skip != "" {
		return respContinue, nil
	}
	domain := strings.ToLower(domainOf(rcpt))
	msg.noteRcptDomain(domain)
	// RFC 5321 §4.5.1: postmaster (and abuse) must always be reachable.
	local := strings.ToLower(localPart(rcpt))
	for _, r := range msg.rt.cfg.AlwaysAcceptRecipients {
		if strings.EqualFold(r, local) || strings.EqualFold(r, rcpt) {
			return s.join(modePlain, nil), nil
		}
	}
	return s.rcptVerdict(domain), nil
}

func (s *session) Data(m milter.Modifier) (*milter.Response, error) { return respContinue, nil }

// Header notes where the Authentication-Results fields are that claim our
// authserv-id; nothing else of the header section is kept.
func (s *session) Header(name, value string, m milter.Modifier) (*milter.Response, error) {
	msg := s.msg
	if msg != nil && msg.mode.held() {
		s.startDKIM()
		msg.dkim.Header(name, value, leadingSpace(m))
		if strings.EqualFold(name, "From") {
			msg.noteFrom(value)
		}
	}
	if msg != nil && strings.EqualFold(name, "Received-SPF") {
		// It names no authserv-id and DMARC verifiers trust it blindly:
		// every incoming one is someone else's claim.
		msg.receivedSPF++
		return respContinue, nil
	}
	if msg == nil || !strings.EqualFold(name, "Authentication-Results") {
		return respContinue, nil
	}
	msg.arSeen++
	if strings.EqualFold(authservIDOf(value), msg.rt.authservID) && len(msg.forgedAR) < maxForged {
		msg.forgedAR = append(msg.forgedAR, msg.arSeen)
	}
	return respContinue, nil
}

// maxForged bounds the forged fields we remember (and remove) per message.
const maxForged = 100

func (s *session) Headers(m milter.Modifier) (resp *milter.Response, err error) {
	defer s.recoverTo(&resp, &err)
	if s.msg != nil {
		s.noteQueueID(m)
		if s.msg.mode.held() {
			s.startDMARC() // the From field is known: look its policy up while the body streams
		}
	}
	return respContinue, nil
}

func (s *session) noteQueueID(m milter.Modifier) {
	if id := m.Get("i"); id != "" {
		s.msg.queueID = id
	}
}

// BodyChunk feeds a held message's body to its DKIM check; any other
// message's body is skipped (the MTA stops sending it).
func (s *session) BodyChunk(chunk []byte, m milter.Modifier) (*milter.Response, error) {
	if msg := s.msg; msg != nil && msg.mode.held() {
		s.startDKIM()
		msg.dkim.Body(chunk)
		return respContinue, nil
	}
	if m.Protocol()&milter.OptSkip != 0 {
		return milter.RespSkip, nil
	}
	return respContinue, nil
}

func (s *session) Unknown(cmd string, m milter.Modifier) (*milter.Response, error) {
	return respContinue, nil
}

// EndOfMessage removes forged verdicts, adds ours, and logs.
func (s *session) EndOfMessage(m milter.Modifier) (resp *milter.Response, err error) {
	defer s.recoverTo(&resp, &err)
	msg := s.msg
	if msg == nil {
		return respContinue, nil
	}
	s.noteQueueID(m)
	if msg.mode.held() {
		v := s.endHeld()
		if msg.mode == modeHeldDMARCDry {
			// Dry-run: what the policy decided is noted, not done.
			if v.Action != config.Accept {
				// One verdict for the transaction, whoever its recipients.
				msg.wouldRefuse(v, "eom", msg.rt.recipients.def, "")
			}
			if msg.quarantine != "" {
				msg.noteWould("would-quarantine (" + msg.quarantine + ")")
				msg.quarantine = ""
			}
			v = Verdict{Action: config.Accept}
		}
		if v.Action != config.Accept {
			msg.verdict, msg.applied = v, "eom"
			s.logDecision("")
			return replyResponse(v), nil
		}
	}
	if msg.quarantine != "" {
		if err := s.quarantine(m); err != nil {
			return nil, err
		}
	}
	if msg.rt.cfg.RemoveForgedAuthResults && m.Actions()&milter.OptChangeHeader != 0 {
		for i := len(msg.forgedAR) - 1; i >= 0; i-- {
			if err := m.ChangeHeader(msg.forgedAR[i], "Authentication-Results", ""); err != nil {
				return nil, err
			}
		}
		for i := min(msg.receivedSPF, maxForged); i >= 1; i-- {
			if err := m.ChangeHeader(i, "Received-SPF", ""); err != nil {
				return nil, err
			}
		}
	}
	if msg.skip == "" && m.Actions()&milter.OptAddHeader != 0 {
		// With SMFIP_HDR_LEADSPC the MTA also writes our values as they
		// are: the space after the colon is ours to send.
		lead := ""
		if leadingSpace(m) {
			lead = " "
		}
		for _, h := range s.headers() {
			if err := m.InsertHeader(1, h.name, lead+h.value); err != nil {
				return nil, err
			}
		}
	}
	if !msg.logged {
		s.logDecision("accept")
	}
	s.msg = nil
	return respContinue, nil
}

// Cleanup runs when the MTA's connection ends: a message it never ended
// (no abort, no end of message) still gets its decision line.
func (s *session) Cleanup(m milter.Modifier) {
	s.endMessage("disconnected")
}

func (s *session) Abort(m milter.Modifier) error {
	s.endMessage("aborted")
	return nil
}

// endMessage ends the current message, if any, before its end of
// message: its decision line says how (unless written already), and an
// unfinished DKIM check is abandoned.
func (s *session) endMessage(end string) {
	s.logDecision(end)
	s.msg.endDKIM()
	s.msg.endDMARC()
	s.msg = nil
}

// replyResponse is the milter reply carrying v's SMTP reply; a reply the
// library cannot format still refuses, with the MTA's own text.
func replyResponse(v Verdict) *milter.Response {
	r, err := milter.RejectWithCodeAndReason(uint16(v.Code), v.Status+" "+v.Text)
	if err == nil {
		return r
	}
	if v.Action == config.Reject {
		return milter.RespReject
	}
	return milter.RespTempFail
}

// noteRcptDomain remembers a recipient's domain (lower case) for the
// decision line.
func (msg *message) noteRcptDomain(d string) {
	if d == "" || len(msg.rcptDomains) >= maxOutcomes || slices.Contains(msg.rcptDomains, d) {
		return
	}
	msg.rcptDomains = append(msg.rcptDomains, d)
}
