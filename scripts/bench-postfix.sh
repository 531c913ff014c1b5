#!/bin/bash
# scripts/bench-postfix.sh [MESSAGES] [SESSIONS]
# Mail through a real Postfix (smtp-source, MESSAGES messages over
# SESSIONS parallel sessions; 1000 and 16) with each milter in turn: none,
# the no-op go-milter of ../shared/milterload (the protocol's ceiling),
# and senderguard (warm caches: one sender, HELO and MAIL FROM checked,
# SPF pass through a loopback DNS world; callouts off). Prints messages a
# second per milter and senderguard's ratio to the no-op, median of REPS
# (3) runs each. Needs root, postfix (smtp-source) and ../shared/milterload.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000} s=${2:-16} reps=${REPS:-3}
ml=${MILTERLOAD:-../shared/milterload}
[ -d "$ml" ] || { echo "bench-postfix.sh: no $ml (the load tool's no-op milter)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "bench-postfix.sh: run as root (Postfix)" >&2; exit 2; }
command -v smtp-source >/dev/null || { echo "bench-postfix.sh: smtp-source missing (apt-get install postfix)" >&2; exit 2; }
t=$(mktemp -d)
mtadir=/tmp/senderguard-bench-mta
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for m in none noop senderguard; do MTA_DIR=$mtadir/$m scripts/postfix.sh down >/dev/null 2>&1 || true; done
	rm -rf "$t"
}
trap cleanup EXIT
go build -o "$t/senderguard" ./cmd/senderguard
(cd "$ml" && go build -o "$t/milterload" . && go build -o "$t/noop" ./noop)

# A DNS zone on loopback: pass.bench.test authorizes 127.0.0.1.
go build -o "$t/zone" ./scripts/benchzone
"$t/zone" -listen 127.0.0.1:5399 & pids+=($!)
"$t/noop" -listen 127.0.0.1:8897 >/dev/null 2>&1 & pids+=($!)
"$t/senderguard" serve -listen inet:127.0.0.1:8896 -metrics-listen 127.0.0.1:9896 -admin "" -dns 127.0.0.1:5399 \
	-hostname mx.example.test -callout=false -trusted-networks= >"$t/senderguard.log" 2>&1 & pids+=($!)
sleep 1

# One Postfix per milter, so that runs can alternate (drift of a busy
# machine then hits each milter alike).
declare -A port=([none]=2597 [noop]=2598 [senderguard]=2599)
declare -A spec=([none]=none [noop]=inet:127.0.0.1:8897 [senderguard]=inet:127.0.0.1:8896)
for m in none noop senderguard; do
	MTA_DIR=$mtadir/$m MILTER_DEFAULT_ACTION=tempfail scripts/postfix.sh up "${spec[$m]}" "127.0.0.1:${port[$m]}" >/dev/null
done

run() { # milter → messages a second
	local start end
	start=$(date +%s.%N)
	smtp-source -c -m "$n" -s "$s" -M client.bench.test -f bench@pass.bench.test -t u@example.test "127.0.0.1:${port[$1]}" >/dev/null
	end=$(date +%s.%N)
	printf '%.0f\n' "$(echo "$n / ($end - $start)" | bc -l)"
}
median() { sort -g | awk '{a[NR]=$1} END {printf "%.0f", a[int((NR+1)/2)]}'; }
declare -A rates rate
for m in none noop senderguard; do run "$m" >/dev/null; done # warm up: Postfix's processes, our caches
for _ in $(seq "$reps"); do
	for m in none noop senderguard; do rates[$m]+="$(run "$m") "; done
done
for m in none noop senderguard; do
	rate[$m]=$(printf '%s\n' ${rates[$m]} | median)
	echo "$m: ${rate[$m]} messages/s (runs: ${rates[$m]})"
done
{ grep -c 'msg=decision.*outcome=accept.* spf_mailfrom=pass .* spf_helo=pass ' "$t/senderguard.log" || true; } | sed 's/^/senderguard decisions (accept, SPF pass for both identities): /'
echo "senderguard / no-op: $(echo "${rate[senderguard]} / ${rate[noop]}" | bc -l | cut -c1-4)"
