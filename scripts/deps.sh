#!/bin/bash
# scripts/deps.sh: installs what senderguard's tests need on Debian 12:
# Postfix and swaks for the end-to-end tests, policyd-spf (compared with
# senderguard on the configuration imported from its file), the libraries Debian's
# Sendmail, Exim and OpenSMTPD binaries need (they are unpacked, as they
# conflict with postfix), redis-server, and the Go modules.
set -eu
pkgs="postfix swaks redis-server prometheus opendmarc podman runc busybox-static m4 libdb5.3 libldap-2.5-0 liblockfile1 libnsl2 libsasl2-2 libssl3 libwrap0 iproute2 libidn12 libevent-2.1-7 util-linux postfix-policyd-spf-python"
missing=
for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
	echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
	export DEBIAN_FRONTEND=noninteractive
	apt-get -o DPkg::Lock::Timeout=600 install -y -qq $missing >/dev/null ||
		{ apt-get -o DPkg::Lock::Timeout=600 update -qq && apt-get -o DPkg::Lock::Timeout=600 install -y -qq $missing >/dev/null; }
fi
# Unpack Sendmail now, so the first test run does not pay for it.
root=${SENDMAIL_ROOT:-/var/cache/senderguard-e2e/sendmail-root}
if [ ! -x "$root/usr/libexec/sendmail/sendmail" ]; then
	debs=$(mktemp -d)
	chmod 777 "$debs"
	(cd "$debs" && apt-get download sendmail-bin sendmail-base sendmail-cf >/dev/null 2>&1) ||
		{ apt-get -o DPkg::Lock::Timeout=600 update -qq && (cd "$debs" && apt-get download sendmail-bin sendmail-base sendmail-cf >/dev/null 2>&1); }
	mkdir -p "$root"
	for deb in "$debs"/*.deb; do dpkg -x "$deb" "$root"; done
	rm -rf "$debs"
fi
# Exim and OpenSMTPD as probed mail servers (scripts/othermta.sh): their
# packages conflict with postfix too, so they are unpacked, not installed.
root=${OTHERMTA_ROOT:-/var/cache/senderguard-e2e/othermta-root}
if [ ! -x "$root/usr/sbin/exim4" ] || [ ! -x "$root/usr/sbin/smtpd" ]; then
	debs=$(mktemp -d)
	chmod 777 "$debs"
	(cd "$debs" && apt-get download exim4-daemon-light exim4-base exim4-config opensmtpd >/dev/null 2>&1) ||
		{ apt-get -o DPkg::Lock::Timeout=600 update -qq && (cd "$debs" && apt-get download exim4-daemon-light exim4-base exim4-config opensmtpd >/dev/null 2>&1); }
	mkdir -p "$root"
	for deb in "$debs"/*.deb; do dpkg -x "$deb" "$root"; done
	rm -rf "$debs"
fi
# Podman with runc (crun cannot start containers on these hosts), and
# rlimits the container init may set without CAP_SYS_RESOURCE.
conf=/etc/containers/containers.conf.d/senderguard-tests.conf
if [ ! -f "$conf" ]; then
	mkdir -p "$(dirname "$conf")"
	printf '[engine]\nruntime = "runc"\n[containers]\ndefault_ulimits = ["nofile=8192:8192", "nproc=4096:4096"]\n' >"$conf"
fi
cd "$(dirname "$0")/.."
go mod download
