#!/usr/bin/env bash
# Build the failover controller's wheelhouse on the host, for the
# `failover_controller` role: a wheel of this repository plus its
# dependencies, chosen for the nodes (CPython 3.11, glibc <= 2.36, x86_64).
#
#   scripts/controller-wheelhouse.sh [OUT_DIR]   default: .build/wheelhouse-controller
#
# Writes OUT_DIR/*.whl and OUT_DIR.tar. The dependencies are downloaded again
# only when pyproject.toml changes; the ha_toolkit wheel is rebuilt when the
# package's files change (OUT_DIR/.stamp records both).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$repo/.build/wheelhouse-controller}"
pyver="${CONTROLLER_PYTHON_VERSION:-3.11.2}"
glibc_minor="${CONTROLLER_GLIBC_MINOR:-36}"
abi="cp$(echo "$pyver" | cut -d. -f1,2 | tr -d .)"
pip="${PIP:-$repo/.venv/bin/pip}"
[ -x "$pip" ] || pip="python3 -m pip"

hash_of() { (cd "$repo" && find "$@" -type f ! -path '*/__pycache__/*' -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16; }
deps_stamp="$( { cat "$0"; echo "$pyver $glibc_minor"; cat "$repo/pyproject.toml"; } | sha256sum | cut -c1-16)"
code_stamp="$(hash_of pyproject.toml ha_toolkit playbooks)"
stamp="$deps_stamp $code_stamp"
if [ -f "$out/.stamp" ] && [ "$(cat "$out/.stamp")" = "$stamp" ] && [ -f "$out.tar" ]; then
    echo "controller-wheelhouse: $out is up to date" >&2
    exit 0
fi
mkdir -p "$out"
if [ ! -f "$out/.stamp" ] || [ "$(cut -d' ' -f1 "$out/.stamp")" != "$deps_stamp" ]; then
    platforms=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
    for minor in $(seq 17 "$glibc_minor"); do
        platforms+=(--platform "manylinux_2_${minor}_x86_64")
    done
    requirements="$(python3 -c 'import sys, tomllib; print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]))' "$repo/pyproject.toml")"
    rm -f "$out"/*.whl
    echo "controller-wheelhouse: downloading the dependencies for CPython $pyver" >&2
    # shellcheck disable=SC2086
    $pip download -q --disable-pip-version-check --only-binary=:all: \
        --python-version "$pyver" --implementation cp --abi "$abi" "${platforms[@]}" \
        --dest "$out" $requirements 2> >(grep -v "is ignored: it is neither" >&2)
fi
rm -f "$out"/ha_toolkit-*.whl
# setuptools builds in ./build and never removes what it copied there before:
# a module deleted from the package would live on in the wheel.
rm -rf "$repo/build"
$pip wheel -q --disable-pip-version-check --no-deps --wheel-dir "$out" "$repo" >/dev/null \
    2> >(grep -v "is ignored: it is neither" >&2)
echo "$stamp" > "$out/.stamp"
tar -C "$out" -cf "$out.tar.tmp" --exclude .stamp .
mv "$out.tar.tmp" "$out.tar"
echo "controller-wheelhouse: $(find "$out" -name '*.whl' | wc -l) wheels, $(du -sh "$out" | cut -f1)" >&2
