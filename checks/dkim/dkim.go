// Package dkim verifies a message's DKIM signatures (RFC 6376) while the
// MTA streams it to the milter: go-msgauth does the cryptography, its key
// lookups go through our resolver and its cache under the caller's
// deadline, and the body streams through the hash (no whole-message
// buffer). What this package adds around the library: the stream from
// milter fields, the signature tags the library does not return (s=), a
// bound on the header section, and DMARC's relaxed alignment.
package dkim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/miekg/dns"
	"golang.org/x/net/publicsuffix"

	"github.com/senderguard/senderguard/checks/resolver"
)

// Status is one signature's result (RFC 8601 §2.7.1).
type Status string

const (
	Pass      Status = "pass"
	Fail      Status = "fail"      // the signature does not verify
	TempError Status = "temperror" // the key could not be fetched now
	PermError Status = "permerror" // a broken signature or key
)

// Signature is one DKIM-Signature field and its result.
type Signature struct {
	Domain   string // d=
	Selector string // s=
	Status   Status
	Err      error // why it did not pass
}

// Result is what a message's signatures showed.
type Result struct {
	Signatures []Signature
	// Err is a problem with the message as a whole (a header section
	// over the bound, a stream cut short); its signatures then count as
	// failed.
	Err error
}

// MaxHeaderBytes bounds the header section we hand to the verifier.
const MaxHeaderBytes = 1 << 20

// maxSignatures bounds the signatures verified per message (each costs a
// key lookup and a hash of the body).
const maxSignatures = 5

// Verifier starts the checks; its Resolver answers the key lookups.
type Verifier struct {
	Resolver resolver.Querier
}

// Check is one message being verified: Header for each field in order,
// Body for each chunk, then Finish. Close abandons it.
type Check struct {
	pw     *io.PipeWriter
	done   chan Result
	sigs   []Signature
	header int // header bytes written
	inBody bool
	err    error // why we stopped feeding the verifier
}

// Start begins the check of one message. Each key lookup may take
// lookupBudget from when it is asked (the library asks once the header
// section is complete, however long the client took to send it); ctx
// ends them all.
func (v *Verifier) Start(ctx context.Context, lookupBudget time.Duration) *Check {
	pr, pw := io.Pipe()
	c := &Check{pw: pw, done: make(chan Result, 1)}
	lookup := func(name string) ([]string, error) {
		lctx, cancel := context.WithTimeout(ctx, lookupBudget)
		defer cancel()
		return v.lookupTXT(lctx, name)
	}
	go func() {
		defer func() {
			if p := recover(); p != nil { // a library bug must not end the process
				pr.CloseWithError(fmt.Errorf("dkim: verifier panicked: %v", p))
				c.done <- Result{Err: fmt.Errorf("dkim: verifier panicked: %v", p)}
			}
		}()
		verifs, err := dkim.VerifyWithOptions(pr, &dkim.VerifyOptions{LookupTXT: lookup, MaxVerifications: maxSignatures})
		// The library may stop reading early (no signatures): drain, so
		// that the milter's writes never block.
		io.Copy(io.Discard, pr)
		res := Result{}
		if err != nil && !errors.Is(err, dkim.ErrTooManySignatures) {
			res.Err = err
		}
		for _, vf := range verifs {
			res.Signatures = append(res.Signatures, Signature{Domain: vf.Domain, Status: statusOf(vf.Err), Err: vf.Err})
		}
		c.done <- res
	}()
	return c
}

func statusOf(err error) Status {
	switch {
	case err == nil:
		return Pass
	case dkim.IsTempFail(err):
		return TempError
	case dkim.IsPermFail(err):
		return PermError
	}
	return Fail
}

// lookupTXT answers the library's key lookups from our resolver: a
// temporary DNS failure is a net.Error that says so, which the library
// turns into temperror; anything else is permerror.
func (v *Verifier) lookupTXT(ctx context.Context, name string) ([]string, error) {
	a, err := v.Resolver.Query(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, &net.DNSError{Err: err.Error(), Name: name, IsTemporary: errors.Is(err, resolver.ErrTemporary) || ctx.Err() != nil}
	}
	if a.Rcode == resolver.NXDomain {
		return nil, &net.DNSError{Err: "no such domain", Name: name, IsNotFound: true}
	}
	out := append([]string(nil), a.TXT...)
	for range a.OtherTXT {
		out = append(out, "") // records the cache did not keep: "multiple keys"
	}
	return out, nil
}

