package config

import (
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/net/idna"
)

// RecipientDomain overrides, for recipients at its domains, the keys it
// names (recipient_domains: one gateway, many customers' wishes).
type RecipientDomain struct {
	// Name labels the entry in metrics; empty: "entry-N".
	Name string `yaml:"name"`
	// Domains are exact names, or "*.example" for every subdomain.
	Domains []string `yaml:"domains"`
	// Actions: any subset of the global actions, e.g.
	// {spf_mailfrom: {softfail: "reject 550 5.7.23"}}.
	Actions map[string]map[string]Action `yaml:"actions"`
	DryRun  *bool                        `yaml:"dry_run"`
	Callout *RecipientCallout            `yaml:"callout"`
	// SPFFailRescue overrides spf_fail_rescue for these domains.
	SPFFailRescue *string `yaml:"spf_fail_rescue"`
	// SPF overrides the SPF rules (spf.helo_first, ...) it names.
	SPF *RecipientSPF `yaml:"spf"`
}

// RecipientSPF is the part of the SPF rules an entry may override.
type RecipientSPF struct {
	HELOFirst            *bool     `yaml:"helo_first"`
	HELONullSenderOnly   *bool     `yaml:"helo_null_sender_only"`
	RejectOnlyNoMail     *bool     `yaml:"reject_only_no_mail"`
	RejectNotPassDomains *[]string `yaml:"reject_not_pass_domains"`
}

// MergedSPF is the global SPF rules with the entry's overrides.
func (r *RecipientDomain) MergedSPF(global SPFPolicy) SPFPolicy {
	p := global
	if o := r.SPF; o != nil {
		if o.HELOFirst != nil {
			p.HELOFirst = *o.HELOFirst
		}
		if o.HELONullSenderOnly != nil {
			p.HELONullSenderOnly = *o.HELONullSenderOnly
		}
		if o.RejectOnlyNoMail != nil {
			p.RejectOnlyNoMail = *o.RejectOnlyNoMail
		}
		if o.RejectNotPassDomains != nil {
			p.RejectNotPassDomains = *o.RejectNotPassDomains
		}
	}
	return p
}

// RecipientCallout is the part of the callout settings an entry may
// override.
type RecipientCallout struct {
	Enabled *bool     `yaml:"enabled"`
	ProbeOn *[]string `yaml:"probe_on"`
}

// Label is the entry's name in metrics: bounded, never a domain.
func (r *RecipientDomain) Label(i int) string {
	if r.Name != "" {
		return r.Name
	}
	return "entry-" + strconv.Itoa(i)
}

// Merged returns the global actions with the entry's overrides applied.
func (r *RecipientDomain) Merged(global Actions) Actions {
	a := global
	for id, results := range r.Actions {
		for res, act := range results {
			*actionField(&a, id, res) = act
		}
	}
	return a
}

var (
	spfResults     = []string{"pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"}
	calloutClasses = []string{"exists", "not-exists", "catch-all", "null-mx", "no-mail-host", "unknown", "in-progress"}
)

// actionField is the Action an actions key names: the flags and the
// recipient overrides use the same table.
func actionField(a *Actions, id, result string) *Action {
	switch id {
	case "spf_mailfrom":
		return a.SPFMailFrom.For(result)
	case "spf_helo":
		return a.SPFHelo.For(result)
	}
	return a.Callout.For(result)
}

func validActionKey(id, result string) bool {
	list := calloutClasses
	switch id {
	case "spf_mailfrom", "spf_helo":
		list = spfResults
	case "callout":
	default:
		return false
	}
	for _, r := range list {
		if r == result {
			return true
		}
	}
	return false
}

// CanonicalDomain is a domain as recipient matching compares it: lower
// case, A-labels, no root dot.
func CanonicalDomain(d string) (string, error) {
	d = strings.TrimSuffix(d, ".")
	a, err := idna.Lookup.ToASCII(d)
	if err != nil {
		return "", err
	}
	return strings.ToLower(a), nil
}

func (c *Config) validateRecipients() error {
	seen := map[string]int{}
	names := map[string]bool{}
	for i, r := range c.RecipientDomains {
		path := fmt.Sprintf("recipient_domains.%d", i)
		if len(r.Domains) == 0 {
			return fieldErr(path+".domains", "an entry needs at least one domain")
		}
		for j, d := range r.Domains {
			name, wild := strings.CutPrefix(d, "*.")
			canon, err := CanonicalDomain(name)
			if err != nil || canon == "" || strings.Contains(canon, "*") || !strings.Contains(canon, ".") && !wild {
				return fieldErr(fmt.Sprintf("%s.domains.%d", path, j), "%q is not a domain name or *.domain", d)
			}
			key := canon
			if wild {
				key = "*." + canon
			}
			if k, dup := seen[key]; dup {
				return fieldErr(fmt.Sprintf("%s.domains.%d", path, j), "%s is already in recipient_domains entry %d", d, k)
			}
			seen[key] = i
		}
		for id, results := range r.Actions {
			for res := range results {
				if !validActionKey(id, res) {
					return fieldErr(fmt.Sprintf("%s.actions.%s.%s", path, id, res), "not an action key: want spf_mailfrom, spf_helo or callout, then a result of that check")
				}
			}
		}
		if r.SPF != nil && r.SPF.RejectNotPassDomains != nil {
			if err := validDomains(path+".spf.reject_not_pass_domains", *r.SPF.RejectNotPassDomains); err != nil {
				return err
			}
		}
		if r.SPFFailRescue != nil {
			if err := validRescue(*r.SPFFailRescue); err != nil {
				return fieldErr(path+".spf_fail_rescue", "%v", err)
			}
		}
		if r.Callout != nil && r.Callout.ProbeOn != nil {
			if err := validProbeOn(*r.Callout.ProbeOn); err != nil {
				return fieldErr(path+".callout.probe_on", "%v", err)
			}
		}
		if r.Name != "" {
			if names[r.Name] {
				return fieldErr(path+".name", "%q names two entries", r.Name)
			}
			names[r.Name] = true
		}
	}
	return nil
}

func validProbeOn(list []string) error {
	for _, s := range list {
		switch s {
		case "none", "neutral", "softfail", "permerror", "temperror", "pass":
		default:
			return fmt.Errorf("%q is not an SPF result a probe can follow", s)
		}
	}
	return nil
}
