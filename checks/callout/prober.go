package callout

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/senderguard/senderguard/checks/resolver"
	"github.com/senderguard/senderguard/internal/quickack"
)

// Dialer opens TCP connections; tests and network namespaces replace it.
type Dialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

// Prober runs one uncached probe. Its fields are read-only once in use.
type Prober struct {
	Resolver     resolver.Querier
	Dialer       Dialer // nil: net.Dialer
	Port         int    // 25
	Helo         string // our EHLO name
	MailFrom     string // reverse path; "" is the null sender <>
	AllowPrivate bool   // allow loopback, private and link-local mail hosts
	StepTimeout  time.Duration
	CatchAllTest bool // also ask for a random local part
	// TLS is the STARTTLS policy ("" means may); RootCAs, when set,
	// replaces the system's roots in verify mode (tests).
	TLS     TLSMode
	RootCAs *x509.CertPool
	Trace   func(string)
	// Gate, when set, admits each connection to a mail host and leaves
	// out hosts whose breaker is open.
	Gate *Gate
	// SourceIPv4 and SourceIPv6, when valid, are the local addresses
	// probes of mail hosts of that family bind (callout.source_ipv4/6):
	// an address of the prober's own, so that a blocklisting for probing
	// never hits the MTA's outgoing mail. A Dialer replaces them.
	SourceIPv4, SourceIPv6 netip.Addr
	// SkipMXHosts are mail host name patterns ("*.example.net") whose
	// domains are never probed: providers that ban probers or accept
	// every address.
	SkipMXHosts []string
	// Pause, when set, stops every probe while it says so (a source
	// address is on a blocklist).
	Pause Pauser
	// OnConnect, when set, is told the local address of every connection
	// made to a mail host.
	OnConnect func(local netip.Addr)
}

// maxAddressTries bounds the connections of one probe.
const maxAddressTries = 5

// mailHost is one MX target with its usable addresses.
type mailHost struct {
	name  string
	addrs []netip.Addr
}

func (p *Prober) tracef(format string, args ...any) {
	if p.Trace != nil {
		p.Trace(fmt.Sprintf(format, args...))
	}
}

// Probe validates addr and classifies it by asking its domain's mail
// hosts, within ctx.
func (p *Prober) Probe(ctx context.Context, addr string) *Result {
	a, err := ParseAddress(addr)
	if err != nil {
		return &Result{Class: Unknown, Address: addr, Err: err}
	}
	r := p.ProbeAddress(ctx, a)
	r.Address = addr
	return r
}

// ProbeAddress classifies an address that ParseAddress already accepted,
// unless it may not be probed now (paused, a skipped mail host).
func (p *Prober) ProbeAddress(ctx context.Context, a Address) *Result {
	if r := p.precheck(ctx, a); r != nil {
		r.Address = a.String()
		return r
	}
	return p.probeChecked(ctx, a)
}

// probeChecked classifies a after precheck let it through.
func (p *Prober) probeChecked(ctx context.Context, a Address) *Result {
	start := time.Now()
	res := p.probe(ctx, a)
	res.Address = a.String()
	res.Duration = time.Since(start)
	return res
}

