"""Node actions: run a playbook with ansible-runner and return typed per-host results.

Nothing else in the package knows about Ansible's runs (warm_ansible only
hosts the ansible-playbook process: the controller's runs are forked from an
already imported one). Results come from runner
events (never from scraping output): each host ends `ok`, `failed` or
`unreachable`, with the number of changed tasks and the data of the last
task whose name starts with ``Report``: its ``msg`` when that is a mapping
(a debug task), else its stdout parsed as JSON (a command that prints JSON).

The runtime playbook's variables are built in one place,
:func:`scheduler_playbook_vars`, for every run (the ACTIVE's, the CLI's and a
node's self-fencing); playbooks/scheduler.yml requires each of them and
defaults none, so no value there can drift from the config.
"""

from __future__ import annotations

import getpass
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ansible_runner

from ha_toolkit.models import NodeStatus
from ha_toolkit.warm_ansible import WarmAnsible

REPORT_PREFIX = "Report"
SCHEDULER_PLAYBOOK = "scheduler.yml"
# What one node-action may take beyond stop_timeout: after the SIGKILL it waits up
# to 10 s (node_action.KILL_WAIT) for the unit to go, then reads the unit's state and
# its health (node_action.HEALTH_TIMEOUT, 2 s).
NODE_ACTION_MARGIN = 15.0
# What a whole playbook run may take beyond its slowest node-action: starting
# Ansible, connecting over SSH, collecting the results.
PLAYBOOK_RUN_MARGIN = 15.0
PLAYBOOK_DIR = Path(__file__).resolve().parent / "playbooks"
SSH_ARGS = (
    "-C -o ControlMaster=auto -o ControlPersist=60s "
    "-o ServerAliveInterval=1 -o ServerAliveCountMax=3"
)


def _search_path() -> str:
    # Find ansible-playbook beside this interpreter (the venv) first, even when
    # the venv is not on PATH, as under systemd.
    return os.pathsep.join(
        [str(Path(sys.executable).parent), os.environ.get("PATH", "/usr/bin:/bin")]
    )


@dataclass
class HostResult:
    host: str
    status: str = "ok"  # ok | failed | unreachable
    changed: int = 0
    report: dict[str, Any] = field(default_factory=dict)
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class PlaybookResult:
    playbook: str
    rc: int
    status: str  # ansible-runner's: successful | failed | timeout | canceled
    hosts: dict[str, HostResult]

    @property
    def changed(self) -> int:
        return sum(h.changed for h in self.hosts.values())


class _EventCollector:
    """Folds runner events into per-host results."""

    def __init__(self) -> None:
        self.hosts: dict[str, HostResult] = {}
        self.lock = threading.Lock()

    def _host(self, name: str) -> HostResult:
        return self.hosts.setdefault(name, HostResult(name))

    def __call__(self, event: dict[str, Any]) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        host = data.get("host")
        if not host or not kind.startswith("runner_on_"):
            return True
        res = data.get("res") or {}
        with self.lock:
            result = self._host(host)
            task = str(data.get("task", ""))
            if kind in ("runner_on_ok", "runner_on_failed") and task.startswith(REPORT_PREFIX):
                result.report = _report(res) or result.report
            if kind == "runner_on_ok" and res.get("changed"):
                result.changed += 1
            elif kind == "runner_on_failed" and not data.get("ignore_errors"):
                result.status = "failed"
                result.message = str(result.report.get("message") or _short(res))
            elif kind == "runner_on_unreachable":
                result.status = "unreachable"
                result.message = _short(res)
        return True  # keep the event in runner's own record as well


def _report(res: dict[str, Any]) -> dict[str, Any]:
    if isinstance(res.get("msg"), dict):
        return dict(res["msg"])
    try:
        parsed = json.loads(res.get("stdout") or "")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _short(res: dict[str, Any]) -> str:
    msg = res.get("msg") or res.get("stderr") or res.get("module_stderr") or ""
    return " ".join(str(msg).split())[:300]


