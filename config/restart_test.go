package config

import (
	"reflect"
	"testing"
)

func TestRestartNeeded(t *testing.T) {
	a, b := Default(), Default()
	if got := RestartNeeded(a, b); len(got) != 0 {
		t.Errorf("same configuration: %v", got)
	}
	b.DryRun = true // a reload applies it
	b.Listen = "inet:127.0.0.1:9999"
	b.Log.Format = "json"
	b.DNS.Servers = []string{"192.0.2.53:53"}
	b.Redis.URL = "redis://127.0.0.1:6379"
	b.Callout.ProbeOn = []string{"none"} // the filter reads it: a reload applies it
	b.Callout.SourceIPv4 = "127.0.0.1"
	if got, want := RestartNeeded(a, b), []string{"listen", "log.format", "dns", "callout (prober settings)", "redis"}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}
