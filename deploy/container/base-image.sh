#!/usr/bin/env bash
# Builds a Debian bookworm root filesystem with Python 3.11, venv, tini and CA certificates, as a
# tarball `podman import` turns into a base image. For machines that reach Debian's mirror but no
# image registry: pass the imported image as the Dockerfile's BASE_IMAGE.
#
#   deploy/container/base-image.sh build/container/bookworm-python.tar
#
# Does nothing when the tarball exists. The mirror is the first one apt uses for bookworm here
# (/etc/apt/sources.list*), or DEBIAN_MIRROR. Needs root and debootstrap.
set -euo pipefail
out=${1:?usage: base-image.sh OUT.tar}
[[ -s $out ]] && exit 0
mirror_from_apt() {
    # deb822 (.sources): the URIs of a stanza whose Suites name bookworm; one-line: deb URI bookworm ...
    awk '/^URIs:/ {uri=$2} /^Suites:/ && / bookworm( |$)/ && uri ~ /debian$/ {print uri; exit}' \
        /etc/apt/sources.list.d/*.sources 2>/dev/null || true
    awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
        2>/dev/null || true
}
mirror=${DEBIAN_MIRROR:-$(mirror_from_apt | head -n1)}
mirror=${mirror:-http://deb.debian.org/debian}
mkdir -p "$(dirname "$out")"
work=$(mktemp -d "$(dirname "$out")/rootfs.XXXXXX")
# --one-file-system: never descend into a /proc or /sys debootstrap left mounted after a failure.
trap 'umount "$work/root/proc" "$work/root/sys" 2>/dev/null || true; rm -rf --one-file-system "$work" "$out.tmp"' EXIT
echo "debootstrap bookworm from $mirror (python3, python3-venv, tini, ca-certificates)" >&2
debootstrap --variant=minbase --include=python3,python3-venv,tini,ca-certificates \
    bookworm "$work/root" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
# What a container never reads (as Debian's slim images do): package lists, caches, docs, man pages, locales.
rm -rf "$work/root/var/lib/apt/lists/"* "$work/root/var/cache/apt/"*.bin "$work/root/var/cache/apt/archives/"*.deb \
    "$work/root/usr/share/doc/"* "$work/root/usr/share/man/"* "$work/root/usr/share/info/"* \
    "$work/root/usr/share/locale/"*
tar --numeric-owner -C "$work/root" -cf "$out.tmp" .
mv "$out.tmp" "$out"
