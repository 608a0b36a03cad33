"""A frozen ACTIVE controller: it must step down when it wakes, and the nodes
must refuse any action carrying its old epoch.

Under systemd a controller frozen this long is killed by its watchdog (see
test_failover.py); here the controllers run with WatchdogSec=0 so that the
step-down and the node-side fencing token are what is tested.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ha_toolkit.nodes import SchedulerNodes
from tests.failover_support import (
    FAST_TIMINGS,
    SETTLE,
    TAKEOVER,
    UNIT,
    ControllerCluster,
    controller_cluster_fixture,
    scheduler_node,
    status,
    wait_for,
)
from tests.harness.cluster import Cluster

NODE_ACTION = "/usr/local/libexec/ha-toolkit/node-action"


@pytest.fixture(scope="module", params=["mysql", "zookeeper"])
def ha_no_watchdog(
    request: pytest.FixtureRequest,
    docker_client: Any,
    node_image: str,
    cluster_factory: Callable[..., Cluster],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ControllerCluster]:
    yield from controller_cluster_fixture(
        request, docker_client, node_image, cluster_factory, tmp_path_factory, watchdog=False
    )


def node_action(ha: ControllerCluster, node: str, args: str) -> dict[str, Any]:
    _, out = ha.cluster.node(node).exec(f"{NODE_ACTION} {args} --unit {UNIT}", check=False)
    return dict(json.loads(out))


def test_frozen_active_steps_down_and_its_epoch_is_refused(
    ha_no_watchdog: ControllerCluster,
) -> None:
    ha = ha_no_watchdog
    with ha.observed() as observer:
        scheduler = scheduler_node(ha)
        active = ha.wait_active(TAKEOVER)
        old_epoch = status(ha)["epoch"]
        ha.signal_controller(active, "STOP")
        try:
            wait_for(lambda: status(ha)["epoch"] > old_epoch, TAKEOVER, "a STANDBY to take over")
            new_epoch = status(ha)["epoch"]
            assert status(ha)["holder"].split("#")[0] != active
            # The new ACTIVE acts on two nodes (stop here, start there) with its epoch.
            target = next(n.name for n in ha.cluster.nodes if n.name not in (scheduler, active))
            code, out = ha.ha(target, f"failover --to {target} --wait 60", check=False)
            assert code == 0, out
            assert observer.wait_single(SETTLE) == target
        finally:
            ha.signal_controller(active, "CONT")

        # Woken past its lease, the old ACTIVE steps down rather than act.
        wait_for(
            lambda: "stepping down from ACTIVE" in ha.journal(active),
            FAST_TIMINGS["poll_interval"] * 5 + 10,
            "the woken controller to step down",
        )
        # Any action with the old epoch is refused by a node that has seen the new one.
        for node in (scheduler, target):
            seen = node_action(ha, node, "status")["epoch_seen"]
            assert seen >= new_epoch > old_epoch
            refused = node_action(ha, node, f"start --epoch {old_epoch}")
            assert refused["refused"] is True and not refused["changed"]
            assert f"epoch {old_epoch} < {seen}" in refused["message"]
        assert observer.wait_single(SETTLE) == target


def test_node_actions_are_idempotent(ha_no_watchdog: ControllerCluster) -> None:
    """Starting a running scheduler or stopping a stopped one changes nothing (changed=0),
    through the same playbook run the controller uses, over SSH from the host."""
    ha = ha_no_watchdog
    with ha.observed():
        scheduler = scheduler_node(ha)
        idle = [n.name for n in ha.cluster.nodes if n.name != scheduler]
        nodes = SchedulerNodes(
            ha.cluster.inventory, "masters", UNIT, "http://127.0.0.1:8974/health", stop_timeout=3
        )
        epoch = status(ha)["epoch"]
        actions = {scheduler: "start", **{n: "stop" for n in idle}}
        result = nodes.run(actions, epoch, timeout=60, hosts=list(actions))
        assert {n: (s.reachable, s.changed, s.refused) for n, s in result.items()} == {
            n: (True, False, False) for n in actions
        }
        assert result[scheduler].running and result[scheduler].healthy
        assert not any(result[n].running for n in idle)
