"""This node's own scheduler unit and systemd: the self-fencing interlock.

Deliberately independent of Ansible and of the network: the check is one
``systemctl show``, and the stop falls back from the runtime playbook (run
locally, through nodes.py) to node-action, then to plain systemctl, because
safety must not depend on Ansible working.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

from ha_toolkit import node_action
from ha_toolkit.nodes import node_action_timeout, stop_on_this_node

log = logging.getLogger(__name__)

NODE_ACTION = Path(node_action.INSTALL_PATH)


def sd_notify(message: str) -> bool:
    """Send one sd_notify message (READY=1, WATCHDOG=1, STATUS=...); False outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message.encode(), address)
    except OSError as exc:
        log.warning("sd_notify failed: %s", exc)
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between watchdog pings systemd expects (WatchdogSec), if any."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and int(pid) != os.getpid()):
        return None
    return int(usec) / 1e6


class LocalScheduler:
    """The managed unit on this node."""

    def __init__(self, node: str, unit: str, stop_timeout: float) -> None:
        self.node = node
        self.unit = unit
        self.stop_timeout = stop_timeout

    def running(self) -> bool:
        return bool(node_action.unit_state(self.unit)["running"])

    def fence(self, reason: str, keepalive: Callable[[], None] | None = None) -> bool:
        """Stop the local scheduler now. True when it is confirmed stopped.
        `keepalive` is called while the playbook runs (the controller feeds its
        watchdog there, as far as that is still safe)."""

        def cancel() -> bool:
            if keepalive is not None:
                keepalive()
            return False

        log.warning("self-fencing: stopping %s on %s: %s", self.unit, self.node, reason)
        try:
            result = stop_on_this_node(self.node, self.unit, self.stop_timeout, cancel)
            host = result.hosts.get(self.node)
            if host is not None and host.ok and not host.report.get("running", True):
                return True
            log.warning(
                "self-fencing through Ansible failed (%s); stopping the unit directly",
                host.message if host else result.status,
            )
        except Exception as exc:  # Ansible itself broken: fall through to the direct stop
            log.warning("self-fencing through Ansible failed (%s); stopping the unit directly", exc)
        return self.stop_directly()

    def stop_directly(self) -> bool:
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
        if NODE_ACTION.exists():
            cmd = [
                *sudo,
                str(NODE_ACTION),
                "stop",
                "--unit",
                self.unit,
                "--epoch",
                "local",
                "--stop-timeout",
                str(self.stop_timeout),
            ]
        else:
            cmd = [*sudo, "systemctl", "stop", self.unit]
        try:
            subprocess.run(
                cmd,
                capture_output=True,
                check=False,
                timeout=node_action_timeout(self.stop_timeout),
            )
        except subprocess.TimeoutExpired:
            subprocess.run(
                [*sudo, "systemctl", "kill", "--signal=SIGKILL", self.unit],
                capture_output=True,
                check=False,
                timeout=15,
            )
        stopped = not self.running()
        if not stopped:
            log.error("self-fencing FAILED: %s still running on %s", self.unit, self.node)
        return stopped
