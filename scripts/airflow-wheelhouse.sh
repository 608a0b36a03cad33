#!/usr/bin/env bash
# Build the Airflow wheelhouse on the host, for offline installs by the
# `airflow` role (pip inside the nodes has no route to an index it trusts).
#
#   scripts/airflow-wheelhouse.sh [OUT_DIR]     default: .build/wheelhouse-airflow
#
# Writes OUT_DIR/*.whl and OUT_DIR.tar (the same wheels in one file: the role
# copies one archive instead of ~150 files). Wheels are chosen for the nodes,
# not for this host: CPython 3.11, glibc <= 2.36 (Debian 12), x86_64. Nothing
# is done when OUT_DIR/.stamp already records the same inputs.
#
# Environment: AIRFLOW_VERSION (3.3.2), AIRFLOW_EXTRAS (celery,postgres,fab),
# AIRFLOW_PYTHON_VERSION (3.11.2, Debian 12's python3:
# dependency markers such as python_full_version < "3.11.3" depend on the patch level), AIRFLOW_GLIBC_MINOR (36), PIP (pip of .venv).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$repo/.build/wheelhouse-airflow}"
version="${AIRFLOW_VERSION:-3.3.2}"
extras="${AIRFLOW_EXTRAS:-celery,postgres,fab}"
pyver="${AIRFLOW_PYTHON_VERSION:-3.11.2}"
abi="cp$(echo "$pyver" | cut -d. -f1,2 | tr -d .)"
glibc_minor="${AIRFLOW_GLIBC_MINOR:-36}"
pip="${PIP:-$repo/.venv/bin/pip}"
[ -x "$pip" ] || pip="python3 -m pip"

# pip evaluates environment markers with the interpreter it runs on, not the
# target's: redis needs async-timeout on Python < 3.11.3 (Debian 12 has 3.11.2),
# which a newer host Python would leave out.
# Celery 5.7 removed celery.backends.database.retry, which the celery provider
# imports (Airflow's constraints file would pin it; the role's airflow_pip_pins
# does): keep 5.5 (quorum queue settings) or 5.6.
requirements=("apache-airflow[$extras]==$version" "psycopg2-binary" "async-timeout>=4.0.3" "celery>=5.5,<5.7")
stamp="$( { cat "$0"; echo "$version $extras $pyver $glibc_minor ${requirements[*]}"; } \
    | sha256sum | cut -c1-16)"
if [ -f "$out/.stamp" ] && [ "$(cat "$out/.stamp")" = "$stamp" ] && [ -f "$out.tar" ]; then
    echo "airflow-wheelhouse: $out is up to date" >&2
    exit 0
fi

# pip does not widen an explicit manylinux_2_X platform to older glibc
# versions, so name every one the nodes can run.
platforms=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
for minor in $(seq 17 "$glibc_minor"); do
    platforms+=(--platform "manylinux_2_${minor}_x86_64")
done

tmp="$out.tmp"
rm -rf "$tmp"
mkdir -p "$tmp"
start=$(date +%s)
echo "airflow-wheelhouse: downloading apache-airflow[$extras]==$version for CPython $pyver (~75 MB of wheels, ~350 MB once installed)" >&2
$pip download -q --disable-pip-version-check --only-binary=:all: \
    --python-version "$pyver" --implementation cp --abi "$abi" "${platforms[@]}" \
    --dest "$tmp" "${requirements[@]}" 2> >(grep -v "is ignored: it is neither" >&2)
echo "$stamp" > "$tmp/.stamp"
rm -rf "$out" "$out.tar"
mv "$tmp" "$out"
tar -C "$out" -cf "$out.tar.tmp" --exclude .stamp .
mv "$out.tar.tmp" "$out.tar"
echo "airflow-wheelhouse: $(find "$out" -name '*.whl' | wc -l) wheels, $(du -sh "$out" | cut -f1), $(( $(date +%s) - start )) s" >&2
