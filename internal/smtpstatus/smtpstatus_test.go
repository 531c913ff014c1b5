package smtpstatus

import "testing"

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"5.1.1", true}, {"2.1.5", true}, {"4.7.500", true}, {"5.2.122", true}, {"5.0.0", true},
		{"", false}, {"5.1", false}, {"5.1.1.1", false}, {"3.1.1", false}, {"5..1", false}, {"5.1.", false},
		{"5.1000.1", false}, {"x.1.1", false}, {"5.1.1 ", false}, {"05.1.1", false},
	} {
		e, ok := Parse(tc.in)
		if ok != tc.ok || (ok && e.String() != tc.in) {
			t.Errorf("Parse(%q) = %v %v, want ok=%v", tc.in, e, ok, tc.ok)
		}
	}
}

func TestLeading(t *testing.T) {
	for _, tc := range []struct {
		code       int
		text, e, r string
	}{
		{550, "5.1.1 <a@b>: User unknown", "5.1.1", "<a@b>: User unknown"},
		{550, "4.1.1 wrong class", "", "4.1.1 wrong class"},
		{550, "5.1.1", "5.1.1", ""},
		{552, "1 Requested mail action aborted", "", "1 Requested mail action aborted"},
		{250, "2.1.5 Ok", "2.1.5", "Ok"},
		{550, "#5.1.0 Address rejected", "", "#5.1.0 Address rejected"},
	} {
		e, r := Leading(tc.code, tc.text)
		if e.String() != tc.e || r != tc.r {
			t.Errorf("Leading(%d, %q) = %q, %q; want %q, %q", tc.code, tc.text, e, r, tc.e, tc.r)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add("5.1.1")
	f.Add("4.7.500")
	f.Fuzz(func(t *testing.T, s string) {
		if e, ok := Parse(s); ok {
			if again, ok2 := Parse(e.String()); !ok2 || again != e {
				t.Fatalf("%q: %v does not round-trip", s, e)
			}
		}
	})
}