def run_playbook(
    playbook: str | Path,
    inventory: str | Path | dict[str, Any],
    *,
    limit: str | None = None,
    extravars: dict[str, Any] | None = None,
    timeout: float | None = None,
    forks: int = 10,
    data_dir: str | Path | None = None,
    cancel: Callable[[], bool] | None = None,
    warm: WarmAnsible | None = None,
) -> PlaybookResult:
    """Run `playbook` (a path, or a name under ha_toolkit/playbooks) against `inventory`
    (a file, or an inventory mapping); through `warm` (a forked, already imported
    ansible-playbook) while its server runs."""
    path = Path(playbook)
    if not path.is_absolute() and not path.exists():
        path = PLAYBOOK_DIR / path
    command: dict[str, Any] = {"playbook": str(path)}
    if warm is not None and warm.alive:
        binary, before = warm.runner_command(str(path))
        command = {"binary": binary, "cmdline": shlex.join(before)}
    collector = _EventCollector()
    with tempfile.TemporaryDirectory(prefix="ha-toolkit-runner-", dir=data_dir) as private:
        envvars = {
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_NOCOLOR": "True",
            "PATH": _search_path(),
        }
        for key in ("ANSIBLE_HOME", "ANSIBLE_LOCAL_TEMP", "ANSIBLE_SSH_CONTROL_PATH_DIR"):
            if key in os.environ:
                envvars[key] = os.environ[key]
        # Ansible's own defaults plus keepalives: a persistent SSH connection to a node
        # that has been cut off must fail in seconds, not hang until TCP gives up.
        # (An inventory's ansible_ssh_args still wins.)
        envvars["ANSIBLE_SSH_ARGS"] = os.environ.get("ANSIBLE_SSH_ARGS", SSH_ARGS)
        envvars["ANSIBLE_TIMEOUT"] = os.environ.get("ANSIBLE_TIMEOUT", "5")
        runner = ansible_runner.run(
            private_data_dir=private,
            **command,
            inventory=inventory if isinstance(inventory, dict) else str(Path(inventory).resolve()),
            limit=limit,
            extravars=extravars or {},
            forks=forks,
            envvars=envvars,
            event_handler=collector,
            quiet=True,
            timeout=max(1, int(timeout)) if timeout else None,
            cancel_callback=cancel,
            # How often runner looks at cancel_callback and the timeout (default 5 s).
            settings={"pexpect_timeout": 0.25},
            json_mode=False,
            # No jsonfile fact cache: no play gathers facts, and its per-run directory
            # would make every run's Ansible configuration differ (see warm_ansible).
            fact_cache_type="memory",
        )
    return PlaybookResult(str(path), runner.rc, runner.status, collector.hosts)


def node_action_timeout(stop_timeout: float) -> float:
    """Seconds one node-action (a stop with its SIGKILL fallback, say) may take in all."""
    return stop_timeout + NODE_ACTION_MARGIN


def playbook_run_timeout(stop_timeout: float) -> float:
    """Seconds one run of the scheduler playbook may take in all."""
    return node_action_timeout(stop_timeout) + PLAYBOOK_RUN_MARGIN


def scheduler_playbook_vars(
    *,
    hosts: str,
    actions: dict[str, str],
    epoch: int | str,
    unit: str,
    health_url: str | None,
    stop_timeout: float,
) -> dict[str, Any]:
    """The extra-vars of every run of playbooks/scheduler.yml, which requires each one.

    `hosts` is the play's host pattern, `actions` maps a host to start, stop or
    restart (the others report status), `epoch` is the fencing epoch, or "local"
    for a stop this node's own controller decided.
    """
    return {
        "ha_hosts": hosts,
        "ha_actions": dict(actions),
        "ha_epoch": epoch,
        "ha_unit": unit,
        "ha_health_url": health_url or "",
        "ha_stop_timeout": stop_timeout,
        "ha_action_timeout": node_action_timeout(stop_timeout),
    }


