#!/usr/bin/env bash
# `molecule test -s SCENARIO`, its whole output also kept in
# .build/logs/molecule-SCENARIO.log. On failure the last lines printed are a
# digest: whatever the scenario left in .build/molecule-SCENARIO/digest.txt
# (e.g. the controllers' last decisions), then the failed tasks and their
# messages. CI shows only the tail of a run, and the log is gone with its
# clone: the digest is what says why.
set -uo pipefail
scenario=${1:?usage: molecule-test.sh SCENARIO}
build=${BUILD_DIR:-.build}
log="$build/logs/molecule-$scenario.log"
mkdir -p "$build/logs"
rm -f "$build/molecule-$scenario/digest.txt"

molecule test -s "$scenario" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
if [ "$rc" -ne 0 ]; then
    if [ -s "$build/molecule-$scenario/digest.txt" ]; then
        echo "=== digest left by the scenario"
        cut -c1-300 "$build/molecule-$scenario/digest.txt" | tail -n 24
    fi
    # Last, as the tail is what CI shows: each failed task's header and result
    # (Molecule wraps long lines), colours stripped.
    echo "=== molecule/$scenario failed (exit $rc); full log: $log"
    sed 's/\x1b\[[0-9;]*m//g' "$log" | awk '
        /TASK \[/ { task = $0 }
        /fatal: \[|failed: \[/ { print task; n = 8 }
        n > 0 { print; n-- }' | cut -c1-300 | tail -n 18
fi
exit "$rc"
