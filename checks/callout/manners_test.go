package callout_test

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/senderguard/senderguard/cache"
	"github.com/senderguard/senderguard/checks/callout"
	"github.com/senderguard/senderguard/internal/testcert"
	"github.com/senderguard/senderguard/internal/testsmtp"
)

// TestQuitAfterEveryRefusal: RFC 5321 manners. Whatever step refuses us,
// the dialogue ends with QUIT, so the server logs a clean disconnect
// instead of "lost connection after ...".
func TestQuitAfterEveryRefusal(t *testing.T) {
	certs := testcert.New(t, t.TempDir(), "mx", "mx.q.test")
	refuse := func(prefix, reply string) func(*testsmtp.Server) {
		return func(s *testsmtp.Server) {
			s.Reply = func(_ *testsmtp.Server, cmd string) string {
				if strings.HasPrefix(strings.ToUpper(cmd), prefix) {
					return reply
				}
				return ""
			}
		}
	}
	for _, tc := range []struct {
		name, step string
		configure  func(*testsmtp.Server)
	}{
		{"banner", "banner", func(s *testsmtp.Server) { s.Banner = "554 5.7.1 no service for you" }},
		{"ehlo and helo", "helo", refuse("E", "")},
		{"mail", "mail", refuse("MAIL", "550 5.7.1 <>: Sender address rejected: Access denied")},
		{"rcpt", "rcpt", refuse("RCPT", "550 5.1.1 no such user")},
		{"rcpt full mailbox", "rcpt", refuse("RCPT", "552 5.2.2 Mailbox full")},
		{"starttls", "starttls", func(s *testsmtp.Server) {
			s.TLS = certs.ServerConfig()
			s.StartTLSReply = "454 4.7.0 TLS not available"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, "q.test. 60 IN MX 10 mx.q.test.", "mx.q.test. 60 IN A 127.0.0.31")
			if tc.name == "ehlo and helo" {
				tc.configure = func(s *testsmtp.Server) {
					s.Reply = func(_ *testsmtp.Server, cmd string) string {
						if u := strings.ToUpper(cmd); strings.HasPrefix(u, "EHLO") || strings.HasPrefix(u, "HELO") {
							return "550 5.7.1 go away"
						}
						return ""
					}
				}
			}
			srv := e.smtp("127.0.0.31", tc.configure)
			p := e.prober()
			p.TLS = callout.TLSVerify // no plaintext retry after a refused STARTTLS
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			r := p.Probe(ctx, "u@q.test")
			if r.Step != tc.step {
				t.Errorf("decided at %q (%s), want %q", r.Step, r.Evidence(), tc.step)
			}
			cmds := srv.Commands()
			if len(cmds) == 0 || cmds[len(cmds)-1] != "QUIT" || srv.Count("QUIT") != 1 {
				t.Errorf("commands %q: want one QUIT, last", cmds)
			}
		})
	}
}

// TestDefaultEhloIsAnAddressLiteral: without a configured name, the
// probe says the address literal of its side of the connection, which
// strict servers accept, never a bare host name.
func TestDefaultEhloIsAnAddressLiteral(t *testing.T) {
	e := newEnv(t, "lit.test. 60 IN MX 10 mx.lit.test.", "mx.lit.test. 60 IN A 127.0.0.32")
	srv := e.smtp("127.0.0.32", nil)
	p := e.prober()
	p.Helo = ""
	if r := p.Probe(context.Background(), "u@lit.test"); r.Class != callout.Exists {
		t.Fatalf("probe: %s %s", r.Class, r.Evidence())
	}
	if cmds := srv.Commands(); len(cmds) == 0 || !regexp.MustCompile(`^EHLO \[127\.\d+\.\d+\.\d+\]$`).MatchString(cmds[0]) {
		t.Errorf("first command %q, want EHLO [127.x.y.z]", cmds)
	}
}

