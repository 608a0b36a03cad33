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
    sub_state: str = "unknown"  # "auto-restart": systemd is about to restart it (Restart=)
    # Seconds since this start began (the unit left inactive, or systemd restarted its
    # main process on its own), on the node's clock.
    since_start: float | None = None
    restarts: int | None = None  # systemd's NRestarts: its own restarts (None: not reported)
    # How the health URL answered: "ok", "failed" (another answer), "refused" (nothing
    # listens yet), "timeout" (no answer: hung); None without a URL or when not running.
    health_check: str | None = None
    # This start of the unit (systemd's InvocationID) answered healthy at least once
    # (kept on the node, so a new ACTIVE knows it); None when not reported.
    seen_healthy: bool | None = None
    epoch_seen: int = 0
    changed: bool = False
    refused: bool = False
    error: str = ""

    @property
    def serving(self) -> bool:
        """Running and not known to be unhealthy."""
        return self.running and self.healthy is not False

    @property
    def warmed_up(self) -> bool:
        """Past its warm-up, whatever its age: it answered healthy since this start,
        or its health port accepts connections but does not answer (hung)."""
        return self.running and (bool(self.seen_healthy) or self.health_check == "timeout")
