"""The runtime playbook's variables: built by one function, required by the playbook and by
node-action, with the margins named once. No Ansible runs here."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from ha_toolkit import node_action, nodes
from ha_toolkit.nodes import (
    NODE_ACTION_MARGIN,
    PLAYBOOK_RUN_MARGIN,
    PlaybookResult,
    SchedulerNodes,
    node_action_timeout,
    playbook_run_timeout,
    scheduler_playbook_vars,
    stop_on_this_node,
)

PLAYBOOK = Path(nodes.PLAYBOOK_DIR) / nodes.SCHEDULER_PLAYBOOK
# Variables the play defines for itself, and the registered result.
PLAY_OWN = {"ha_node_action", "ha_this_action", "ha_sudo", "ha_result"}


def built(**changes: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "hosts": "masters",
        "actions": {"m1": "stop"},
        "epoch": 7,
        "unit": "airflow-scheduler",
        "health_url": "http://127.0.0.1:8974/health",
        "stop_timeout": 20.0,
    }
    return scheduler_playbook_vars(**(args | changes))


def test_the_playbook_uses_exactly_the_built_variables_with_no_defaults() -> None:
    lines = PLAYBOOK.read_text().splitlines()
    comments = "\n".join(line for line in lines if line.lstrip().startswith("#"))
    code = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    used = set(re.findall(r"\bha_[a-z_]+\b", code)) - PLAY_OWN
    assert used == set(built())
    for name in built():
        assert not re.search(rf"{name}\s*\|\s*default", code), name
        assert f"#   {name}:" in comments, f"{name} is not described in the playbook's header"


def test_built_variables() -> None:
    assert built() == {
        "ha_hosts": "masters",
        "ha_actions": {"m1": "stop"},
        "ha_epoch": 7,
        "ha_unit": "airflow-scheduler",
        "ha_health_url": "http://127.0.0.1:8974/health",
        "ha_stop_timeout": 20.0,
        "ha_action_timeout": 20.0 + NODE_ACTION_MARGIN,
    }
    assert built(health_url=None)["ha_health_url"] == ""  # the playbook passes it on as is


def test_margins() -> None:
    # The bound on one node-action covers node-action's own waits past stop_timeout.
    assert NODE_ACTION_MARGIN > node_action.KILL_WAIT + node_action.HEALTH_TIMEOUT
    assert node_action_timeout(3.0) == 3.0 + NODE_ACTION_MARGIN
    assert playbook_run_timeout(3.0) == 3.0 + NODE_ACTION_MARGIN + PLAYBOOK_RUN_MARGIN
    assert playbook_run_timeout(20.0) == 50.0  # what the ACTIVE has always allowed a run


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every run_playbook call, answered with an empty result."""
    calls: list[dict[str, Any]] = []

    def fake_run(playbook: str, inventory: Any, **kwargs: Any) -> PlaybookResult:
        calls.append({"playbook": playbook, "inventory": inventory, **kwargs})
        return PlaybookResult(playbook, 0, "successful", {})

    monkeypatch.setattr(nodes, "run_playbook", fake_run)
    monkeypatch.setattr(nodes, "read_group", lambda inventory, group: ["m1", "m2"])
    return calls


def test_scheduler_nodes_run_with_the_built_variables(runs: list[dict[str, Any]]) -> None:
    masters = SchedulerNodes("inventory.yml", "masters", "sched", None, stop_timeout=3.0)
    statuses = masters.run({"m2": "start"}, epoch=4)
    assert {n: s.reachable for n, s in statuses.items()} == {"m1": False, "m2": False}
    (call,) = runs
    assert call["extravars"] == scheduler_playbook_vars(
        hosts="masters",
        actions={"m2": "start"},
        epoch=4,
        unit="sched",
        health_url=None,
        stop_timeout=3.0,
    )
    assert call["limit"] == "m1,m2" and call["timeout"] == playbook_run_timeout(3.0)
    masters.run({}, epoch=0, timeout=60, hosts=["m1"])
    assert runs[1]["timeout"] == 60 and runs[1]["limit"] == "m1"


def test_self_fencing_stop_runs_locally_with_the_built_variables(
    runs: list[dict[str, Any]],
) -> None:
    stop_on_this_node("m1", "sched", 3.0)
    (call,) = runs
    assert call["playbook"] == nodes.SCHEDULER_PLAYBOOK
    assert call["inventory"]["all"]["hosts"]["m1"]["ansible_connection"] == "local"
    assert call["extravars"] == scheduler_playbook_vars(
        hosts="all",
        actions={"m1": "stop"},
        epoch="local",
        unit="sched",
        health_url=None,
        stop_timeout=3.0,
    )
    assert call["timeout"] == node_action_timeout(3.0)


@pytest.mark.parametrize(
    ("argv", "needs"),
    [
        (["stop", "--unit", "u", "--epoch", "3"], "--stop-timeout"),
        (["restart", "--unit", "u", "--epoch", "3"], "--stop-timeout"),
        (["start", "--unit", "u"], "--epoch"),
        (["status"], "--unit"),
    ],
)
def test_node_action_requires_its_arguments(
    argv: list[str], needs: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with pytest.raises(SystemExit) as exited:
        node_action.main([*argv, "--state-dir", str(tmp_path)])
    assert exited.value.code == 2
    assert needs in capsys.readouterr().err
    assert not (tmp_path / node_action.EPOCH_FILE).exists()  # refused before any action
