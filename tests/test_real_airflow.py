"""The controllers managing the real `airflow scheduler` (Airflow 3.x in the
nodes, its health check server on), not the stand-in: placed and healthy,
restarted after a crash, moved by a planned failover, never two at once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.failover_support import (
    ControllerCluster,
    main_pid,
    make_controller_cluster,
    wait_for,
    wait_healthy_on,
)
from tests.harness.cluster import Cluster
from tests.harness.controller_image import airflow_image, controller_image

# The real scheduler needs tens of seconds to answer its health check and a few
# to stop gracefully; the rest as in the benchmark.
AIRFLOW_TIMINGS = {
    "poll_interval": 2.0,
    "lease_ttl": 6.0,
    "fence_after": 5.5,
    "watchdog": 1.5,
    "start_timeout": 150.0,
    "stop_timeout": 30.0,
}
WARM_UP = 300.0


@pytest.fixture(scope="module")
def ha_airflow(
    docker_client: Any,
    node_image: str,
    cluster_factory: Callable[..., Cluster],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ControllerCluster]:
    build = Path(".build")
    image = airflow_image(docker_client, controller_image(docker_client, node_image, build), build)

    def factory(size: int) -> Cluster:
        return cluster_factory(size, image=image)

    yield from make_controller_cluster(
        "mysql", factory, tmp_path_factory.mktemp("ha-airflow"), AIRFLOW_TIMINGS
    )


def test_real_airflow_scheduler_placed_restarted_and_moved(ha_airflow: ControllerCluster) -> None:
    ha = ha_airflow
    with ha.observed() as observer:
        node = observer.wait_single(WARM_UP)
        wait_healthy_on(ha, node, WARM_UP)
        # Airflow's health server answers 200 (no body) while the scheduler heartbeats.
        _, code = ha.cluster.node(node).exec(
            "curl -sS -o /dev/null -w '%{http_code}' http://127.0.0.1:8974/health"
        )
        assert code == "200"
        _, cmdline = ha.cluster.node(node).exec(
            f"tr '\\0' ' ' < /proc/{main_pid(ha, node)}/cmdline"
        )
        assert "airflow scheduler" in cmdline

        old = main_pid(ha, node)
        ha.cluster.node(node).exec(f"kill -KILL {old}")
        wait_for(lambda: main_pid(ha, node) not in (0, old), WARM_UP, "a new scheduler process")
        wait_healthy_on(ha, node, WARM_UP)

        target = next(n.name for n in ha.cluster.nodes if n.name != node)
        code, out = ha.ha(target, f"failover --to {target} --wait {WARM_UP:.0f}", check=False)
        assert code == 0, out
        assert observer.wait_single(WARM_UP) == target
        wait_healthy_on(ha, target, WARM_UP)
        assert main_pid(ha, node) == 0
