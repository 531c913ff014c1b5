#!/bin/bash
# scripts/image.sh [TAG]: builds the sidecar image from the Dockerfile with
# podman, on a machine that reaches no container registry: the Dockerfile's
# base images are replaced by stand-ins made from local parts
#   GO_IMAGE   a static busybox shell; the machine's Go toolchain and module
#              cache are mounted into the build (no network needed)
#   BASE_IMAGE /etc/passwd and /etc/group with 65532 (nonroot), CA bundle
# Sites with a registry mirror pass GO_IMAGE/BASE_IMAGE build args instead.
# Needs root, podman and runc (scripts/deps.sh installs them and points
# podman at runc).
set -eu
tag=${1:-localhost/senderguard:test}
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/base/etc/ssl/certs" "$work/base/tmp"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$work/base/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$work/base/etc/group"
cp /etc/ssl/certs/ca-certificates.crt "$work/base/etc/ssl/certs/"
chmod 1777 "$work/base/tmp"
tar -C "$work/base" -cf "$work/base.tar" .
podman import -q "$work/base.tar" localhost/senderguard-base:stand-in >/dev/null

mkdir -p "$work/go/bin" "$work/go/tmp" "$work/go/root" "$work/go/usr/local/go"
cp "$(command -v busybox)" "$work/go/bin/busybox"
for t in sh mkdir cp rm ls cat; do ln -s busybox "$work/go/bin/$t"; done
chmod 1777 "$work/go/tmp"
tar -C "$work/go" -cf "$work/go.tar" .
podman import -q --change 'ENV PATH=/usr/local/go/bin:/bin' --change 'ENV HOME=/root' \
	--change 'ENV GOPROXY=off' --change 'ENV GOFLAGS=-mod=mod' --change 'ENV GOTOOLCHAIN=local' \
	"$work/go.tar" localhost/senderguard-go:stand-in >/dev/null

goroot=$(go env GOROOT)
modcache=$(go env GOMODCACHE)
go mod download # everything the build needs, into the mounted cache
podman build --pull=never -q -t "$tag" \
	--build-arg GO_IMAGE=localhost/senderguard-go:stand-in \
	--build-arg BASE_IMAGE=localhost/senderguard-base:stand-in \
	-v "$goroot:/usr/local/go:ro" -v "$modcache:/root/go/pkg/mod" .
echo "image: $tag"
