//go:build e2e

package e2e

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/senderguard/senderguard/internal/testdns"
)

// zoneServerEnv names a zone file: the test binary, run with it set,
// serves that zone on 127.0.0.1:53 (inside a network namespace of the
// test's own) until it is stopped. "SERVFAIL name" lines make a name fail.
const zoneServerEnv = "SENDERGUARD_E2E_ZONE_SERVER"

func serveZone(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var records, servfail, drop []string
	for _, l := range strings.Split(string(b), "\n") {
		if name, ok := strings.CutPrefix(l, "SERVFAIL "); ok {
			servfail = append(servfail, name)
		} else if name, ok := strings.CutPrefix(l, "DROP "); ok {
			drop = append(drop, name)
		} else if strings.TrimSpace(l) != "" {
			records = append(records, l)
		}
	}
	srv, err := testdns.New("127.0.0.1:53", records...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for _, n := range servfail {
		srv.ServFail(n)
	}
	for _, n := range drop {
		srv.Drop(n)
	}
	os.WriteFile(path+".ready", nil, 0o644)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sig:
	case <-time.After(5 * time.Minute):
	}
	srv.Close()
	return 0
}

// pdZone is the world both policy engines see.
var pdZone = []string{
	`pass.pd.test. 300 IN TXT "v=spf1 ip4:192.0.2.10 -all"`,
	`fail.pd.test. 300 IN TXT "v=spf1 ip4:198.51.100.99 -all"`,
	`soft.pd.test. 300 IN TXT "v=spf1 ~all"`,
	`neutral.pd.test. 300 IN TXT "v=spf1 ?all"`,
	`none.pd.test. 300 IN A 192.0.2.99`,
	`perm.pd.test. 300 IN TXT "v=spf1 frobnicate -all"`,
	`nomail.pd.test. 300 IN TXT "v=spf1 -all"`,
	`forwarder.pd.test. 300 IN TXT "v=spf1 ip4:198.51.100.0/24 -all"`,
	`good.pd.test. 300 IN TXT "v=spf1 ip4:192.0.2.0/24 ip4:198.51.100.0/24 -all"`,
	`good.pd.test. 300 IN A 192.0.2.10`,
	`badhelo.pd.test. 300 IN TXT "v=spf1 -all"`,
}

// pdServFail are names whose lookups fail (SERVFAIL); pdDrop names whose
// questions go unanswered (a timeout).
var (
	pdServFail = []string{"temp.pd.test"}
	pdDrop     = []string{"slow.pd.test"}
)

// transaction is one SMTP transaction as both engines judge it. A
// transaction with a divergence is one where policyd-spf departs from
// RFC 7208 and senderguard does not follow it: the test checks that
// each still does what is said there.
type transaction struct {
	name, ip, helo, sender string
	divergence             string
	// slow: a DNS timeout, only asked with configurations that set a
	// short Lookup_Time.
	slow bool
}

// pyspfServFail: pyspf (with python3-dns, Debian's choice) reads a
// SERVFAIL answer over UDP as an empty answer, so a domain whose DNS
// fails has "no SPF record" (none) for policyd-spf; RFC 7208 §4.4 makes
// it temperror, which senderguard gives (deferred with TempError_Defer).
const pyspfServFail = "pyspf reads SERVFAIL as no record"

