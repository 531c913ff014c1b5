package filter

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/textproto"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-milter"

	"github.com/senderguard/senderguard/checks/callout"
	"github.com/senderguard/senderguard/checks/spf"
	"github.com/senderguard/senderguard/config"
)

// connState is what the connection has told us; it outlives messages.
type connState struct {
	ip       netip.Addr
	name     string // client host name as the MTA resolved it
	helo     string
	macros   map[string]string // saved from connect and HELO
	heloSPF  *spf.Result       // cached for this IP and HELO
	connects int
}

// message is one MAIL FROM transaction.
type message struct {
	rt       *runtime
	start    time.Time
	sender   string
	args     []string
	macros   map[string]string // saved from MAIL, RCPT, EOH, EOM
	skip     string
	facts    Facts
	verdict  Verdict
	applied  string // stage where a tempfail/reject was sent
	logged   bool
	arSeen   int   // Authentication-Results fields seen
	forgedAR []int // their 1-based indices that claim our authserv-id
}

// session follows one SMTP connection through the milter stages. go-milter
// calls it from one goroutine per connection.
type session struct {
	f        *Filter
	conn     connState
	msg      *message
	mailArgs func() []string // ESMTP args of the last MAIL, from the wire
}

var _ milter.Milter = (*session)(nil)

// respContinue is the only simple response sessions give: any other makes
// go-milter replace the session value and lose the connection's state.
const respContinue = milter.RespContinue

// saveMacros copies what a stage delivered: go-milter replaces its macro
// map at every macro packet.
func saveMacros(dst map[string]string, src map[string]string) {
	for k, v := range src {
		dst[k] = v
	}
}

func (s *session) Connect(host, family string, port uint16, addr net.IP, m *milter.Modifier) (milter.Response, error) {
	// Postfix XCLIENT sends a second connect in the same session: it wins.
	s.conn = connState{name: host, macros: map[string]string{}, connects: s.conn.connects + 1}
	s.msg = nil
	if ip, ok := netip.AddrFromSlice(addr); ok {
		s.conn.ip = ip.Unmap()
	}
	saveMacros(s.conn.macros, m.Macros)
	if s.conn.connects == 1 && s.f.deps.Metrics != nil {
		s.f.deps.Metrics.Sessions.Inc()
	}
	return respContinue, nil
}

func (s *session) Helo(name string, m *milter.Modifier) (milter.Response, error) {
	if s.conn.macros == nil {
		s.conn.macros = map[string]string{}
	}
	s.conn.helo = name
	s.conn.heloSPF = nil
	saveMacros(s.conn.macros, m.Macros)
	return respContinue, nil
}

func (s *session) MailFrom(from string, m *milter.Modifier) (milter.Response, error) {
	if s.msg != nil && !s.msg.logged {
		s.logDecision("superseded")
	}
	rt := s.f.rt.Load()
	msg := &message{rt: rt, start: time.Now(), sender: from, macros: map[string]string{}}
	if s.mailArgs != nil {
		msg.args = s.mailArgs()
	}
	saveMacros(msg.macros, m.Macros)
	s.msg = msg
	if mt := s.f.deps.Metrics; mt != nil {
		mt.Messages.Inc()
	}
	msg.skip = rt.skipReason(s, msg)
	if msg.skip != "" {
		return respContinue, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), rt.cfg.StageBudget.D())
	defer cancel()
	s.runChecks(ctx, rt, msg)
	msg.verdict = rt.policy.Decide(&msg.facts)
	if rt.cfg.RejectAt == "mail" || msg.verdict.Action == config.Accept {
		return s.apply("mail"), nil
	}
	return respContinue, nil
}

// runChecks runs SPF on both identities at once, then the callout when SPF
// leaves the sender unproven.
func (s *session) runChecks(ctx context.Context, rt *runtime, msg *message) {
	cfg := rt.cfg
	f := &msg.facts
	f.ClientIP, f.HELO, f.Sender = s.conn.ip.String(), s.conn.helo, msg.sender
	var wg sync.WaitGroup
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
		return
	}
	s.runCallout(ctx, rt, msg)
}

func (s *session) runCallout(ctx context.Context, rt *runtime, msg *message) {
	v := s.f.deps.Callout
	if v == nil || !rt.cfg.Callout.Enabled {
		return
	}
	f := &msg.facts
	if f.SPFMail != nil && f.SPFMail.Status == spf.Fail {
		return // already decided by SPF; never probe for a forged sender
	}
	start := time.Now()
	// RFC 7505: a null MX refuses mail, whatever SPF said.
	if null, known := v.NullMX(ctx, domainOf(msg.sender)); known && null {
		f.Callout = &callout.Result{Class: callout.NullMX, Address: msg.sender}
		s.observe("callout", string(callout.NullMX), start)
		return
	}
	if f.SPFMail == nil || !rt.probeOn[f.SPFMail.Status] {
		return
	}
	f.Callout = v.Verify(ctx, msg.sender)
	s.observe("callout", string(f.Callout.Class), start)
}

