#!/usr/bin/env bash
# Use the running Docker engine, or start dockerd in the background and wait for it.
set -euo pipefail
log_dir="${BUILD_DIR:-.build}"
mkdir -p "$log_dir"
docker info >/dev/null 2>&1 && exit 0
if ! command -v dockerd >/dev/null; then
    echo "ensure-docker: no Docker engine answers and dockerd is not installed" >&2
    exit 1
fi
echo "ensure-docker: starting dockerd (log: $log_dir/dockerd.log)"
# setsid: the engine must outlive this make invocation.
setsid dockerd >"$log_dir/dockerd.log" 2>&1 < /dev/null &
for _ in $(seq 1 120); do
    docker info >/dev/null 2>&1 && exit 0
    if ! kill -0 $! 2>/dev/null; then
        echo "ensure-docker: dockerd exited: $(tail -n 1 "$log_dir/dockerd.log")" >&2
        exit 1
    fi
    sleep 0.5
done
echo "ensure-docker: dockerd did not answer within 60 s: $(tail -n 1 "$log_dir/dockerd.log")" >&2
exit 1