var pdTransactions = []transaction{
	{name: "pass", ip: "192.0.2.10", helo: "good.pd.test", sender: "a@pass.pd.test"},
	{name: "fail", ip: "192.0.2.10", helo: "good.pd.test", sender: "a@fail.pd.test"},
	{name: "softfail", ip: "192.0.2.10", helo: "good.pd.test", sender: "a@soft.pd.test"},
	{name: "neutral", ip: "192.0.2.10", helo: "good.pd.test", sender: "a@neutral.pd.test"},
	{name: "none", ip: "192.0.2.10", helo: "good.pd.test", sender: "a@none.pd.test"},
	{name: "permerror", ip: "192.0.2.10", helo: "good.pd.test", sender: "a@perm.pd.test"},
	{name: "v=spf1 -all", ip: "192.0.2.10", helo: "good.pd.test", sender: "a@nomail.pd.test"},
	{name: "temperror (SERVFAIL)", ip: "192.0.2.10", helo: "good.pd.test", sender: "a@temp.pd.test", divergence: pyspfServFail},
	{name: "temperror (timeout)", ip: "192.0.2.10", helo: "good.pd.test", sender: "a@slow.pd.test", slow: true},
	{name: "whitelisted network", ip: "192.0.2.200", helo: "good.pd.test", sender: "a@fail.pd.test"},
	{name: "forwarder trusted by Domain_Whitelist", ip: "198.51.100.7", helo: "good.pd.test", sender: "a@fail.pd.test"},
	{name: "failing HELO, null sender", ip: "192.0.2.10", helo: "badhelo.pd.test", sender: ""},
	{name: "failing HELO, a sender", ip: "192.0.2.10", helo: "badhelo.pd.test", sender: "a@pass.pd.test"},
	{name: "failing HELO, null sender, other client", ip: "198.51.100.50", helo: "badhelo.pd.test", sender: ""},
}

// pdConfigs are the policyd-spf.conf files compared: Debian's shipped
// file as it is, and three that move every decision a transaction above
// can show.
var pdConfigs = map[string]string{
	"debian": "", // /etc/postfix-policyd-spf-python/policyd-spf.conf
	"strict": `Lookup_Time = 2
HELO_reject = SPF_Not_Pass
Mail_From_reject = SPF_Not_Pass
PermError_reject = True
TempError_Defer = True
Whitelist = 192.0.2.192/26
Domain_Whitelist = forwarder.pd.test
`,
	"lenient": `Lookup_Time = 2
HELO_reject = Null
Mail_From_reject = Softfail
Reject_Not_Pass_Domains = neutral.pd.test
TempError_Defer = True
`,
	"nomail": `HELO_reject = Fail
Mail_From_reject = SPF_Not_Pass
No_Mail = True
PermError_reject = True
HELO_Whitelist = good.pd.test
`,
}

// policydOutcomes runs the real policyd-spf on one request per
// transaction, inside a network and mount namespace of its own where
// /etc/resolv.conf names a DNS server of the test's zone on 127.0.0.1:53
// (pyspf asks the system's resolvers), and returns accept, defer or
// reject for each.
func policydOutcomes(t *testing.T, conf string, trs []transaction) []string {
	t.Helper()
	dir := t.TempDir()
	zone := filepath.Join(dir, "zone")
	z := strings.Join(pdZone, "\n") + "\n"
	for _, n := range pdServFail {
		z += "SERVFAIL " + n + "\n"
	}
	for _, n := range pdDrop {
		z += "DROP " + n + "\n"
	}
	must(t, os.WriteFile(zone, []byte(z), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte("nameserver 127.0.0.1\n"), 0o644))
	var req strings.Builder
	for i, tr := range trs {
		fmt.Fprintf(&req, "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nclient_address=%s\nclient_name=unknown\n"+
			"helo_name=%s\nsender=%s\nrecipient=u@example.test\ninstance=e2e.%d\nqueue_id=\n\n", tr.ip, tr.helo, tr.sender, i)
	}
	must(t, os.WriteFile(filepath.Join(dir, "requests"), []byte(req.String()), 0o644))
	self, err := os.Executable()
	must(t, err)
	script := fmt.Sprintf(`set -e
ip link set lo up
mount --bind %[1]s/resolv.conf /etc/resolv.conf
%[2]s=%[3]s %[4]s & dns=$!
for i in $(seq 200); do [ -f %[3]s.ready ] && break; sleep 0.05; done
/usr/bin/policyd-spf %[5]s < %[1]s/requests
kill $dns
`, dir, zoneServerEnv, zone, self, conf)
	cmd := exec.Command("unshare", "-n", "-m", "--propagation", "private", "sh", "-c", script)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("policyd-spf: %v\n%s", err, stderr.String())
	}
	var got []string
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		action, _ := strings.CutPrefix(line, "action=")
		verb := strings.Fields(action + " x")[0]
		switch {
		case verb == "prepend", verb == "dunno":
			got = append(got, "accept")
		case strings.HasPrefix(verb, "defer"), strings.HasPrefix(verb, "4"):
			got = append(got, "defer")
		case verb == "reject", strings.HasPrefix(verb, "5"):
			got = append(got, "reject")
		default:
			got = append(got, "?"+line)
		}
		t.Logf("policyd-spf %s: %s", trs[min(len(got)-1, len(trs)-1)].name, line)
	}
	if len(got) != len(trs) {
		t.Fatalf("policyd-spf answered %d requests of %d:\n%s\n%s", len(got), len(trs), out, stderr.String())
	}
	return got
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// senderguardOutcome runs one transaction through a Postfix in front of
// senderguard; XCLIENT gives it the client address of the transaction.
func senderguardOutcome(t *testing.T, mta *mtaInstance, tr transaction) (string, string) {
	t.Helper()
	c := dial(t, mta.addr, "127.0.0.1")
	c.expect(250, "EHLO xclient.pd.test")
	c.expect(220, "XCLIENT ADDR=%s NAME=[UNAVAILABLE]", tr.ip)
	c.expect(250, "EHLO %s", tr.helo)
	r := c.cmd("MAIL FROM:<%s>", tr.sender)
	if r.Code == 250 {
		r = c.cmd("RCPT TO:<u@example.test>")
	}
	c.quit()
	switch {
	case r.Code == 250:
		return "accept", r.String()
	case r.Code >= 400 && r.Code < 500:
		return "defer", r.String()
	case r.Code >= 500:
		return "reject", r.String()
	}
	return "?", r.String()
}