func (p *Prober) probe(ctx context.Context, a Address) *Result {
	hosts, class, err := p.mailHosts(ctx, a.Domain)
	if class != "" {
		return &Result{Class: class, Err: err}
	}
	var last *Result
	tries := 0
hosts:
	for _, h := range hosts {
		for _, ip := range h.addrs {
			// Like Postfix's smtp_mx_address_limit: a domain with many
			// hosts and addresses gets a bounded number of attempts.
			if tries++; tries > maxAddressTries {
				break hosts
			}
			if ctx.Err() != nil {
				return &Result{Class: Unknown, Host: h.name, Err: fmt.Errorf("probe budget ended: %w", ctx.Err())}
			}
			r := p.gatedDialogue(ctx, a, h.name, ip, false)
			if r.tlsFailed() && p.TLS != TLSVerify && tries < maxAddressTries {
				// As Postfix does after a TLS failure: once more, in
				// plaintext, with this host.
				tries++
				p.tracef("%s: TLS failed (%s); once more in plaintext", h.name, r.Evidence())
				r = p.gatedDialogue(ctx, a, h.name, ip, true)
				r.TLS = TLSFailedThenPlain
			}
			// A 4xx at RCPT is the answer for now: an MTA would not try
			// the next host either.
			if r.Class != Unknown || r.refused || r.greylisted() {
				return r
			}
			last = r // try the next address or host
		}
	}
	if last == nil {
		return &Result{Class: Unknown, Err: errors.New("no mail host address may be probed")}
	}
	return last
}

// mailHosts resolves the mail hosts of domain (RFC 5321 §5.1): MX by
// preference, equal preferences shuffled; no MX means the domain's own
// address; a null MX (RFC 7505) means no mail at all.
func (p *Prober) mailHosts(ctx context.Context, domain string) ([]mailHost, Class, error) {
	ans, err := p.Resolver.Query(ctx, domain, dns.TypeMX)
	if err != nil {
		return nil, Unknown, fmt.Errorf("MX %s: %w", domain, err)
	}
	if ans.Rcode == resolver.NXDomain {
		return nil, NoMailHost, fmt.Errorf("%s does not exist", domain)
	}
	if ans.NullMX() {
		return nil, NullMX, fmt.Errorf("%s publishes a null MX", domain)
	}
	mxs := append([]resolver.MX(nil), ans.MX...)
	if len(mxs) == 0 {
		mxs = []resolver.MX{{Host: domain}} // implicit MX
	}
	shuffle(mxs)
	sort.SliceStable(mxs, func(i, j int) bool { return mxs[i].Pref < mxs[j].Pref })
	if len(mxs) > 10 {
		mxs = mxs[:10] // bound the work one sender can cause
	}
	var hosts []mailHost
	var lookupErr error
	blocked, broken := 0, 0
	var names []string
	for _, mx := range mxs {
		if mx.Host == "" {
			continue
		}
		if p.Gate != nil && p.Gate.Broken(mx.Host) {
			p.tracef("%s refused our probes recently; skipped", mx.Host)
			broken++
			continue
		}
		names = append(names, mx.Host)
	}
	answers := p.lookupAddrs(ctx, names)
	for i, name := range names {
		h := mailHost{name: name}
		for _, ans := range answers[i] {
			a, err := ans.a, ans.err
			if err != nil {
				lookupErr = err
				continue
			}
			for _, ip := range a.Addrs {
				if !p.AllowPrivate && !Public(ip) {
					blocked++
					p.tracef("%s: %s is not a public address; not probed", name, ip)
					continue
				}
				h.addrs = append(h.addrs, ip)
			}
		}
		if len(h.addrs) > 0 {
			hosts = append(hosts, h)
		}
	}
	switch {
	case len(hosts) > 0:
		return hosts, "", nil
	case broken > 0:
		return nil, Unknown, fmt.Errorf("mail hosts of %s refused our probes recently", domain)
	case blocked > 0:
		return nil, Unknown, fmt.Errorf("mail hosts of %s resolve only to non-public addresses", domain)
	case lookupErr != nil:
		return nil, Unknown, lookupErr
	}
	return nil, NoMailHost, fmt.Errorf("no address for any mail host of %s", domain)
}

type lookup struct {
	a   *resolver.Answer
	err error
}

// lookupAddrs asks for the A and AAAA records of every name at once: a
// cold cache then costs one round trip for all the mail hosts, not two
// per host.
func (p *Prober) lookupAddrs(ctx context.Context, names []string) [][2]lookup {
	out := make([][2]lookup, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		for j, qt := range [2]uint16{dns.TypeA, dns.TypeAAAA} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				a, err := p.Resolver.Query(ctx, name, qt)
				out[i][j] = lookup{a, err}
			}()
		}
	}
	wg.Wait()
	return out
}

