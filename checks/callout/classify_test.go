package callout

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestClassifyGatheredReplies reads every reply in
// testdata/rcpt-replies.txt (gathered from RFCs, vendors' documentation
// and published reply lists) and checks the class it must give.
func TestClassifyGatheredReplies(t *testing.T) {
	f, err := os.Open("testdata/rcpt-replies.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	counts := map[string]int{}
	rules := map[string]int{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Split(line, "\t")
		if len(fields) != 3 {
			t.Fatalf("line %d: want class, reply and source separated by tabs", n)
		}
		want, raw, why := fields[0], fields[1], fields[2]
		rep := parseReplyLine(t, raw)
		class, rule, refused := ClassifyRcpt(rep)
		got := string(class)
		if refused {
			got = "refused"
		}
		if got != want {
			t.Errorf("line %d: %q: got %s (rule %s), want %s: %s", n, raw, got, rule, want, why)
		}
		counts[want]++
		rules[rule]++
	}
	total := 0
	for _, c := range counts {
		total += c
	}
	if total < 100 {
		t.Errorf("%d replies, want at least 100", total)
	}
	t.Logf("%d replies: %v; by rule: %v", total, counts, rules)
}

// parseReplyLine reads "550 5.1.1 text" or a multi-line reply joined as
// "550-... 550 ..." into a Reply, as the SMTP client would.
func parseReplyLine(t *testing.T, raw string) *Reply {
	t.Helper()
	code, err := strconv.Atoi(raw[:3])
	if err != nil {
		t.Fatalf("%q: no reply code", raw)
	}
	// Continuation lines of a joined multi-line reply repeat the code.
	text := strings.TrimPrefix(raw[3:], " ")
	text = strings.TrimPrefix(text, "-")
	text = strings.ReplaceAll(text, " "+raw[:3]+"-", " ")
	text = strings.ReplaceAll(text, " "+raw[:3]+" ", " ")
	return newReply(code, text)
}

// TestRulesAreReachable: every rule of the table decides at least one
// case, so none is dead.
func TestRulesAreReachable(t *testing.T) {
	cases := map[string]string{
		"2xx-accepted": "250 2.1.5 Ok", "4xx-temporary": "450 4.2.0 greylisted",
		"tls-required": "530 5.7.0 Must issue a STARTTLS command first", "refused-us": "554 5.7.1 Client host [192.0.2.1] blocked",
		"x.1.7-our-sender": "553 5.1.7 bad sender", "x.1.8-our-sender-domain": "553 5.1.8 bad sender domain",
		"x.5.x-protocol": "503 5.5.1 need MAIL", "x.2.2-mailbox-full": "552 5.2.2 full",
		"mailbox-full-text": "552 Mailbox full", "rate-limit": "550 too many messages",
		"relay-refused": "554 Relay access denied", "x.1.1-no-mailbox": "550 5.1.1 no",
		"x.1.6-mailbox-moved": "550 5.1.6 moved", "x.1.10-recipient-not-found": "550 5.1.10 Recipient not found",
		"policy": "550 spam", "x.1.x-other-address": "550 5.1.2 bad system",
		"x.2.x-mailbox-status": "550 5.2.1 disabled", "x.3.x-mail-system": "552 5.3.4 too big",
		"x.4.x-routing": "550 5.4.6 loop", "x.6.x-content": "550 5.6.1 media", "x.7.x-security": "550 5.7.1 no",
		"no-mailbox-text": "550 No such user", "5xx-unclear": "550 mailbox unavailable",
		"exim-unrouteable": "550 Unrouteable address", "opensmtpd-invalid-recipient": "550 Invalid recipient: <bob@example.com>",
		"opensmtpd-expansion-problem": "524 5.2.4 Mailing list expansion problem",
	}
	for _, r := range rcptRules {
		reply, ok := cases[r.name]
		if !ok {
			t.Errorf("rule %s has no case", r.name)
			continue
		}
		if _, got, _ := ClassifyRcpt(parseReplyLine(t, reply)); got != r.name {
			t.Errorf("%q: rule %s, want %s", reply, got, r.name)
		}
	}
}
