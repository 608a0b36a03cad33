#!/usr/bin/python3
"""Node side of every scheduler action: status, start, stop, restart.

Installed on each master as ``/usr/local/libexec/ha-toolkit/node-action``
(root-owned; the controller's user may run exactly this through sudo) and run
by the runtime playbooks. Standard library only: it runs with the node's
``/usr/bin/python3``, not the controller's virtualenv.

Fencing token: start, stop and restart carry the epoch of the controller that
asks. Under an exclusive lock on the state file, the node compares it with the
highest epoch it has seen, refuses a lower one, records a higher one, and only
then acts, so a deposed ACTIVE can never act after its successor has.
``--epoch local`` marks a stop the node's own controller decided (self-fencing):
stopping is always safe, so it skips the check.

Every setting comes from the caller (the runtime playbook, with variables built
by ha_toolkit.nodes.scheduler_playbook_vars): start, stop and restart need
``--epoch``, stop and restart ``--stop-timeout``, and there are no defaults to
drift from the controller's config. Without ``--health-url`` there is no
health check.

Prints one JSON object: the unit's state after the action, whether anything
changed, and whether the action was refused. The health check tells apart a
scheduler still starting (its port refuses the connection: ``health_check``
"refused") from a hung one (the port accepts but does not answer within
HEALTH_TIMEOUT: "timeout"); ``seen_healthy`` says whether this start of the
unit (its systemd InvocationID) has answered healthy to any node-action run,
a mark kept on the node so that a new ACTIVE controller knows it too.
"""

from __future__ import annotations

import argparse
import fcntl
import http.client
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

# Where the failover_controller role installs this program (the only command its sudo
# rule allows) and keeps the fencing epoch: roles/failover_controller/vars/main.yml
# holds the same two paths (tests/test_role_contract.py compares them).
INSTALL_PATH = "/usr/local/libexec/ha-toolkit/node-action"
STATE_DIR = "/var/lib/ha-toolkit"
EPOCH_FILE = "epoch"
# Holds the InvocationID of the unit's start last seen healthy ("healthy-<unit>").
SEEN_HEALTHY_PREFIX = "healthy-"
# States in which the unit may be running code: a scheduler counts as present
# in all of them (safety first: "deactivating" can still schedule).
RUNNING_STATES = {"active", "activating", "deactivating", "reloading", "refreshing"}
# After the SIGKILL that ends a stop past its stop_timeout, how long to wait for
# the unit to go; and how long the health URL may take to answer. The controller's
# bound on one node-action (ha_toolkit.nodes.NODE_ACTION_MARGIN) covers both.
KILL_WAIT = 10.0
HEALTH_TIMEOUT = 2.0


