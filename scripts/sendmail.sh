#!/bin/bash
# scripts/sendmail.sh up MILTER [LISTEN] | down
# A private Sendmail 8 daemon for senderguard's end-to-end tests: SMTP on
# LISTEN (default 127.0.0.1:2526), INPUT_MAIL_FILTER at MILTER (Sendmail
# syntax, e.g. inet:8896@127.0.0.1), mail for example.test accepted and kept
# in the queue (queue-only: headers are in the qf* files). Debian's sendmail
# conflicts with postfix, so its packages are unpacked (dpkg -x) under
# $SENDMAIL_ROOT, never installed. Needs root and m4.
set -eu
cmd=${1:?usage: sendmail.sh up MILTER [LISTEN] | down}
dir=${MTA_DIR:-/tmp/senderguard-mta}/sendmail
# The unpacked packages are kept outside $MTA_DIR so later runs reuse them.
root=${SENDMAIL_ROOT:-/var/cache/senderguard-e2e/sendmail-root}
sm=$root/usr/libexec/sendmail/sendmail

stop() {
	local pidf=$dir/run/sendmail.pid
	[ -f "$pidf" ] || return 0
	local pid n=0
	pid=$(head -1 "$pidf")
	kill "$pid" 2>/dev/null || true
	while kill -0 "$pid" 2>/dev/null && [ $n -lt 60 ]; do sleep 0.1; n=$((n + 1)); done
	rm -f "$pidf"
}

case $cmd in
down) stop; exit 0 ;;
up) ;;
*) echo "usage: sendmail.sh up MILTER [LISTEN] | down" >&2; exit 2 ;;
esac
milter=${2:?usage: sendmail.sh up MILTER [LISTEN]}
listen=${3:-127.0.0.1:2526}
stop
if [ ! -x "$sm" ]; then
	debs=$(mktemp -d)
	chmod 777 "$debs" # apt-get download drops root privileges
	(cd "$debs" && apt-get download sendmail-bin sendmail-base sendmail-cf >/dev/null)
	mkdir -p "$root"
	for deb in "$debs"/*.deb; do dpkg -x "$deb" "$root"; done
	rm -rf "$debs"
fi
mkdir -p "$dir/queue" "$dir/run" "$dir/etc"
chmod 700 "$dir/queue"
rm -f "$dir"/queue/*
: >"$dir/etc/aliases"
printf 'hosts files\naliases files\n' >"$dir/etc/service.switch"
printf '127.0.0.1 mx.example.test mx localhost\n' >"$dir/etc/hosts"
cf=$root/usr/share/sendmail/cf
cat >"$dir/etc/e2e.mc" <<MC
divert(-1)
divert(0)dnl
include(\`$cf/m4/cf.m4')dnl
VERSIONID(\`senderguard e2e')dnl
OSTYPE(\`linux')dnl
define(\`confDOMAIN_NAME', \`mx.example.test')dnl
define(\`confDONT_PROBE_INTERFACES', \`True')dnl
define(\`QUEUE_DIR', \`$dir/queue')dnl
define(\`confPID_FILE', \`$dir/run/sendmail.pid')dnl
define(\`STATUS_FILE', \`$dir/run/statistics')dnl
define(\`ALIAS_FILE', \`$dir/etc/aliases')dnl
define(\`confSERVICE_SWITCH_FILE', \`$dir/etc/service.switch')dnl
define(\`confHOSTS_FILE', \`$dir/etc/hosts')dnl
define(\`confDELIVERY_MODE', \`queueonly')dnl
define(\`confDONT_BLAME_SENDMAIL', \`GroupWritableDirPathSafe,NonRootSafeAddr')dnl
define(\`confPRIVACY_FLAGS', \`goaway')dnl
define(\`confTO_IDENT', \`0s')dnl
define(\`confMILTER_MACROS_CONNECT', \`j, _, {daemon_name}, {daemon_addr}, {if_name}, {if_addr}, {client_addr}, {client_name}, {client_port}')dnl
define(\`confMILTER_MACROS_ENVFROM', \`i, {auth_type}, {auth_authen}, {auth_ssf}, {auth_author}, {mail_mailer}, {mail_host}, {mail_addr}')dnl
define(\`confMILTER_MACROS_ENVRCPT', \`{rcpt_mailer}, {rcpt_host}, {rcpt_addr}')dnl
define(\`confMILTER_MACROS_EOM', \`i, {msg_id}')dnl
FEATURE(\`nocanonify')dnl
FEATURE(\`accept_unresolvable_domains')dnl
FEATURE(\`no_default_msa')dnl
RELAY_DOMAIN(\`example.test')dnl
DAEMON_OPTIONS(\`Port=${listen##*:}, Addr=${listen%:*}, Name=MTA')dnl
INPUT_MAIL_FILTER(\`senderguard', \`S=$milter, F=T, T=C:10s;S:30s;R:30s;E:60s')dnl
MAILER(\`smtp')dnl
MC
m4 -D_CF_DIR_="$cf/" "$dir/etc/e2e.mc" >"$dir/etc/sendmail.cf"
# Sendmail sleeps a minute at start when the machine's host name is not
# fully qualified; give the daemon its own UTS namespace with a FQDN.
h=$(hostname)
if [ "${h#*.}" = "$h" ] && command -v unshare >/dev/null; then
	unshare --uts sh -c "hostname mx.example.test && exec '$sm' -C '$dir/etc/sendmail.cf' -bd -L sm-e2e" >"$dir/run/daemon.log" 2>&1
else
	"$sm" -C "$dir/etc/sendmail.cf" -bd -L sm-e2e >"$dir/run/daemon.log" 2>&1
fi
for _ in $(seq 100); do
	(exec 3<>"/dev/tcp/${listen%:*}/${listen##*:}") 2>/dev/null && { echo "sendmail: smtp $listen, milter $milter, queue $dir/queue"; exit 0; }
	sleep 0.1
done
echo "sendmail.sh: nothing listens on $listen; see $dir/run/daemon.log" >&2
exit 1
