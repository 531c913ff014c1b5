package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestSeriesExistFromTheStart: the series alerts use are there at 0
// before their first event.
func TestSeriesExistFromTheStart(t *testing.T) {
	reg := prometheus.NewRegistry()
	New(reg, "test")
	want := `
# HELP senderguard_config_reloads_total Configuration reloads by result (success, failure).
# TYPE senderguard_config_reloads_total counter
senderguard_config_reloads_total{result="failure"} 0
senderguard_config_reloads_total{result="success"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "senderguard_config_reloads_total"); err != nil {
		t.Error(err)
	}
	n, err := testutil.GatherAndCount(reg, "senderguard_milter_errors_total", "senderguard_verdicts_total")
	if err != nil || n != len(MilterErrorKinds)+3*7 {
		t.Errorf("%d milter error and verdict series at start (%v), want %d", n, err, len(MilterErrorKinds)+3*7)
	}
}

// TestStoreUpAbsentWithoutRedis: a replica without a shared store must
// not export store_up 0, or SenderguardSharedStoreDown fires for it.
func TestStoreUpAbsentWithoutRedis(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg, "test")
	if n, err := testutil.GatherAndCount(reg, "senderguard_store_up"); err != nil || n != 0 {
		t.Errorf("%d store_up series without Redis (%v), want none", n, err)
	}
	m.StoreUp.WithLabelValues().Set(1)
	if n, _ := testutil.GatherAndCount(reg, "senderguard_store_up"); n != 1 {
		t.Errorf("%d store_up series once set, want 1", n)
	}
}
