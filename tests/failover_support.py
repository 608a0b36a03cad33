"""Shared set-up for the controller fault tests (and bench/): a controller
cluster on a real metastore, and waits on its state."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ha_toolkit.config import Timings, move_wait
from tests.harness.cluster import Cluster
from tests.harness.controller_image import controller_image
from tests.harness.controllers import FAST_TIMINGS, UNIT, ControllerCluster
from tests.harness.mariadb import MariaDBServer
from tests.harness.procs import wait_for
from tests.harness.webhook import WebhookReceiver
from tests.harness.zookeeper import ZooKeeperCluster

MOVE_WAIT = move_wait(Timings(**FAST_TIMINGS))
TAKEOVER = FAST_TIMINGS["lease_ttl"] + 3 * FAST_TIMINGS["poll_interval"] + 10
SETTLE = MOVE_WAIT + TAKEOVER


WEBHOOK_TOKEN = "hook-token-not-for-logs"


def make_controller_cluster(
    kind: str,
    cluster_factory: Callable[..., Cluster],
    tmp: Path,
    timings: dict[str, float] | None = None,
    watchdog: bool = True,
) -> Iterator[ControllerCluster]:
    """A started controller cluster on `kind` ("mysql" or "zookeeper"); torn down after."""
    cluster = cluster_factory(3)
    servers: list[Any] = []
    try:
        if kind == "mysql":
            db = MariaDBServer(tmp / "mariadb", host=cluster.gateway)
            servers.append(db)  # before start(): a half-started server is stopped too
            db.start()
            metastore = {
                "type": "mysql",
                "dsn": f"mysql://{db.user}@{db.host}:{db.port}/{db.database}",
            }
            password = db.password
        else:
            zk = ZooKeeperCluster(tmp / "zookeeper", size=3, host=cluster.gateway)
            servers.append(zk)
            zk.start()
            metastore = {"type": "zookeeper", "hosts": zk.hosts.split(",")}
            password = ""
        hook = WebhookReceiver(cluster.gateway)
        servers.append(hook)
        alerts = {
            "after_failed_polls": 2,
            # The recovery notice once the scheduler stayed healthy this long (the
            # default, 60 s, is for production timings).
            "recovery_after": 2.0,
            "webhook_url": f"http://{cluster.gateway}:{hook.port}/hook?token={WEBHOOK_TOKEN}",
        }
        cc = ControllerCluster(cluster, metastore, password, timings, watchdog, alerts)
        cc.servers = servers  # type: ignore[attr-defined]
        cc.webhook = hook  # type: ignore[attr-defined]
        cc.install()
        code, out = cc.ha("node1", "init", check=False)
        assert code == 0, out
        cc.start()
        yield cc
    finally:
        cluster.destroy()
        for server in servers:
            server.stop()


def controller_cluster_fixture(
    request: pytest.FixtureRequest,
    docker_client: Any,
    node_image: str,
    cluster_factory: Callable[..., Cluster],
    tmp_path_factory: pytest.TempPathFactory,
    watchdog: bool = True,
    timings: dict[str, float] | None = None,
) -> Iterator[ControllerCluster]:
    image = controller_image(docker_client, node_image, Path(".build"))
    tmp = tmp_path_factory.mktemp(f"ha-{request.param}")

    def factory(size: int) -> Cluster:
        return cluster_factory(size, image=image)

    yield from make_controller_cluster(
        request.param, factory, tmp, timings=timings, watchdog=watchdog
    )


def polls_pass(ha: ControllerCluster, count: int = 1) -> None:
    """Wait until the ACTIVE has finished `count` more polls."""
    for _ in range(count):
        before = status(ha)["last_poll"]
        wait_for(lambda b=before: status(ha)["last_poll"] != b, TAKEOVER, "a poll")


def scheduler_node(ha: ControllerCluster) -> str:
    """The scheduler node, once the ACTIVE has seen it healthy (a settled start state)."""
    node = ha.observer.wait_single(SETTLE)
    wait_healthy_on(ha, node)
    polls_pass(ha, 2)
    return node


def notices_so_far(ha: ControllerCluster) -> int:
    """The notices the webhook has received, counted once an earlier test's incident has
    had its recovery sent. An incident stays open until the scheduler has been healthy
    for recovery_after (2 s here, three 1 s polls), which scheduler_node's two polls do
    not cover: seen, a killed-scheduler test's alert answered by a recovery inside the
    next test, which counts its own notices."""
    polls_pass(ha, 3)
    return len(ha.webhook.subjects())  # type: ignore[attr-defined]


def assert_one_incident_notified(ha: ControllerCluster, sent: int) -> None:
    """The webhook's notices since `sent` (notices_so_far), once a recovery is due: at most
    one alert for the incident, answered by one recovery, the alert first."""
    polls_pass(ha, 4)  # past the recovery settle period (2 s in these tests)
    news = ha.webhook.subjects()[sent:]  # type: ignore[attr-defined]
    alerted = [i for i, m in enumerate(news) if "no healthy scheduler" in m]
    recovered = [i for i, m in enumerate(news) if "recovered" in m]
    assert len(alerted) <= 1 and len(recovered) == len(alerted), news
    assert alerted <= recovered, news


def healthy_on(ha: ControllerCluster, node: str) -> bool:
    """The scheduler's health URL on `node` answers 2xx right now."""
    code, _ = ha.cluster.node(node).exec("curl -fsS -m 1 http://127.0.0.1:8974/health", check=False)
    return code == 0


def wait_healthy_on(ha: ControllerCluster, node: str, timeout: float = SETTLE) -> None:
    wait_for(lambda: healthy_on(ha, node), timeout, f"a healthy scheduler on {node}", interval=0.2)


def main_pid(ha: ControllerCluster, node: str) -> int:
    _, out = ha.cluster.node(node).exec(f"systemctl show -p MainPID --value {UNIT}", check=False)
    return int(out.strip() or 0)


def status(ha: ControllerCluster, node: str = "node1") -> dict[str, Any]:
    _, out = ha.ha(node, "status --json --no-check")
    return dict(json.loads(out))
