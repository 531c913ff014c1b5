package policydspf

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// results are SPF's, in the order of the actions tables.
var results = []string{"pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"}

// rejects lists what each level of HELO_reject and Mail_From_reject
// refuses (spf-engine's _get_resultcodes).
var rejects = map[string][]string{
	"SPF_Not_Pass": {"fail", "softfail", "neutral"},
	"Softfail":     {"fail", "softfail"},
	"Fail":         {"fail"},
	"Null":         {"fail"},
}

// writer builds the YAML with a comment naming each setting's source.
type writer struct {
	b      strings.Builder
	s      *Settings
	indent int
}

func (w *writer) section(name string) {
	fmt.Fprintf(&w.b, "%s%s:\n", strings.Repeat("  ", w.indent), name)
}

// set writes "key: value  # comment".
func (w *writer) set(key, value, comment string) {
	line := fmt.Sprintf("%s%s: %s", strings.Repeat("  ", w.indent), key, value)
	if comment != "" {
		line = fmt.Sprintf("%-44s # %s", line, comment)
	}
	w.b.WriteString(line + "\n")
}

// from names an option and where its value came from.
func (w *writer) from(option, value string) string {
	set := option + " = " + value
	if value == "" {
		set = option + " unset"
	}
	if line, ok := w.s.Source[option]; ok {
		return fmt.Sprintf("%s (line %d)", set, line)
	}
	return set + " (policyd-spf's default)"
}

func quote(s string) string { return strconv.Quote(s) }