// Header feeds one header field as the milter gave it. leadingSpace says
// whether value keeps the space after the colon (SMFIP_HDR_LEADSPC);
// without it, one is put back, as MTAs write it.
func (c *Check) Header(name, value string, leadingSpace bool) {
	if strings.EqualFold(name, "DKIM-Signature") && len(c.sigs) < maxSignatures {
		d, s := Tags(value)
		c.sigs = append(c.sigs, Signature{Domain: d, Selector: s})
	}
	sep := ":"
	if !leadingSpace {
		sep = ": "
	}
	// Folded lines reach milters with bare LF (Postfix) or CRLF.
	value = strings.ReplaceAll(strings.ReplaceAll(value, "\r\n", "\n"), "\n", "\r\n")
	c.write(name + sep + value + "\r\n")
}

// Body feeds one chunk of the body (CRLF line ends, as MTAs send it).
func (c *Check) Body(chunk []byte) {
	if !c.inBody {
		c.write("\r\n")
		c.inBody = true
	}
	if c.err == nil {
		if _, err := c.pw.Write(chunk); err != nil {
			c.err = err
		}
	}
}

func (c *Check) write(s string) {
	if c.err != nil {
		return
	}
	if !c.inBody {
		c.header += len(s)
		if c.header > MaxHeaderBytes {
			c.err = fmt.Errorf("dkim: header section over %d bytes: not verified", MaxHeaderBytes)
			c.pw.CloseWithError(c.err)
			return
		}
	}
	if _, err := io.WriteString(c.pw, s); err != nil {
		c.err = err
	}
}

// Finish ends the message and returns the result, each signature with its
// selector.
func (c *Check) Finish() Result {
	if !c.inBody {
		c.write("\r\n")
	}
	c.pw.Close()
	res := <-c.done
	if c.err != nil && res.Err == nil {
		res.Err = c.err
	}
	// The library returns verifications in the order of the fields.
	for i := range res.Signatures {
		if i < len(c.sigs) && strings.EqualFold(c.sigs[i].Domain, res.Signatures[i].Domain) {
			res.Signatures[i].Selector = c.sigs[i].Selector
		}
	}
	return res
}

// Close abandons the check (the message was aborted).
func (c *Check) Close() {
	c.pw.CloseWithError(errors.New("dkim: message abandoned"))
}

// Tags returns the d= and s= tags of a DKIM-Signature field's value
// (RFC 6376 §3.2 tag-list), "" for a missing or repeated tag.
func Tags(value string) (domain, selector string) {
	seen := map[string]int{}
	for _, spec := range strings.Split(value, ";") {
		name, v, ok := strings.Cut(spec, "=")
		if !ok {
			continue
		}
		name = strings.TrimSpace(name)
		v = strings.Join(strings.Fields(v), "") // FWS inside a value is not part of it
		switch name {
		case "d":
			domain = v
		case "s":
			selector = v
		default:
			continue
		}
		seen[name]++
	}
	if seen["d"] > 1 {
		domain = ""
	}
	if seen["s"] > 1 {
		selector = ""
	}
	return strings.ToLower(strings.TrimSuffix(domain, ".")), selector
}

// Aligned reports DMARC's relaxed alignment of a signing domain with the
// envelope sender's domain (RFC 7489 §3.1.1): the same organizational
// domain, found with the public suffix list.
func Aligned(signer, sender string) bool {
	signer = strings.ToLower(strings.TrimSuffix(signer, "."))
	sender = strings.ToLower(strings.TrimSuffix(sender, "."))
	if signer == "" || sender == "" {
		return false
	}
	if signer == sender {
		return true
	}
	a, err1 := publicsuffix.EffectiveTLDPlusOne(signer)
	b, err2 := publicsuffix.EffectiveTLDPlusOne(sender)
	return err1 == nil && err2 == nil && a == b
}
