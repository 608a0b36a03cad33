"""The MariaDB and ZooKeeper fixtures serve real queries; the ensemble keeps quorum."""

from __future__ import annotations

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import KazooException
from kazoo.handlers.threading import KazooTimeoutError

from tests.harness.mariadb import MariaDBServer
from tests.harness.procs import wait_for
from tests.harness.zookeeper import ZooKeeperCluster


def test_mariadb_answers_real_queries(mariadb: MariaDBServer) -> None:
    conn = mariadb.connect()
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE t (k VARCHAR(10) PRIMARY KEY, v INT)")
        cur.execute("INSERT INTO t VALUES ('a', 1), ('b', 2)")
        cur.execute("SELECT SUM(v) FROM t")
        assert cur.fetchone() == (3,)
        cur.execute("SELECT @@version")
        row = cur.fetchone()
        assert row is not None and "MariaDB" in row[0]
    conn.close()


def test_mariadb_restart_keeps_data(mariadb: MariaDBServer) -> None:
    conn = mariadb.connect()
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE kept (v INT)")
        cur.execute("INSERT INTO kept VALUES (42)")
    conn.close()
    mariadb.restart()
    conn = mariadb.connect()
    with conn.cursor() as cur:
        cur.execute("SELECT v FROM kept")
        assert cur.fetchone() == (42,)
    conn.close()


def _client(hosts: str, timeout: float = 5.0) -> KazooClient:
    client = KazooClient(hosts=hosts, timeout=timeout, connection_retry={"max_tries": 1})
    client.start(timeout=timeout)
    return client


def test_zookeeper_answers(zookeeper: ZooKeeperCluster) -> None:
    client = _client(zookeeper.hosts)
    try:
        client.create("/probe", b"hello", makepath=True)
        assert client.get("/probe")[0] == b"hello"
        assert zookeeper.members[0].mode() == "standalone"
    finally:
        client.stop()
        client.close()


def test_ensemble_survives_one_loss_and_refuses_writes_without_quorum(
    zookeeper_ensemble: ZooKeeperCluster,
) -> None:
    zk = zookeeper_ensemble
    modes = sorted(m.mode() or "" for m in zk.members)
    assert modes == ["follower", "follower", "leader"]

    leader = zk.members.index(zk.leader())
    zk.kill_member(leader)
    survivors = [m for i, m in enumerate(zk.members) if i != leader]
    wait_for(
        lambda: sorted(m.mode() or "" for m in survivors) == ["follower", "leader"],
        30,
        "the two survivors to re-form a quorum",
    )
    client = _client(",".join(m.address for m in survivors))
    try:
        client.create("/after-loss", b"1")
        assert client.exists("/after-loss")
    finally:
        client.stop()
        client.close()

    # Lose a second member: one server alone has no quorum and must refuse.
    zk.kill_member(zk.members.index(survivors[0]))
    lone = survivors[1]
    wait_for(lambda: lone.mode() is None, 30, "the lone member to stop serving")
    with pytest.raises((KazooTimeoutError, KazooException)):
        client = _client(lone.address, timeout=2.0)
        try:
            client.create("/no-quorum", b"1")
        finally:
            client.stop()
            client.close()

    # Bring the members back: the ensemble serves again and kept its data.
    zk.start_member(leader)
    zk.start_member(zk.members.index(survivors[0]))
    zk.wait_serving()
    client = _client(zk.hosts)
    try:
        assert client.exists("/after-loss")
        assert not client.exists("/no-quorum")
    finally:
        client.stop()
        client.close()
