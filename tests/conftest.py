"""Fixtures that give tests real servers and real nodes (see tests/harness)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness.cluster import Cluster, new_run_id, remove_stale
from tests.harness.mariadb import MariaDBServer
from tests.harness.zookeeper import ZooKeeperCluster

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / ".build"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests that use no service fixture are unit tests; the rest integration.
    service_fixtures = {
        "mariadb",
        "zookeeper",
        "zookeeper_ensemble",
        "cluster",
        "node_image",
        "docker_client",
        "cluster_factory",
    }
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        item.add_marker(pytest.mark.integration if used & service_fixtures else pytest.mark.unit)


@pytest.fixture(scope="session")
def run_id() -> str:
    return new_run_id()


@pytest.fixture(scope="session")
def docker_client() -> Iterator[object]:
    docker = pytest.importorskip("docker")
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:
        pytest.fail(f"no Docker engine answers ({exc}); run `make setup` first")
    remove_stale(client)
    yield client
    client.close()


@pytest.fixture(scope="session")
def node_image(docker_client: object) -> str:
    """The locally built node image (built by `make image`; built here if missing)."""
    out = subprocess.run(
        ["bash", str(REPO / "images/node/build.sh")], check=True, capture_output=True, text=True
    )
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture
def mariadb(tmp_path: Path) -> Iterator[MariaDBServer]:
    server = MariaDBServer(tmp_path / "mariadb")
    try:
        server.start()  # inside try: a server that fails to come up is still stopped
        yield server
    finally:
        server.stop()


@pytest.fixture
def zookeeper(tmp_path: Path) -> Iterator[ZooKeeperCluster]:
    zk = ZooKeeperCluster(tmp_path / "zookeeper", size=1)
    try:
        zk.start()  # inside try: a server that fails to come up is still stopped
        yield zk
    finally:
        zk.stop()


@pytest.fixture
def zookeeper_ensemble(tmp_path: Path) -> Iterator[ZooKeeperCluster]:
    zk = ZooKeeperCluster(tmp_path / "zookeeper", size=3)
    try:
        zk.start()  # inside try: a server that fails to come up is still stopped
        yield zk
    finally:
        zk.stop()


@pytest.fixture(scope="session")
def cluster_factory(
    docker_client: object, node_image: str, run_id: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Cluster]]:
    """`cluster_factory(n, image=None)` -> a new Cluster of n nodes (of the node image unless
    another is named), destroyed at the end of the session."""
    made: list[Cluster] = []

    def make(size: int, image: str | None = None) -> Cluster:
        index = len(made)
        cluster = Cluster(
            image or node_image,
            tmp_path_factory.mktemp(f"cluster{index}"),
            size=size,
            run_id=f"{run_id}{index}",
            client=docker_client,
        )  # type: ignore[arg-type]
        made.append(cluster)
        return cluster.create()

    try:
        yield make
    finally:
        for cluster in made:
            cluster.destroy()


@pytest.fixture(scope="module")
def cluster(cluster_factory: Callable[[int], Cluster]) -> Iterator[Cluster]:
    """Three nodes shared by one test module; tests heal what they break."""
    made = cluster_factory(3)
    yield made
    made.destroy()


@pytest.fixture(scope="session", autouse=True)
def ansible_home() -> None:
    os.environ.setdefault("ANSIBLE_HOME", str(BUILD / "ansible"))
    os.environ.setdefault("ANSIBLE_LOCAL_TEMP", str(BUILD / "ansible" / "tmp"))
