package config

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/senderguard/senderguard/internal/smtpstatus"
)

// Verb is what the policy does with a check result.
type Verb string

const (
	Accept   Verb = "accept"   // let the message through and record the result
	TempFail Verb = "tempfail" // 4xx
	Reject   Verb = "reject"   // 5xx
)

// Action is a configured reaction: "accept", or "reject|tempfail CODE
// X.Y.Z [text]" (RFC 5321 reply code, RFC 3463 enhanced status code). When
// the text is empty the policy writes one naming the check and its evidence.
type Action struct {
	Verb   Verb
	Code   int
	Status string
	Text   string
}

// ParseAction parses the textual form.
func ParseAction(s string) (Action, error) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return Action{}, fmt.Errorf("empty action")
	}
	a := Action{Verb: Verb(strings.ToLower(f[0]))}
	switch a.Verb {
	case Accept:
		if len(f) > 1 {
			return Action{}, fmt.Errorf("%q: accept takes no reply", s)
		}
		return a, nil
	case TempFail, Reject:
	default:
		return Action{}, fmt.Errorf("%q: action must be accept, tempfail or reject", s)
	}
	if len(f) < 3 {
		return Action{}, fmt.Errorf("%q: %s needs a reply code and an enhanced status code, e.g. %q", s, a.Verb, "reject 550 5.7.23")
	}
	code, err := strconv.Atoi(f[1])
	class := byte('5')
	if a.Verb == TempFail {
		class = '4'
	}
	if err != nil || len(f[1]) != 3 || f[1][0] != class {
		return Action{}, fmt.Errorf("%q: %s needs a %cxx reply code", s, a.Verb, class)
	}
	if e, ok := smtpstatus.Parse(f[2]); !ok || byte('0'+e[0]) != class {
		return Action{}, fmt.Errorf("%q: enhanced status code must look like %c.7.1", s, class)
	}
	a.Code, a.Status = code, f[2]
	a.Text = strings.Join(f[3:], " ")
	for _, r := range a.Text {
		if r < 0x20 || r > 0x7e {
			return Action{}, fmt.Errorf("%q: reply text must be printable ASCII", s)
		}
	}
	return a, nil
}

func (a Action) String() string {
	if a.Verb == Accept || a.Verb == "" {
		return string(Accept)
	}
	s := fmt.Sprintf("%s %d %s", a.Verb, a.Code, a.Status)
	if a.Text != "" {
		s += " " + a.Text
	}
	return s
}

// MarshalText prints the textual form (for check-config).
func (a Action) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// UnmarshalText parses the textual form.
func (a *Action) UnmarshalText(b []byte) error {
	v, err := ParseAction(string(b))
	if err != nil {
		return err
	}
	*a = v
	return nil
}
