#!/usr/bin/env bash
# Build the node image locally (no registry is reachable): debootstrap a
# Debian bookworm root with systemd and sshd, then `docker import` it.
# The tag is a hash of this folder, so the image is rebuilt only when the
# recipe changes. Prints the image reference on stdout.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
name="${NODE_IMAGE_NAME:-ha-toolkit-node}"
tag="$(cd "$here" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12)"
image="$name:$tag"
if docker image inspect "$image" >/dev/null 2>&1; then
    echo "$image"
    exit 0
fi
mirror="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
[ -n "$mirror" ] || mirror="$(awk '$1 == "deb" && $3 ~ /^bookworm$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)"
[ -n "$mirror" ] || mirror="http://deb.debian.org/debian"
work="$(mktemp -d "${TMPDIR:-/tmp}/ha-toolkit-node.XXXXXX")"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
include="$(grep -v '^#' "$here/packages.txt" | paste -sd, -)"
echo "build-node-image: debootstrap bookworm from $mirror (about a minute)" >&2
if ! debootstrap --variant=minbase --include="$include" bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1; then
    echo "build-node-image: debootstrap failed: $(tail -n 1 "$work/debootstrap.log")" >&2
    exit 1
fi
cp -a "$here/rootfs/." "$rootfs/"
# Unique identity per container: no host keys, no machine-id baked in.
rm -f "$rootfs"/etc/ssh/ssh_host_* "$rootfs/etc/machine-id"
touch "$rootfs/etc/machine-id"
chroot "$rootfs" systemctl enable ssh-hostkeys.service ssh.service >/dev/null 2>&1
# Units that make no sense in a container and slow the boot.
chroot "$rootfs" systemctl mask getty@.service console-getty.service \
    systemd-udevd.service systemd-udev-trigger.service systemd-modules-load.service \
    systemd-remount-fs.service sys-kernel-debug.mount sys-kernel-tracing.mount \
    apt-daily.timer apt-daily-upgrade.timer >/dev/null 2>&1
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
echo "deb $mirror bookworm main" > "$rootfs/etc/apt/sources.list"
tar -C "$rootfs" -c . | docker import \
    --change 'CMD ["/lib/systemd/systemd"]' \
    --change 'ENV container=docker' \
    --change "LABEL ha-toolkit.image=node" \
    - "$image" >/dev/null
echo "$image"