// TestRepliesThatAreNoVerdict: replies that real servers give a probe
// and that do not mean "no such mailbox" are not cached as not-exists;
// each names its rule, and the rule hook counts it.
func TestRepliesThatAreNoVerdict(t *testing.T) {
	for _, tc := range []struct {
		reply, rule string
		class       callout.Class
	}{
		{"552 5.2.2 The email account that you tried to reach is over quota", "x.2.2-mailbox-full", callout.Exists},
		{"550 5.2.1 The user you are trying to contact is receiving mail at a rate that prevents additional messages from being delivered", "rate-limit", callout.Unknown},
		{"554 5.7.1 <u@nv.test>: Relay access denied", "relay-refused", callout.Unknown},
		{"504 5.5.2 <vm>: Helo command rejected: need fully-qualified hostname", "refused-us", callout.Unknown},
		{"550 5.1.1 <u@nv.test>: Recipient address rejected: User unknown", "x.1.1-no-mailbox", callout.NotExists},
	} {
		t.Run(tc.rule, func(t *testing.T) {
			e := newEnv(t, "nv.test. 60 IN MX 10 mx.nv.test.", "mx.nv.test. 60 IN A 127.0.0.33")
			e.smtp("127.0.0.33", func(s *testsmtp.Server) {
				s.Reply = func(_ *testsmtp.Server, cmd string) string {
					if strings.HasPrefix(cmd, "RCPT") {
						return tc.reply
					}
					return ""
				}
			})
			var rules []string
			v := e.verifier(callout.VerifierConfig{}, callout.Hooks{Rule: func(r string) { rules = append(rules, r) }})
			r := v.Verify(context.Background(), "u@nv.test")
			if r.Class != tc.class || r.RuleName() != tc.rule {
				t.Errorf("%s rule=%s, want %s rule=%s", r.Class, r.RuleName(), tc.class, tc.rule)
			}
			if len(rules) != 1 || rules[0] != tc.rule {
				t.Errorf("rule hook saw %v, want [%s]", rules, tc.rule)
			}
			if c := v.Verify(context.Background(), "u@nv.test"); c.Class != tc.class || !c.Cached {
				t.Errorf("second lookup: %s cached=%v", c.Class, c.Cached)
			}
		})
	}
}

// TestNotExistsFromOldRulesIsProbedAgain: a not-exists stored by a
// version whose rules read most 5xx replies that way (no rules version in
// the entry) is not trusted; the address is probed again and the entry
// rewritten. One stored under the current rules answers from the cache.
func TestNotExistsFromOldRulesIsProbedAgain(t *testing.T) {
	e := newEnv(t, "old.test. 60 IN MX 10 mx.old.test.", "mx.old.test. 60 IN A 127.0.0.34")
	srv := e.smtp("127.0.0.34", func(s *testsmtp.Server) {
		s.Reply = func(_ *testsmtp.Server, cmd string) string {
			if strings.HasPrefix(cmd, "RCPT") {
				return "552 5.2.2 Mailbox full"
			}
			return ""
		}
	})
	store, _ := cache.NewMemory(100, nil, cache.Hooks{})
	ctx := context.Background()
	store.Set(ctx, "a:full@old.test", cache.Entry{Kind: "not-exists", Code: 552, Enhanced: "5.2.2", Stored: time.Now().Unix()}, time.Hour)
	store.Set(ctx, "a:gone@old.test", cache.Entry{Kind: "not-exists", Code: 550, Enhanced: "5.1.1", Stored: time.Now().Unix(), Rules: callout.RulesVersion}, time.Hour)
	v := e.replicaOn(store, callout.VerifierConfig{}, callout.Hooks{})
	if r := v.Verify(ctx, "full@old.test"); r.Class != callout.Exists || r.Cached {
		t.Errorf("old not-exists: %s cached=%v, want a new probe saying exists", r.Class, r.Cached)
	}
	if e, _, ok, _ := store.Get(ctx, "a:full@old.test"); !ok || e.Kind != "exists" || e.Rules != callout.RulesVersion {
		t.Errorf("entry after the probe: %+v", e)
	}
	if r := v.Verify(ctx, "gone@old.test"); r.Class != callout.NotExists || !r.Cached {
		t.Errorf("current not-exists: %s cached=%v, want it from the cache", r.Class, r.Cached)
	}
	if n := srv.Count("RCPT"); n != 1 {
		t.Errorf("%d RCPT, want 1", n)
	}
}