func shuffle(mxs []resolver.MX) {
	for i := len(mxs) - 1; i > 0; i-- {
		n, _ := rand.Int(rand.Reader, big.NewInt(int64(i+1)))
		j := int(n.Int64())
		mxs[i], mxs[j] = mxs[j], mxs[i]
	}
}

var nonPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"), netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("192.0.0.0/24"), netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("240.0.0.0/4"), netip.MustParsePrefix("64:ff9b:1::/48"),
}

// Public reports whether ip may be probed without -callout-allow-private:
// not loopback, private, link-local, multicast, unspecified or reserved.
func Public(ip netip.Addr) bool {
	ip = ip.Unmap()
	if !ip.IsValid() || ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() {
		return false
	}
	for _, p := range nonPublic {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

// refusedBeforeRcpt ends a dialogue refused at the banner, EHLO/HELO or
// MAIL FROM:<>: a 5xx there refused the prober itself (never a verdict on
// the address), a 4xx (421 and the like) lets the next host try, a demand
// for TLS we could not meet is neither.
func refusedBeforeRcpt(r *Result, step string, rep *Reply) *Result {
	_, r.Rule, r.refused = classify(beforeRcptRules, rep)
	r.Step, r.Reply = step, rep
	return r
}

// gatedDialogue runs one SMTP conversation with ip through the Gate.
func (p *Prober) gatedDialogue(ctx context.Context, a Address, host string, ip netip.Addr, plain bool) *Result {
	if p.Gate == nil {
		return p.dialogue(ctx, a, host, ip, nil, plain)
	}
	dctx, abort := context.WithCancel(ctx)
	defer abort()
	adm, refused := p.Gate.Admit(ctx, ip, host, abort)
	if adm == nil {
		p.tracef("%s (%s): not probed: %s limit reached", host, ip, refused)
		return &Result{Class: Unknown, Host: host, Err: fmt.Errorf("not probed: %s limit reached", refused)}
	}
	r := p.dialogue(dctx, a, host, ip, adm, plain)
	adm.done(r)
	return r
}

// dialogue runs one SMTP conversation with ip: connect, greet, then ask
// for the address; each step its own function below.
func (p *Prober) dialogue(ctx context.Context, a Address, host string, ip netip.Addr, adm *admission, plain bool) *Result {
	r := &Result{Class: Unknown, Host: host, TLS: TLSNone}
	step := p.stepTimeout(ctx)
	conn, target, err := p.connect(ctx, ip, step)
	if err != nil {
		r.Step, r.Err = "connect", err
		return r
	}
	d := &dialog{p: p, c: newSMTPConn(conn, step, p.Trace), conn: conn, r: r, target: target, step: step}
	defer func() { d.c.close() }() // the TLS connection, once there is one
	// Close the connection when the whole probe's budget ends.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if failed := d.greet(ctx, host, adm, plain, a.UTF8Local); failed != nil {
		return failed
	}
	return d.ask(a)
}

// stepTimeout bounds each read and write: StepTimeout (10 s), and never
// past ctx's deadline.
func (p *Prober) stepTimeout(ctx context.Context) time.Duration {
	step := p.StepTimeout
	if step <= 0 {
		step = 10 * time.Second
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < step {
		step = max(time.Until(dl), time.Millisecond)
	}
	return step
}

// connect opens the TCP connection to ip's SMTP port within one step.
func (p *Prober) connect(ctx context.Context, ip netip.Addr, step time.Duration) (net.Conn, string, error) {
	d := p.Dialer
	if d == nil {
		nd := &net.Dialer{}
		if src := p.source(ip); src.IsValid() {
			nd.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
		}
		d = nd
	}
	port := p.Port
	if port == 0 {
		port = 25
	}
	target := net.JoinHostPort(ip.String(), strconv.Itoa(port))
	dctx, cancel := context.WithTimeout(ctx, step)
	defer cancel()
	conn, err := d.DialContext(dctx, "tcp", target)
	if err != nil {
		return nil, target, fmt.Errorf("%s: %w", target, err)
	}
	if p.OnConnect != nil {
		if ap, err := netip.ParseAddrPort(conn.LocalAddr().String()); err == nil {
			p.OnConnect(ap.Addr().Unmap())
		}
	}
	return quickack.Wrap(conn), target, nil
}

// dialog is one conversation's state.
type dialog struct {
	p      *Prober
	c      *smtpConn
	conn   net.Conn // the TCP connection under any TLS
	r      *Result
	target string
	step   time.Duration
}

// fail ends the dialogue on a connection error at stepName.
func (d *dialog) fail(stepName string, err error) *Result {
	d.r.Step, d.r.Err = stepName, fmt.Errorf("%s: %w", d.target, err)
	return d.r
}

// refused ends the dialogue on a refusal before RCPT, with QUIT: RFC 5321
// §4.1.1.10 asks for it after any refusal, not only at the end of a full
// dialogue (servers log "lost connection" otherwise).
func (d *dialog) refused(stepName string, rep *Reply) *Result {
	d.c.quit(d.step)
	return refusedBeforeRcpt(d.r, stepName, rep)
}

// greet reads the banner, says EHLO (STARTTLS and EHLO again when offered
// and allowed; HELO when EHLO is refused) and checks that a UTF-8 local
// part can be sent. It returns the result when the dialogue ends here.
func (d *dialog) greet(ctx context.Context, host string, adm *admission, plain, utf8Local bool) *Result {
	rep, _, err := d.c.reply()
	if err != nil {
		return d.fail("banner", err)
	}
	adm.answer()
	if rep.Code != 220 {
		return d.refused("banner", rep)
	}
	helo := d.p.heloName(d.conn)
	rep, lines, err := d.c.cmd("EHLO " + helo)
	if err != nil {
		return d.fail("ehlo", err)
	}
	if rep.Code == 250 && hasExtension(lines, "STARTTLS") && d.p.TLS != TLSOff && !plain {
		tc, failed := d.startTLS(ctx, host)
		if failed != nil {
			if failed.Reply != nil { // refused, still in plaintext
				d.c.quit(d.step)
			}
			return failed
		}
		d.c = tc
		if rep, lines, err = d.c.cmd("EHLO " + helo); err != nil {
			return d.fail("ehlo", err)
		}
	}
	utf8OK := false
	if rep.Code == 250 {
		utf8OK = hasExtension(lines, "SMTPUTF8")
	} else {
		if rep, _, err = d.c.cmd("HELO " + helo); err != nil {
			return d.fail("helo", err)
		}
		if rep.Code != 250 {
			return d.refused("helo", rep)
		}
	}
	if utf8Local && !utf8OK {
		d.c.quit(d.step)
		d.r.Step, d.r.Err = "ehlo", fmt.Errorf("%s: UTF-8 local part but no SMTPUTF8 announced", d.target)
		return d.r
	}
	return nil
}

// ask sends MAIL FROM and RCPT TO for a (and a random local part when
// CatchAllTest is on), classifies the RCPT reply and says QUIT.
func (d *dialog) ask(a Address) *Result {
	mail := "MAIL FROM:<" + d.p.MailFrom + ">"
	if a.UTF8Local {
		mail += " SMTPUTF8"
	}
	rep, _, err := d.c.cmd(mail)
	if err != nil {
		return d.fail("mail", err)
	}
	if rep.Code != 250 {
		return d.refused("mail", rep)
	}
	if rep, _, err = d.c.cmd("RCPT TO:<" + a.String() + ">"); err != nil {
		return d.fail("rcpt", err)
	}
	r := d.r
	r.Step, r.Reply = "rcpt", rep
	rule := match(rcptRules, rep)
	r.Class, r.Rule, r.refused = rule.class, rule.name, rule.refused
	if rule.recall != "" && !strings.EqualFold(a.Local, "postmaster") {
		d.askPostmaster(a, rule.recall)
	}
	if r.Class == Exists && rep.Code < 300 && d.p.CatchAllTest {
		if rr, _, err := d.c.cmd("RCPT TO:<" + randomLocal() + "@" + a.Domain + ">"); err == nil && rr.Code >= 200 && rr.Code < 300 {
			r.Class = CatchAll
		}
	}
	d.c.quit(d.step)
	return r
}

// askPostmaster follows an ambiguous refusal of a with RCPT
// TO:<postmaster@domain> in the same transaction: when it is accepted,
// the domain is served by this host and the refusal concerns a alone, so
// the recall rule reads it as not-exists. Anything else leaves the result
// unknown.
func (d *dialog) askPostmaster(a Address, recall string) {
	rep, _, err := d.c.cmd("RCPT TO:<postmaster@" + a.Domain + ">")
	if err != nil {
		d.p.tracef("postmaster: %v", err)
		return
	}
	d.r.Postmaster = rep
	if rep.Code >= 200 && rep.Code < 300 {
		d.r.Class, d.r.Rule = NotExists, recall
	}
}

// heloName is our EHLO name: the configured one, else the address
// literal of the connection's local address (RFC 5321 §4.1.3), which
// strict servers accept where they refuse a bare host name.
func (p *Prober) heloName(conn net.Conn) string {
	if p.Helo != "" {
		return p.Helo
	}
	if ap, err := netip.ParseAddrPort(conn.LocalAddr().String()); err == nil {
		if ip := ap.Addr().Unmap(); ip.Is4() {
			return "[" + ip.String() + "]"
		}
		return "[IPv6:" + ap.Addr().String() + "]"
	}
	return "[127.0.0.1]" // a connection without an IP address (a test's pipe)
}

// hasExtension reports an EHLO keyword (RFC 5321 §4.1.1.1: the lines
// after the first).
func hasExtension(lines []string, kw string) bool {
	for _, l := range lines[min(1, len(lines)):] {
		if strings.EqualFold(strings.Fields(l + " x")[0], kw) {
			return true
		}
	}
	return false
}

// startTLS upgrades the dialogue (RFC 3207). A refused or failed upgrade
// returns the result to end this dialogue with, marked TLSFailed.
func (d *dialog) startTLS(ctx context.Context, host string) (*smtpConn, *Result) {
	r := d.r
	rep, _, err := d.c.cmd("STARTTLS")
	r.Step = "starttls"
	if err != nil {
		r.Err = fmt.Errorf("STARTTLS: %w", err)
		return nil, r
	}
	if rep.Code != 220 {
		r.Reply, r.TLS = rep, TLSFailed
		return nil, r
	}
	cfg := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12, InsecureSkipVerify: d.p.TLS != TLSVerify, RootCAs: d.p.RootCAs}
	tc := tls.Client(d.conn, cfg)
	hctx, cancel := context.WithTimeout(ctx, d.step)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		r.Err, r.TLS = fmt.Errorf("TLS handshake: %w", err), TLSFailed
		return nil, r
	}
	r.Step, r.TLS, r.TLSVersion = "", TLSUpgraded, tls.VersionName(tc.ConnectionState().Version)
	d.p.tracef("TLS: upgraded to %s (%s)", r.TLSVersion, tls.CipherSuiteName(tc.ConnectionState().CipherSuite))
	return newSMTPConn(tc, d.step, d.p.Trace), nil
}

// randomLocal is a local part no real mailbox has: 96 random bits.
func randomLocal() string {
	b := make([]byte, 12)
	rand.Read(b)
	return "sg-" + hex.EncodeToString(b)
}
