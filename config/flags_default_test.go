package config

import (
	"flag"
	"io"
	"reflect"
	"testing"
)

// TestFlagDefaultsComeFromDefault: the help's "(default ...)" is read from
// Default(), and giving each flag the value its help shows leaves the
// defaults as they are (the getter and the setter agree).
func TestFlagDefaultsComeFromDefault(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	BindFlags(fs)
	shown := 0
	fs.VisitAll(func(f *flag.Flag) {
		def := flagDefsByName()[f.Name]
		if def.bind.get == nil {
			return
		}
		if f.DefValue != "" {
			shown++
		}
		v := def.bind.get(Default())
		if def.boolean && v == "" {
			v = "false" // the flag package's zero, not shown
		}
		c := Default()
		if err := def.bind.set(c, v); err != nil {
			t.Errorf("-%s %q: %v", f.Name, f.DefValue, err)
			return
		}
		if !reflect.DeepEqual(c, Default()) {
			t.Errorf("-%s %q changes the defaults", f.Name, f.DefValue)
		}
	})
	if shown < 50 {
		t.Errorf("%d flags show a default, want most", shown)
	}
}

func flagDefsByName() map[string]flagDef {
	m := map[string]flagDef{}
	for _, d := range flagDefs() {
		m[d.name] = d
	}
	return m
}