def stop_on_this_node(
    node: str, unit: str, stop_timeout: float, cancel: Callable[[], bool] | None = None
) -> PlaybookResult:
    """Stop `unit` on this machine (inventory name `node`) through the scheduler
    playbook, without SSH: the self-fencing stop."""
    inventory = {
        "all": {
            "hosts": {
                node: {
                    "ansible_connection": "local",
                    "ansible_user": getpass.getuser(),
                    "ansible_python_interpreter": "/usr/bin/python3",
                }
            }
        }
    }
    return run_playbook(
        SCHEDULER_PLAYBOOK,
        inventory,
        extravars=scheduler_playbook_vars(
            hosts="all",
            actions={node: "stop"},
            epoch="local",
            unit=unit,
            health_url=None,
            stop_timeout=stop_timeout,
        ),
        # Only as long as one node-action: if Ansible cannot do it by then, the
        # caller stops the unit directly.
        timeout=node_action_timeout(stop_timeout),
        forks=1,
        cancel=cancel,
    )


class InventoryError(Exception):
    """The inventory cannot be read or lacks the masters group."""


def read_group(inventory: str | Path, group: str) -> list[str]:
    """Hosts of `group` in inventory order (through ansible-inventory, once at start)."""
    binary = Path(sys.executable).parent / "ansible-inventory"
    proc = subprocess.run(
        [str(binary) if binary.exists() else "ansible-inventory", "-i", str(inventory), "--list"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True"},
    )
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or ["ansible-inventory failed"]
        raise InventoryError(f"{inventory}: {lines[-1]}")
    data = json.loads(proc.stdout)
    hosts = list((data.get(group) or {}).get("hosts") or [])
    if not hosts:
        raise InventoryError(f"{inventory}: group {group!r} has no hosts")
    return hosts


def _optional_int(value: Any) -> int | None:
    # Absent from an older node-action: unknown, not zero.
    return None if value is None else int(value)


class SchedulerNodes:
    """Scheduler actions on the masters, one playbook run per call."""

    def __init__(
        self,
        inventory: str | Path,
        group: str,
        unit: str,
        health_url: str | None,
        stop_timeout: float,
        data_dir: str | Path | None = None,
        warm: WarmAnsible | None = None,
    ) -> None:
        self.inventory = Path(inventory)
        self.warm = warm
        self.group = group
        self.unit = unit
        self.health_url = health_url
        self.stop_timeout = stop_timeout
        self.data_dir = data_dir
        self.masters = read_group(self.inventory, group)

    def run(
        self,
        actions: dict[str, str],
        epoch: int,
        timeout: float | None = None,
        hosts: list[str] | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> dict[str, NodeStatus]:
        """Act on the named hosts (status on the others) and report every targeted host.
        A host with no result (the run timed out or was cancelled) is reported unreachable.
        `timeout` defaults to what a run with a stop may take."""
        targets = hosts if hosts is not None else self.masters
        result = run_playbook(
            SCHEDULER_PLAYBOOK,
            self.inventory,
            limit=",".join(targets),
            extravars=scheduler_playbook_vars(
                hosts=self.group,
                actions=actions,
                epoch=epoch,
                unit=self.unit,
                health_url=self.health_url,
                stop_timeout=self.stop_timeout,
            ),
            timeout=playbook_run_timeout(self.stop_timeout) if timeout is None else timeout,
            forks=max(len(targets), 1),
            data_dir=self.data_dir,
            cancel=cancel,
            warm=self.warm,
        )
        statuses: dict[str, NodeStatus] = {}
        for node in targets:
            host = result.hosts.get(node)
            if host is None:
                statuses[node] = NodeStatus(
                    node, reachable=False, error=f"no result ({result.status})"
                )
            elif host.status == "unreachable":
                statuses[node] = NodeStatus(node, reachable=False, error=host.message)
            else:
                r = host.report
                statuses[node] = NodeStatus(
                    node,
                    reachable=bool(r),
                    running=bool(r.get("running", False)),
                    healthy=r.get("healthy"),
                    main_pid=int(r.get("main_pid", 0)),
                    active_state=str(r.get("active_state", "unknown")),
                    sub_state=str(r.get("sub_state", "unknown")),
                    since_start=r.get("since_start"),
                    restarts=_optional_int(r.get("n_restarts")),
                    health_check=r.get("health_check"),
                    seen_healthy=r.get("seen_healthy"),
                    epoch_seen=int(r.get("epoch_seen", 0)),
                    changed=bool(r.get("changed", False)),
                    refused=bool(r.get("refused", False)),
                    error=host.message,
                )
        return statuses