func (s *session) observe(check, result string, start time.Time) {
	if mt := s.f.deps.Metrics; mt != nil {
		mt.CheckResults.WithLabelValues(check, result).Inc()
		mt.CheckDuration.WithLabelValues(check).Observe(since(start))
	}
}

// apply answers the MTA at stage with the message's verdict.
func (s *session) apply(stage string) milter.Response {
	msg := s.msg
	v := msg.verdict
	mt := s.f.deps.Metrics
	if v.Action == config.Accept || v.Action == "" {
		return respContinue
	}
	if msg.rt.cfg.DryRun {
		if !msg.logged && mt != nil {
			mt.Verdicts.WithLabelValues(stage, "dry_run_"+string(v.Action)).Inc()
		}
		if !msg.logged {
			msg.applied = stage
			s.logDecision("dry-run")
		}
		return respContinue
	}
	if mt != nil {
		mt.Verdicts.WithLabelValues(stage, string(v.Action)).Inc()
	}
	if !msg.logged {
		msg.applied = stage
		s.logDecision(string(v.Action))
	}
	return milter.NewResponseStr('y', v.Reply())
}

func (s *session) RcptTo(rcpt string, m *milter.Modifier) (milter.Response, error) {
	msg := s.msg
	if msg == nil {
		return respContinue, nil
	}
	saveMacros(msg.macros, m.Macros)
	if msg.skip != "" || msg.verdict.Action == config.Accept || msg.verdict.Action == "" {
		return respContinue, nil
	}
	// RFC 5321 §4.5.1: postmaster (and abuse) must always be reachable.
	local := strings.ToLower(localPart(rcpt))
	for _, r := range msg.rt.cfg.AlwaysAcceptRecipients {
		if strings.EqualFold(r, local) || strings.EqualFold(r, rcpt) {
			return respContinue, nil
		}
	}
	return s.apply("rcpt"), nil
}

func (s *session) Header(name, value string, m *milter.Modifier) (milter.Response, error) {
	msg := s.msg
	if msg == nil || !strings.EqualFold(name, "Authentication-Results") {
		return respContinue, nil
	}
	msg.arSeen++
	if strings.EqualFold(authservIDOf(value), msg.rt.authservID) {
		msg.forgedAR = append(msg.forgedAR, msg.arSeen)
	}
	return respContinue, nil
}

func (s *session) Headers(h textproto.MIMEHeader, m *milter.Modifier) (milter.Response, error) {
	if s.msg != nil {
		saveMacros(s.msg.macros, m.Macros)
	}
	return respContinue, nil
}

func (s *session) BodyChunk(chunk []byte, m *milter.Modifier) (milter.Response, error) {
	return respContinue, nil
}

// Body is the end of the message: remove forged verdicts, add ours, log.
// It answers continue, which accepts the message and, unlike accept, keeps
// this session value (go-milter starts a new one after accept).
func (s *session) Body(m *milter.Modifier) (milter.Response, error) {
	msg := s.msg
	if msg == nil {
		return respContinue, nil
	}
	saveMacros(msg.macros, m.Macros)
	if msg.rt.cfg.RemoveForgedAuthResults {
		for i := len(msg.forgedAR) - 1; i >= 0; i-- {
			if err := m.ChangeHeader(msg.forgedAR[i], "Authentication-Results", ""); err != nil {
				return nil, err
			}
		}
	}
	if msg.skip == "" {
		for _, h := range s.headers() {
			if err := m.InsertHeader(1, h.name, h.value); err != nil {
				return nil, err
			}
		}
	}
	if !msg.logged {
		if mt := s.f.deps.Metrics; mt != nil {
			action := "accept"
			if msg.skip != "" {
				action = "skip"
			}
			mt.Verdicts.WithLabelValues("eom", action).Inc()
		}
		s.logDecision("accept")
	}
	s.msg = nil
	return respContinue, nil
}

// closed runs when the MTA's connection ends: a message it never ended
// (no abort, no end of message) still gets its decision line.
func (s *session) closed() {
	if s.msg != nil && !s.msg.logged {
		s.logDecision("disconnected")
	}
	s.msg = nil
}

func (s *session) Abort(m *milter.Modifier) error {
	if s.msg != nil && !s.msg.logged {
		s.logDecision("aborted")
	}
	s.msg = nil
	return nil
}
