#!/bin/bash
# scripts/test.sh: every test of senderguard, as CI runs them. Needs root
# (Postfix and Sendmail run in the end-to-end suite) and Debian 12.
set -eu
if [ "$(id -u)" != 0 ]; then
	echo "scripts/test.sh must run as root: it installs Debian packages with apt and" >&2
	echo "starts private Postfix, Sendmail and Redis instances on loopback." >&2
	echo "Run it as root, or with sudo where sudo is installed." >&2
	exit 1
fi
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
