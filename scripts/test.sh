#!/bin/bash
# scripts/test.sh: every test of senderguard, as CI runs them. Needs root
# (Postfix and Sendmail run in the end-to-end suite) and Debian 12.
set -eu
cd "$(dirname "$0")/.."
scripts/deps.sh
echo "== alert rules (promtool)"
promtool check rules deploy/monitoring/alerts.yaml
promtool test rules deploy/monitoring/alerts_test.yaml
echo "== go vet"
go vet ./...
go vet -tags e2e ./e2e
echo "== unit and integration tests (race detector; includes the RFC 7208 conformance suite when ../shared/spf-suite exists)"
go test -race -count=1 ./...
echo "== memory bounds, measured without the race detector"
go test -count=1 -run 'TestHeaderFloodMemoryIsBounded' -v ./filter
echo "== end-to-end: real Postfix and Sendmail"
go test -tags e2e -count=1 -timeout 20m -v ./e2e
