#!/bin/bash
# scripts/postfix.sh up MILTER [LISTEN] | down
# A private Postfix instance for senderguard's end-to-end tests: SMTP on
# LISTEN (default 127.0.0.1:2525), every session handed to MILTER (Postfix
# syntax, e.g. inet:127.0.0.1:8896; "none" for a plain mail server), mail
# for example.test delivered to one Maildir. Files under $MTA_DIR/postfix
# (default /tmp/senderguard-mta/postfix); /etc/postfix is only told about
# the instance (alternate_config_directories). Needs root and the postfix
# package. Environment: MTA_USERS (only these local parts exist),
# MILTER_DEFAULT_ACTION (tempfail), MILTER_TIMEOUT (30s), MTA_DOMAINS (the
# domains it accepts mail for, all into the same Maildir; example.test),
# MTA_TLS_CERT and MTA_TLS_KEY (PEM files: STARTTLS required), MTA_CHROOT
# (y: smtpd chrooted in the queue directory), MTA_MAIN_CF (lines added to
# main.cf, e.g. smtpd_helo_restrictions for a strict server).
set -eu
cmd=${1:?usage: postfix.sh up MILTER [LISTEN] | down}
dir=${MTA_DIR:-/tmp/senderguard-mta}/postfix
etc=$dir/etc

stop() {
	[ -f "$etc/main.cf" ] || return 0
	postfix -c "$etc" stop >/dev/null 2>&1 || true
	local pidf=$dir/queue/pid/master.pid n=0
	while [ -f "$pidf" ] && kill -0 "$(tr -d ' ' <"$pidf")" 2>/dev/null && [ $n -lt 60 ]; do
		sleep 0.1; n=$((n + 1))
	done
}

# forget drops our directory from /etc/postfix's alternate_config_directories.
forget() {
	local list
	list=$(postconf -h alternate_config_directories 2>/dev/null | tr ',' '\n' | sed 's/^ *//;s/ *$//' | grep -vxF "$etc" | paste -sd, - | sed 's/,/, /g')
	postconf -e "alternate_config_directories = $list" 2>/dev/null || true
}

case $cmd in
down) stop; forget; exit 0 ;;
up) ;;
*) echo "usage: postfix.sh up MILTER [LISTEN] | down" >&2; exit 2 ;;
esac

milter=${2:?usage: postfix.sh up MILTER [LISTEN]}
listen=${3:-127.0.0.1:2525}
command -v postfix >/dev/null || { echo "postfix.sh: postfix is not installed (apt-get install postfix)" >&2; exit 1; }
stop
[ -f /etc/postfix/main.cf ] || : >/etc/postfix/main.cf
case ", $(postconf -h alternate_config_directories 2>/dev/null), " in
*", $etc, "*) ;;
*) old=$(postconf -h alternate_config_directories 2>/dev/null || true)
   postconf -e "alternate_config_directories = ${old:+$old, }$etc" ;;
esac
mkdir -p "$etc" "$dir/queue" "$dir/data" "$dir/mail"
chmod 755 "$dir" "$(dirname "$dir")"
chown postfix "$dir/data"
chown nobody:nogroup "$dir/mail"
# master.cf: the stock services, with the smtpd listener moved to $listen.
# MTA_CHROOT=y runs smtpd chrooted in the queue directory, as Debian's
# stock master.cf does.
awk -v l="$listen" -v c="${MTA_CHROOT:-n}" '$1=="smtp" && $2=="inet" {print l "  inet  n  -  " c "  -  -  smtpd"; next} {print}' /etc/postfix/master.cf >"$etc/master.cf"
mailboxes=static:inbox/
if [ -n "${MTA_USERS:-}" ]; then
	for d in ${MTA_DOMAINS:-example.test}; do
		for u in $MTA_USERS; do echo "$u@$d inbox/"; done
	done >"$etc/mailboxes"
	mailboxes=texthash:$etc/mailboxes
fi
[ "$milter" = none ] && milter=
cat >"$etc/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $dir/queue
data_directory = $dir/data
maillog_file = $dir/maillog
maillog_file_prefixes = $dir
myhostname = mx.example.test
mydomain = example.test
mydestination =
inet_interfaces = loopback-only
inet_protocols = all
mynetworks = 127.0.0.1/32
smtpd_banner = \$myhostname ESMTP
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
smtpd_authorized_xclient_hosts = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
relay_domains =
virtual_mailbox_domains = ${MTA_DOMAINS:-example.test}
virtual_mailbox_base = $dir/mail
virtual_mailbox_maps = $mailboxes
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
biff = no
smtpd_milters = $milter
non_smtpd_milters =
milter_protocol = 6
milter_default_action = ${MILTER_DEFAULT_ACTION:-tempfail}
milter_connect_timeout = 10s
milter_command_timeout = ${MILTER_TIMEOUT:-30s}
milter_content_timeout = ${MILTER_TIMEOUT:-30s}
CF
if [ -n "${MTA_TLS_CERT:-}" ]; then
	# A server that insists on TLS: MAIL before STARTTLS gets 530 5.7.0.
	cat >>"$etc/main.cf" <<CF
smtpd_tls_cert_file = $MTA_TLS_CERT
smtpd_tls_key_file = $MTA_TLS_KEY
smtpd_tls_security_level = encrypt
CF
fi
if [ -n "${MTA_MAIN_CF:-}" ]; then
	printf '%s\n' "$MTA_MAIN_CF" >>"$etc/main.cf"
fi
# postfix reports problems on stderr only when it has a terminal.
if ! out=$(script -qec "postfix -c '$etc' check && postfix -c '$etc' start" /dev/null 2>&1); then
	echo "postfix.sh: postfix did not start: $out" >&2
	exit 1
fi
for _ in $(seq 100); do
	(exec 3<>"/dev/tcp/${listen%:*}/${listen##*:}") 2>/dev/null && { echo "postfix: smtp $listen, milter ${milter:-none}, maildir $dir/mail/inbox"; exit 0; }
	sleep 0.1
done
echo "postfix.sh: nothing listens on $listen; see $dir/maillog" >&2
exit 1
