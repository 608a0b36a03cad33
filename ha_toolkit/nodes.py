"""Node actions: run a playbook with ansible-runner and return typed per-host results.

Nothing else in the package knows about Ansible. Results come from runner
events (never from scraping output): each host ends `ok`, `failed` or
`unreachable`, with the number of changed tasks and the value of the last
task named ``Report`` (a playbook's way to hand data back).
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ansible_runner

REPORT_TASK = "Report"
PLAYBOOK_DIR = Path(__file__).resolve().parent / "playbooks"


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
            if kind == "runner_on_ok":
                if res.get("changed"):
                    result.changed += 1
                if data.get("task") == REPORT_TASK and isinstance(res.get("msg"), dict):
                    result.report = dict(res["msg"])
            elif kind == "runner_on_failed" and not data.get("ignore_errors"):
                result.status = "failed"
                result.message = _short(res)
            elif kind == "runner_on_unreachable":
                result.status = "unreachable"
                result.message = _short(res)
        return True  # keep the event in runner's own record as well


def _short(res: dict[str, Any]) -> str:
    msg = res.get("msg") or res.get("stderr") or res.get("module_stderr") or ""
    return " ".join(str(msg).split())[:300]


def run_playbook(
    playbook: str | Path,
    inventory: str | Path,
    *,
    limit: str | None = None,
    extravars: dict[str, Any] | None = None,
    timeout: float | None = None,
    forks: int = 10,
    data_dir: str | Path | None = None,
) -> PlaybookResult:
    """Run `playbook` (a path, or a name under ha_toolkit/playbooks) against `inventory`."""
    path = Path(playbook)
    if not path.is_absolute() and not path.exists():
        path = PLAYBOOK_DIR / path
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
        runner = ansible_runner.run(
            private_data_dir=private,
            playbook=str(path),
            inventory=str(Path(inventory).resolve()),
            limit=limit,
            extravars=extravars or {},
            forks=forks,
            envvars=envvars,
            event_handler=collector,
            quiet=True,
            timeout=int(timeout) if timeout else None,
            json_mode=False,
        )
    return PlaybookResult(str(path), runner.rc, runner.status, collector.hosts)