func list(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = quote(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

func prefixes(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

func onOff(b bool) string { return strconv.FormatBool(b) }

// YAML is the senderguard configuration of s, and the notes on what was
// translated with a difference (for standard error).
func (s *Settings) YAML(file string) (string, []string) {
	w := &writer{s: s}
	var notes []string
	note := func(format string, args ...any) { notes = append(notes, fmt.Sprintf(format, args...)) }
	fmt.Fprintf(&w.b, "# senderguard configuration imported from %s\n", file)
	w.b.WriteString("# by \"senderguard import policyd-spf\": the same accept, defer or reject as\n")
	w.b.WriteString("# policyd-spf (spf-engine 3.x) with that file, for the same transaction.\n")
	w.b.WriteString("# Check it with: senderguard check-config -config FILE\n\n")

	testOnly := "1"
	if s.TestOnly {
		testOnly = "0"
	}
	w.set("dry_run", onOff(s.TestOnly), w.from("TestOnly", testOnly)+": 0 is policyd-spf's test mode")
	w.set("trusted_networks", list(prefixes(s.SkipAddresses)), w.from("skip_addresses", strings.Join(prefixes(s.SkipAddresses), ",")))
	w.set("skip_authenticated", "true", "policyd-spf usually follows permit_sasl_authenticated")
	w.set("always_accept_recipients", "[]", "policyd-spf judges postmaster@ too; [postmaster, abuse] keeps them reachable (RFC 5321 §4.5.1)")
	w.set("reject_at", "rcpt", "check_policy_service answers at RCPT TO")
	w.set("spf_fail_rescue", "none", "policyd-spf refuses an SPF fail at RCPT: no DKIM or DMARC rescue")
	fields := map[string]string{"SPF": "[received-spf]", "AR": "[authentication-results]", "None": "[]"}[s.HeaderType]
	w.set("header_fields", fields, w.from("Header_Type", s.HeaderType))
	hide := "No"
	if s.HideReceiver {
		hide = "Yes"
	}
	w.set("hide_receiver", onOff(s.HideReceiver), w.from("Hide_Receiver", hide))
	if s.AuthservID != "HOSTNAME" {
		w.set("authserv_id", quote(s.AuthservID), w.from("Authserv_Id", s.AuthservID))
	} else {
		w.b.WriteString("# authserv_id: the host name, as Authserv_Id = HOSTNAME (policyd-spf's default)\n")
	}
	budget := s.LookupTime
	switch {
	case budget == 0:
		budget = 60
		note("Lookup_Time = 0 (no limit) cannot be honoured: the MTA waits for a milter at most its milter timeouts; stage_budget: 60s")
	case budget > 60:
		note("Lookup_Time = %d: more than senderguard's largest stage_budget (60s, below Postfix's milter_command_timeout); stage_budget: 60s", budget)
		budget = 60
	}
	w.set("stage_budget", fmt.Sprintf("%ds", budget), w.from("Lookup_Time", strconv.Itoa(s.LookupTime))+"; keep it below Postfix's milter_command_timeout")
	w.section("log")
	w.indent++
	level := map[bool]string{true: "debug", false: "info"}[s.DebugLevel >= 2]
	if s.DebugLevel <= 0 {
		level = "warn"
	}
	w.set("level", level, w.from("debugLevel", strconv.Itoa(s.DebugLevel)))
	w.indent--

	w.section("spf")
	w.indent++
	w.set("check_helo", onOff(s.HELOReject != "No_Check"), w.from("HELO_reject", s.HELOReject))
	w.set("check_mailfrom", onOff(s.MailFromReject != "No_Check"), w.from("Mail_From_reject", s.MailFromReject))
	w.set("helo_first", "true", "policyd-spf gives a HELO refusal before it checks MAIL FROM")
	w.set("helo_null_sender_only", onOff(s.HELOReject == "Null"), w.from("HELO_reject", s.HELOReject))
	noMail := map[bool]string{true: "True", false: "False"}[s.NoMail]
	w.set("reject_only_no_mail", onOff(s.NoMail), w.from("No_Mail", noMail))
	w.set("reject_not_pass_domains", list(s.RejectNotPassDomains), w.from("Reject_Not_Pass_Domains", strings.Join(s.RejectNotPassDomains, ",")))
	void := s.VoidLimit
	if void < 1 {
		note("Void_Limit = %d cannot be honoured: senderguard allows at least 1 void lookup; spf.void_limit: 1", void)
		void = 1
	}
	w.set("void_limit", strconv.Itoa(void), w.from("Void_Limit", strconv.Itoa(s.VoidLimit)))
	w.set("reason_message", quote(s.ReasonMessage), w.from("Reason_Message", s.ReasonMessage))
	if strings.Contains(s.ReasonMessage, "{url}") {
		note("Reason_Message's {url} pointed at www.openspf.net, which is gone; spf.reason_url is empty, so the sentence naming {url} is left out until you set one")
	}
	w.set("reason_url", `""`, "{url}: a page of your own, e.g. https://mx.example.org/spf.html")
	w.section("whitelist")
	w.indent++
	w.set("networks", list(prefixes(s.Whitelist)), w.from("Whitelist", strings.Join(prefixes(s.Whitelist), ",")))
	w.set("verified_helo_names", list(s.HELOWhitelist), w.from("HELO_Whitelist", strings.Join(s.HELOWhitelist, ",")))
	w.set("spf_domains", list(s.DomainWhitelist), w.from("Domain_Whitelist", strings.Join(s.DomainWhitelist, ",")))
	w.set("ptr_domains", list(s.DomainWhitelistPTR), w.from("Domain_Whitelist_PTR", strings.Join(s.DomainWhitelistPTR, ",")))
	if len(s.DomainWhitelistPTR) > 0 {
		note("Domain_Whitelist_PTR: senderguard trusts a reverse DNS name only when it resolves back to the client and ends at a label boundary; policyd-spf takes the first PTR name unverified, with a plain suffix match (evilpobox.com matches pobox.com)")
	}
	w.indent -= 2

	w.section("callout")
	w.indent++
	w.set("enabled", "false", "policyd-spf has no callouts; before turning them on, read the README's \"Callouts without risk to the site\"")
	w.indent--

	codes := struct{ fail, perm, deferral string }{"550 5.7.23", "550 5.7.24", "450 4.7.24"}
	codeNote := w.from("SPF_Enhanced_Status_Codes", "Yes")
	if !s.EnhancedCodes {
		codes.fail, codes.perm, codes.deferral = "550 5.7.1", "550 5.7.1", "450 4.7.1"
		codeNote = w.from("SPF_Enhanced_Status_Codes", "No")
	}
	w.section("actions")
	w.indent++
	for _, id := range []struct{ key, option, level string }{{"spf_helo", "HELO_reject", s.HELOReject}, {"spf_mailfrom", "Mail_From_reject", s.MailFromReject}} {
		w.section(id.key)
		w.indent++
		for _, r := range results {
			action, why := "accept", ""
			switch {
			case id.level == "False" || id.level == "No_Check":
				why = w.from(id.option, id.level)
			case contains(rejects[id.level], r):
				action, why = "reject "+codes.fail, w.from(id.option, id.level)+"; "+codeNote
			case r == "temperror" && s.TempErrorDefer:
				action, why = "tempfail "+codes.deferral, w.from("TempError_Defer", "True")+"; defer_if_permit"
			case r == "permerror" && s.PermErrorReject:
				action, why = "reject "+codes.perm, w.from("PermError_reject", "True")
			case r == "temperror":
				why = w.from("TempError_Defer", "False")
			case r == "permerror":
				why = w.from("PermError_reject", "False")
			}
			w.set(r, action, why)
		}
		w.indent--
	}
	w.indent--
	return w.b.String(), notes
}