// TestSameDecisionsAsPolicydSPF: for each policyd-spf.conf, the real
// policyd-spf and senderguard on "senderguard import policyd-spf" of the
// same file, behind a real Postfix, decide every transaction alike.
func TestSameDecisionsAsPolicydSPF(t *testing.T) {
	if _, err := os.Stat("/usr/bin/policyd-spf"); err != nil {
		t.Fatalf("policyd-spf is not installed (scripts/deps.sh installs postfix-policyd-spf-python): %v", err)
	}
	must(t, h.dns.Add(pdZone...))
	for _, n := range pdServFail {
		h.dns.ServFail(n)
	}
	for _, n := range pdDrop {
		h.dns.Drop(n)
	}
	for _, name := range []string{"debian", "strict", "lenient", "nomail"} {
		t.Run(name, func(t *testing.T) {
			conf := "/etc/postfix-policyd-spf-python/policyd-spf.conf"
			text := pdConfigs[name]
			if text != "" {
				conf = filepath.Join(t.TempDir(), name+".conf")
				must(t, os.WriteFile(conf, []byte(text), 0o644))
			}
			var trs []transaction
			for _, tr := range pdTransactions {
				if !tr.slow || strings.Contains(text, "Lookup_Time") {
					trs = append(trs, tr)
				}
			}
			imp := exec.Command(h.bin, "import", "policyd-spf", conf)
			var stderr strings.Builder
			imp.Stderr = &stderr
			yaml, err := imp.Output()
			if err != nil {
				t.Fatalf("import: %v\n%s", err, stderr.String())
			}
			want := policydOutcomes(t, conf, trs)
			in := startInstanceRaw(t, "pd-"+name, string(yaml))
			same := 0
			for i, tr := range trs {
				got, reply := senderguardOutcome(t, in.mta, tr)
				switch {
				case tr.divergence == pyspfServFail:
					rfc := "accept"
					if strings.Contains(text, "TempError_Defer = True") {
						rfc = "defer"
					}
					if want[i] != "accept" || got != rfc {
						t.Errorf("%s: policyd-spf %s (want accept: %s), senderguard %s (want %s, RFC 7208 §4.4)", tr.name, want[i], tr.divergence, got, rfc)
					}
				case got != want[i]:
					t.Errorf("%s: senderguard %s (%s), policyd-spf %s", tr.name, got, reply, want[i])
				default:
					same++
					t.Logf("%s: both %s (%s)", tr.name, got, reply)
				}
			}
			if same < 12 {
				t.Errorf("%d transactions compared alike, want at least 12", same)
			}
		})
	}
}
