"""What the controller knows about a master's scheduler, as plain data.

Kept apart from nodes.py (which produces these from Ansible runs) so that the
pure parts of the package, decisions.py above all, import no Ansible.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NodeStatus:
    """The scheduler on one master, as a node-action run reported it."""

    node: str
    reachable: bool
    running: bool = False  # the unit is in a state that may run scheduler code
    healthy: bool | None = None  # health URL answer; None without a URL
    main_pid: int = 0
    active_state: str = "unknown"
    since_start: float | None = None  # seconds since the unit began starting (node's clock)
    restarts: int | None = None  # systemd's NRestarts: its own restarts (None: not reported)
    epoch_seen: int = 0
    changed: bool = False
    refused: bool = False
    error: str = ""

    @property
    def serving(self) -> bool:
        """Running and not known to be unhealthy."""
        return self.running and self.healthy is not False
