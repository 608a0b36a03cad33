#!/usr/bin/env bash
# Install the Debian packages the tests need; a no-op when all are present.
set -euo pipefail
packages=(docker.io debootstrap mariadb-server zookeeper openssh-client iptables default-jre-headless)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
    echo "ensure-apt: missing packages ${missing[*]} and no apt-get: install them by hand" >&2
    exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-apt: missing packages ${missing[*]}; run as root or install them by hand" >&2
    exit 1
fi
echo "ensure-apt: installing ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
