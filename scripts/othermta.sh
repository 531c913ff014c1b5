#!/bin/bash
# scripts/othermta.sh exim|opensmtpd up LISTEN | down
# A private Exim 4 or OpenSMTPD daemon as a probed mail server for
# senderguard's end-to-end tests, on LISTEN (IP:PORT, a loopback address).
# Their Debian packages conflict with postfix (each is the system's mail
# transport), so they are unpacked (dpkg -x) under $OTHERMTA_ROOT, never
# installed, and each daemon runs in a mount namespace of its own
# (unshare -m) where a copy of /etc/passwd and /etc/group names its
# system users and its spool is a directory of $MTA_DIR.
#
# What each serves (users alice and postmaster; everything else unknown):
#   exim:      domain exim.test, Exim's default ACL shape (postmaster
#              always accepted, relay not permitted elsewhere, verify =
#              recipient: "550 Unrouteable address" for unknown users);
#   opensmtpd: domain osmtpd.test through an alias table ("550 Invalid
#              recipient: <a>" for unknown users and for other domains)
#              and virt.osmtpd.test through a virtual user table ("524
#              5.2.4 Mailing list expansion problem: <a>").
# Needs root and util-linux's unshare.
set -eu
kind=${1:?usage: othermta.sh exim|opensmtpd up LISTEN | down}
cmd=${2:?usage: othermta.sh exim|opensmtpd up LISTEN | down}
dir=${MTA_DIR:-/tmp/senderguard-mta}/$kind
root=${OTHERMTA_ROOT:-/var/cache/senderguard-e2e/othermta-root}

stop() {
	local pidf=$dir/daemon.pid
	[ -f "$pidf" ] || return 0
	local pid n=0
	pid=$(cat "$pidf")
	kill "$pid" 2>/dev/null || true
	while kill -0 "$pid" 2>/dev/null && [ $n -lt 60 ]; do sleep 0.1; n=$((n + 1)); done
	rm -f "$pidf"
}

case $cmd in
down) stop; exit 0 ;;
up) ;;
*) echo "usage: othermta.sh exim|opensmtpd up LISTEN | down" >&2; exit 2 ;;
esac
listen=${3:?usage: othermta.sh $kind up IP:PORT}
ip=${listen%:*}
port=${listen##*:}
stop
if [ ! -x "$root/usr/sbin/exim4" ] || [ ! -x "$root/usr/sbin/smtpd" ]; then
	debs=$(mktemp -d)
	chmod 777 "$debs" # apt-get download drops root privileges
	(cd "$debs" && apt-get download exim4-daemon-light exim4-base exim4-config opensmtpd >/dev/null 2>&1)
	mkdir -p "$root"
	for deb in "$debs"/*.deb; do dpkg -x "$deb" "$root"; done
	rm -rf "$debs"
fi
rm -rf "$dir"
mkdir -p "$dir"
chmod 755 "$dir" "$(dirname "$dir")"
cp /etc/passwd "$dir/passwd"
cp /etc/group "$dir/group"

# adduser NAME UID: a system user (and group) in the copies, unless the
# host has one of that name.
adduser() {
	grep -q "^$1:" "$dir/passwd" || echo "$1:x:$2:$2::/nonexistent:/usr/sbin/nologin" >>"$dir/passwd"
	grep -q "^$1:" "$dir/group" || echo "$1:x:$2:" >>"$dir/group"
}

case $kind in
exim)
	adduser Debian-exim 64990
	mkdir -p "$dir/spool"
	chown Debian-exim: "$dir/spool" 2>/dev/null || chown 64990:64990 "$dir/spool"
	cat >"$dir/exim.conf" <<EOF
primary_hostname = mx.exim.test
domainlist local_domains = exim.test
daemon_smtp_ports = $port
local_interfaces = $ip
exim_user = Debian-exim
exim_group = Debian-exim
spool_directory = $dir/spool
log_file_path = $dir/spool/%slog
acl_smtp_rcpt = acl_check_rcpt
host_lookup =
rfc1413_hosts =
begin acl
acl_check_rcpt:
  accept local_parts = postmaster
         domains = +local_domains
  require message = relay not permitted
          domains = +local_domains
  require verify = recipient
  accept
begin routers
localuser:
  driver = accept
  local_parts = alice : postmaster
  transport = local_delivery
begin transports
local_delivery:
  driver = appendfile
  file = /dev/null
  user = Debian-exim
EOF
	daemon="$root/usr/sbin/exim4 -C $dir/exim.conf -bdf"
	mounts=""
	;;
opensmtpd)
	adduser opensmtpd 64991
	adduser opensmtpq 64992
	mkdir -p "$dir/varlib/opensmtpd/empty" "$dir/varspool/smtpd"
	chmod 711 "$dir/varspool/smtpd"
	printf 'postmaster: root\nalice: root\n' >"$dir/aliases"
	printf 'postmaster@virt.osmtpd.test root\nalice@virt.osmtpd.test root\n' >"$dir/vusers"
	cat >"$dir/smtpd.conf" <<EOF
table aliases file:$dir/aliases
table vusers file:$dir/vusers
listen on $ip port $port hostname mx.osmtpd.test
action "alias" mbox alias <aliases>
action "virtual" mbox virtual <vusers>
match from any for domain "osmtpd.test" action "alias"
match from any for domain "virt.osmtpd.test" action "virtual"
EOF
	daemon="$root/usr/sbin/smtpd -d -f $dir/smtpd.conf"
	# OpenSMTPD's spool and chroot paths are built in: give it its own.
	mounts="mount --bind $dir/varlib /var/lib; mount --bind $dir/varspool /var/spool;"
	;;
*) echo "othermta.sh: unknown kind $kind" >&2; exit 2 ;;
esac

# The daemon replaces the shell, so the PID unshare reports is its own.
unshare -m --propagation private sh -c "mount --bind $dir/passwd /etc/passwd; mount --bind $dir/group /etc/group; $mounts exec $daemon" \
	>"$dir/daemon.log" 2>&1 &
echo $! >"$dir/daemon.pid"
for _ in $(seq 100); do
	if (exec 3<>"/dev/tcp/$ip/$port") 2>/dev/null; then
		exit 0
	fi
	sleep 0.1
done
echo "othermta.sh: $kind did not listen on $listen:" >&2
cat "$dir/daemon.log" >&2
exit 1
