// Package testdkim signs test messages and publishes their keys in a
// test zone: the signing side of DKIM tests (go-msgauth's Sign).
package testdkim

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"
)

// Key is a signing key of one domain and selector.
type Key struct {
	Domain, Selector string
	signer           crypto.Signer
	record           string // the key's TXT record data, as one string
}

// NewEd25519 makes an Ed25519 key (RFC 8463): its record fits one TXT string.
func NewEd25519(t testing.TB, domain, selector string) *Key {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &Key{Domain: domain, Selector: selector, signer: priv,
		record: "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)}
}

// NewRSA makes a 2048-bit RSA key, whose record needs several strings.
func NewRSA(t testing.TB, domain, selector string) *Key {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return &Key{Domain: domain, Selector: selector, signer: priv,
		record: "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)}
}

// Record is the key's DNS record in zone-file syntax, split into strings
// of at most 255 bytes.
func (k *Key) Record() string {
	var parts []string
	for s := k.record; s != ""; {
		n := min(len(s), 255)
		parts = append(parts, `"`+s[:n]+`"`)
		s = s[n:]
	}
	return fmt.Sprintf("%s._domainkey.%s. 300 IN TXT %s", k.Selector, k.Domain, strings.Join(parts, " "))
}

// Sign returns msg (CRLF line ends) with a DKIM-Signature of k prepended,
// relaxed/relaxed over From, To, Subject, Date and Message-ID.
func (k *Key) Sign(t testing.TB, msg string) string {
	var out bytes.Buffer
	err := dkim.Sign(&out, strings.NewReader(msg), &dkim.SignOptions{
		Domain: k.Domain, Selector: k.Selector, Signer: k.signer,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed,
		HeaderKeys: []string{"From", "To", "Subject", "Date", "Message-ID"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// Message is a small message from from to to, CRLF line ends.
func Message(from, to, subject, body string) string {
	return strings.ReplaceAll(fmt.Sprintf("From: <%s>\nTo: <%s>\nSubject: %s\nDate: Wed, 02 Dec 2026 12:00:00 +0000\nMessage-ID: <%s.%s>\n\n%s\n",
		from, to, subject, strings.ReplaceAll(subject, " ", "-"), strings.SplitN(from, "@", 2)[1], body), "\n", "\r\n")
}