def unit_state(unit: str) -> dict[str, Any]:
    out = subprocess.run(
        [
            "systemctl",
            "show",
            unit,
            "--property=ActiveState,SubState,MainPID,LoadState,InactiveExitTimestampMonotonic,"
            "ExecMainStartTimestampMonotonic,NRestarts,InvocationID,Job",
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    active_state = props.get("ActiveState", "unknown")
    # A job queued for the unit (a `start --no-block` waiting for a unit it is
    # ordered after, say) leaves it "inactive" until the job runs: it may start
    # at any moment, so it counts as running. Seen in a fault test: a start queued
    # behind the controller's own restart came up after a poll had observed the
    # node stopped, and the scheduler was started elsewhere as well.
    active = active_state in RUNNING_STATES
    pending_job = bool(props.get("Job"))
    running = active or pending_job
    # How long ago this start began, on this node's own clock: when the unit left
    # "inactive", or when systemd forked the main process again for a restart of its
    # own (Restart=: the unit never goes inactive in between). Lets the controller
    # tell a scheduler still starting up from a hung one.
    started_usec = max(
        int(props.get("InactiveExitTimestampMonotonic", "0") or 0),
        int(props.get("ExecMainStartTimestampMonotonic", "0") or 0),
    )
    # A queued start has not begun: the timestamps are an older start's.
    since_start = time.monotonic() - started_usec / 1e6 if active and started_usec else None
    if pending_job and not active:
        since_start = 0.0
    return {
        "active_state": active_state,
        "sub_state": props.get("SubState", "unknown"),
        "main_pid": int(props.get("MainPID", "0") or 0),
        "loaded": props.get("LoadState") == "loaded",
        "running": running,
        "pending_job": pending_job,
        "since_start": None if since_start is None else round(since_start, 3),
        # Restarts systemd made on its own (Restart=): the controller counts a crash
        # loop it never had to repair. Reset by a start from outside (reset-failed).
        "n_restarts": _int_or_none(props.get("NRestarts")),
        # One per start of the unit, systemd's own restarts included.
        "invocation_id": props.get("InvocationID") or None,
    }


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


def health(url: str | None, timeout: float = HEALTH_TIMEOUT) -> bool | None:
    """True/False from the health URL; None when no URL is configured."""
    check = health_check(url, timeout)
    return None if check is None else check == "ok"


def health_check(url: str | None, timeout: float = HEALTH_TIMEOUT) -> str | None:
    """How the health URL answered: "ok" (2xx), "failed" (any other answer, or a broken
    one), "refused" (nothing listens yet: starting), "timeout" (connected, or trying
    to, but no answer within `timeout`: hung); None when no URL is configured."""
    if not url:
        return None
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return "ok" if 200 <= int(response.status) < 300 else "failed"
    except urllib.error.HTTPError:
        return "failed"  # it answered: with an error status
    except urllib.error.URLError as exc:  # while connecting
        return _classify(exc.reason)
    except (OSError, ValueError, http.client.HTTPException) as exc:  # while reading
        return _classify(exc)


def _classify(error: object) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "refused"
    if isinstance(error, TimeoutError):  # socket.timeout too
        return "timeout"
    return "failed"


def seen_healthy(state_dir: str, unit: str, invocation_id: str | None, healthy: bool) -> bool:
    """Whether this start of `unit` (`invocation_id`) has answered healthy to any
    node-action run, counting this one; marks it on the node when it does."""
    if not invocation_id:
        return healthy
    path = os.path.join(state_dir, SEEN_HEALTHY_PREFIX + unit)
    try:
        with open(path) as f:
            marked = f.read().strip()
    except OSError:
        marked = ""
    if healthy and marked != invocation_id:
        try:
            os.makedirs(state_dir, mode=0o755, exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                f.write(f"{invocation_id}\n")
            os.replace(tmp, path)
        except OSError:
            pass  # not root, say (a CLI run): the next run by the controller marks it
    return healthy or marked == invocation_id


def read_epoch(state_dir: str) -> int:
    try:
        with open(os.path.join(state_dir, EPOCH_FILE)) as f:
            return int(f.read().strip() or 0)
    except FileNotFoundError:
        return 0


class Fence:
    """Holds the node's fencing lock for the duration of one action."""

    def __init__(self, state_dir: str) -> None:
        os.makedirs(state_dir, mode=0o755, exist_ok=True)
        self.state_dir = state_dir
        self.lock = open(os.path.join(state_dir, "epoch.lock"), "a")  # noqa: SIM115
        fcntl.flock(self.lock, fcntl.LOCK_EX)

    def admit(self, epoch: int) -> tuple[bool, int]:
        """(admitted, highest epoch seen before this call); records a higher epoch."""
        seen = read_epoch(self.state_dir)
        if epoch < seen:
            return False, seen
        if epoch > seen:
            path = os.path.join(self.state_dir, EPOCH_FILE)
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                f.write(f"{epoch}\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        return True, seen

    def close(self) -> None:
        self.lock.close()


def systemctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemctl", *args], capture_output=True, text=True, check=False)


def wait_stopped(unit: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not unit_state(unit)["running"]:
            return True
        time.sleep(0.1)
    return not unit_state(unit)["running"]


def stop(unit: str, stop_timeout: float) -> bool:
    """Graceful stop, then SIGKILL after stop_timeout. True if anything changed."""
    if not unit_state(unit)["running"]:
        return False
    systemctl("stop", "--no-block", unit)
    if not wait_stopped(unit, stop_timeout):
        systemctl("kill", "--signal=SIGKILL", unit)
        wait_stopped(unit, KILL_WAIT)
    return True


def start(unit: str) -> bool:
    if unit_state(unit)["running"]:
        return False
    systemctl("reset-failed", unit)
    # --no-block: readiness is the controller's business (it polls health), and
    # a unit stuck "activating" must not hold the node's fencing lock.
    systemctl("start", "--no-block", unit)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="node-action")
    parser.add_argument("action", choices=["status", "start", "stop", "restart"])
    parser.add_argument("--unit", required=True)
    parser.add_argument("--epoch", default=None, help="fencing epoch, or 'local' for self-fencing")
    parser.add_argument("--health-url", default=None)
    parser.add_argument(
        "--stop-timeout", type=float, default=None, help="seconds before SIGKILL (stop, restart)"
    )
    parser.add_argument("--state-dir", default=STATE_DIR)
    args = parser.parse_args(argv)

    result: dict[str, Any] = {"action": args.action, "changed": False, "refused": False}
    if args.action != "status":
        if args.epoch is None:
            parser.error(f"{args.action} needs --epoch")
        if args.action in ("stop", "restart") and args.stop_timeout is None:
            parser.error(f"{args.action} needs --stop-timeout")
        fence = Fence(args.state_dir)
        try:
            if args.epoch != "local":
                admitted, seen = fence.admit(int(args.epoch))
                if not admitted:
                    result.update(refused=True, message=f"refused: epoch {args.epoch} < {seen}")
            if not result["refused"]:
                if args.action in ("stop", "restart"):
                    result["changed"] = stop(args.unit, args.stop_timeout)
                if args.action in ("start", "restart"):
                    result["changed"] = start(args.unit) or result["changed"]
        finally:
            fence.close()
    result.update(unit_state(args.unit))
    checked = result["running"] and bool(args.health_url)
    check = health_check(args.health_url) if checked else None
    result["healthy"] = (check == "ok" if checked else None) if result["running"] else False
    result["health_check"] = check
    result["seen_healthy"] = checked and seen_healthy(
        args.state_dir, args.unit, result["invocation_id"], check == "ok"
    )
    result["epoch_seen"] = read_epoch(args.state_dir)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
