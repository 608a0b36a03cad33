"""Three controllers on three masters, each inside its node container under
systemd, against a real metastore on the test network: MariaDB and a 3-member
ZooKeeper ensemble. The stand-in scheduler keeps the faults fast.

Every test that does not deliberately start a second scheduler runs under the
observer, which samples the nodes' scheduler cgroups from the host every 50 ms
and fails the test on any instant with two schedulers. Each test leaves the
cluster healed, with exactly one scheduler.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ha_toolkit.config import MetastoreConfig
from ha_toolkit.metastore import Metastore, open_metastore
from tests.failover_support import (
    FAST_TIMINGS,
    MOVE_WAIT,
    SETTLE,
    TAKEOVER,
    UNIT,
    WEBHOOK_TOKEN,
    ControllerCluster,
    MariaDBServer,
    ZooKeeperCluster,
    assert_one_incident_notified,
    controller_cluster_fixture,
    main_pid,
    notices_so_far,
    polls_pass,
    scheduler_node,
    status,
    wait_for,
    wait_healthy_on,
)
from tests.harness.cluster import Cluster
from tests.harness.controllers import CONTROLLER_UNIT, METRICS_PORT, Observer


@pytest.fixture(scope="module", params=["mysql", "zookeeper"])
def ha(
    request: pytest.FixtureRequest,
    docker_client: Any,
    node_image: str,
    cluster_factory: Callable[..., Cluster],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ControllerCluster]:
    yield from controller_cluster_fixture(
        request, docker_client, node_image, cluster_factory, tmp_path_factory
    )


# -- tests, in order: each leaves exactly one healthy scheduler ---------------------------------
def test_one_active_and_one_scheduler(ha: ControllerCluster) -> None:
    with ha.observed() as observer:
        active = ha.wait_active(TAKEOVER)
        node = observer.wait_single(SETTLE)
        wait_healthy_on(ha, node)
        st = status(ha)
        assert st["holder"].split("#")[0] == active
        assert st["scheduler_node"] == node
        assert st["epoch"] > 0
        assert len(st["standbys"]) == 2


def test_metrics_endpoint_shows_one_active(ha: ControllerCluster) -> None:
    node = scheduler_node(ha)
    roles, up = {}, {}
    for n in ha.cluster.nodes:
        _, text = n.exec(f"curl -fsS -m 2 http://127.0.0.1:{METRICS_PORT}/metrics")
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "ha_toolkit_role":
                    roles[n.name] = sample.value
                if sample.name == "ha_toolkit_scheduler_up" and sample.value == 1:
                    up[n.name] = sample.labels["node"]
    assert sorted(roles.values()) == [0, 0, 1]
    active = next(n for n, v in roles.items() if v == 1)
    assert up == {active: node}


def test_killed_scheduler_comes_back_on_same_node(ha: ControllerCluster) -> None:
    with ha.observed() as observer:
        node = scheduler_node(ha)
        old = main_pid(ha, node)
        ha.cluster.node(node).exec(f"systemctl kill -s KILL {UNIT}")
        wait_for(lambda: main_pid(ha, node) not in (0, old), SETTLE, "a new scheduler PID")
        wait_healthy_on(ha, node)
        assert observer.wait_single(SETTLE) == node


def test_hung_scheduler_is_restarted(ha: ControllerCluster) -> None:
    with ha.observed() as observer:
        node = scheduler_node(ha)
        old = main_pid(ha, node)
        ha.cluster.node(node).exec(
            "mkdir -p /run/stand-in-scheduler && touch /run/stand-in-scheduler/unhealthy"
        )
        wait_for(lambda: main_pid(ha, node) not in (0, old), SETTLE, "the hung scheduler restarted")
        wait_healthy_on(ha, node)
        assert observer.wait_single(SETTLE) == node


def test_unit_that_cannot_start_moves_to_next_master(ha: ControllerCluster) -> None:
    with ha.observed() as observer:
        node = scheduler_node(ha)
        broken = ha.cluster.node(node)
        sent = notices_so_far(ha)
        broken.put_file(
            f"/run/systemd/system/{UNIT}.service.d/broken.conf",
            b"[Service]\nExecStart=\nExecStart=/bin/false\n",
        )
        broken.exec("systemctl daemon-reload")
        try:
            broken.exec(f"systemctl kill -s KILL {UNIT}")
            moved_to = observer.wait_single(SETTLE + 2 * FAST_TIMINGS["start_timeout"], not_on=node)
            wait_healthy_on(ha, moved_to)
            assert node in status(ha)["failed_nodes"]
            # Through the real webhook. No alert when the move came within
            # after_failed_polls (2): the start just before (the previous test's restart)
            # counts as a recent repair, and the first poll that sees the unit fail then
            # moves it at once.
            assert_one_incident_notified(ha, sent)
            assert WEBHOOK_TOKEN not in ha.dump_logs()
        finally:
            broken.exec(
                f"rm -rf /run/systemd/system/{UNIT}.service.d && "
                "systemctl daemon-reload && systemctl reset-failed"
            )


def test_stray_scheduler_is_stopped(ha: ControllerCluster) -> None:
    # No observer here: the test itself starts a second scheduler.
    node = scheduler_node(ha)
    stray = next(n.name for n in ha.cluster.nodes if n.name != node)
    ha.cluster.node(stray).exec(f"systemctl start {UNIT}")
    wait_for(lambda: ha.observer.running() == [node], SETTLE, f"the stray on {stray} stopped")
    assert status(ha)["scheduler_node"] == node


def test_failover_to_named_node(ha: ControllerCluster) -> None:
    with ha.observed() as observer:
        node = scheduler_node(ha)
        target = next(n.name for n in ha.cluster.nodes if n.name != node)
        code, out = ha.ha("node1", f"failover --to {target} --wait 60", check=False)
        assert code == 0, out
        assert observer.wait_single(SETTLE) == target
        wait_healthy_on(ha, target)


def test_pause_stops_node_actions(ha: ControllerCluster) -> None:
    with ha.observed() as observer:
        node = scheduler_node(ha)
        ha.ha("node1", "pause")
        try:
            assert status(ha)["paused"] is True
            polls_pass(ha)  # a poll that read the record before the pause has ended
            ha.cluster.node(node).exec(f"systemctl stop {UNIT}")
            polls_pass(ha, 2)
            assert observer.running() == []  # not restarted while paused
        finally:
            ha.ha("node1", "resume")
        assert observer.wait_single(SETTLE) == node


def test_active_controller_killed_standby_takes_over(ha: ControllerCluster) -> None:
    with ha.observed() as observer:
        scheduler_node(ha)
        active = ha.wait_active(TAKEOVER)
        epoch = status(ha)["epoch"]
        ha.signal_controller(active, "KILL")
        # Keep the killed controller down (systemd would restart it after RestartSec and it
        # might win the lease back): the test is that a STANDBY on another node takes over.
        ha.cluster.node(active).exec(f"systemctl stop {CONTROLLER_UNIT}")
        try:
            wait_for(lambda: status(ha)["epoch"] > epoch, TAKEOVER, "a new epoch")
            assert ha.wait_active(TAKEOVER, not_on=active) != active
            observer.wait_single(SETTLE)
            wait_healthy_on(ha, status(ha)["scheduler_node"])
        finally:
            ha.start([active])


def test_active_on_the_schedulers_master_hands_the_lease_over(ha: ControllerCluster) -> None:
    """Issue 10: anti-affinity that lasts. With the scheduler moved onto the ACTIVE's own
    master, the ACTIVE gives the lease to a STANDBY on another master by itself; the
    scheduler is not touched (the same process keeps running there)."""
    with ha.observed() as observer:
        scheduler_node(ha)
        active = ha.wait_active(TAKEOVER)
        code, out = ha.ha(active, f"failover --to {active} --wait 60", check=False)
        assert code == 0, out
        assert observer.wait_single(SETTLE) == active
        wait_healthy_on(ha, active)
        pid = main_pid(ha, active)
        assert ha.wait_active(TAKEOVER + SETTLE, not_on=active) != active
        polls_pass(ha, 2)  # the new ACTIVE has looked at the scheduler and left it alone
        assert observer.running() == [active] and main_pid(ha, active) == pid
        assert status(ha)["scheduler_node"] == active


def test_watchdog_ends_a_hung_controller_and_its_scheduler(ha: ControllerCluster) -> None:
    with ha.observed() as observer:
        node = scheduler_node(ha)
        ha.signal_controller(node, "STOP")
        # systemd's watchdog kills the stopped controller; BindsTo takes the
        # scheduler down with it; the scheduler then runs on another node, or
        # back on this one once its restarted controller confirms the placement.
        wait_for(
            lambda: ha.observer.running() != [node] or main_pid(ha, node) == 0,
            SETTLE,
            "the scheduler on the hung controller's node to stop",
        )
        observer.wait_single(SETTLE)
        wait_healthy_on(ha, observer.wait_single(SETTLE))


def cut_off_and_expect_move(
    ha: ControllerCluster, observer: Observer, node: str, address: str
) -> None:
    """Cut `node` off from `address`: the scheduler must move elsewhere (the observer
    checks there is never a second one), and stay there after healing."""
    ha.cluster.cut_off(node, address)
    try:
        moved_to = observer.wait_single(SETTLE + TAKEOVER, not_on=node)
        wait_healthy_on(ha, moved_to)
    finally:
        ha.cluster.heal(node)
    assert observer.wait_single(SETTLE) == moved_to


def test_node_cut_off_from_metastore_self_fences(ha: ControllerCluster) -> None:
    with ha.observed() as observer:
        node = scheduler_node(ha)
        cut_off_and_expect_move(ha, observer, node, ha.cluster.gateway)


def test_node_cut_off_from_active_only_reads_placement_and_stops(ha: ControllerCluster) -> None:
    with ha.observed() as observer:
        node = scheduler_node(ha)
        active = ha.wait_active(TAKEOVER)
        if active == node:
            target = next(n.name for n in ha.cluster.nodes if n.name != node)
            code, out = ha.ha("node1", f"failover --to {target} --wait 60", check=False)
            assert code == 0, out
            node = observer.wait_single(SETTLE)
        cut_off_and_expect_move(ha, observer, node, ha.cluster.node(active).address)


def host_store(ha: ControllerCluster) -> Metastore:
    """A client of the controllers' metastore from the host, outside every node."""
    spec = dict(ha.metastore)
    if "hosts" in spec:
        spec["hosts"] = tuple(spec["hosts"])
    return open_metastore(
        MetastoreConfig(**spec, password=ha.password or None, connect_timeout=2.0)
    )


def right_after_a_confirmation(store: Metastore, node: str, timeout: float) -> datetime:
    """Return as soon as `node`'s controller has recorded a new confirmation (its read
    of the record follows within milliseconds); the recorded time."""
    before = store.read().confirmations.get(node)
    deadline = time.monotonic() + timeout
    while True:
        confirmed = store.read().confirmations.get(node)
        if confirmed is not None and confirmed != before:
            return confirmed
        assert time.monotonic() < deadline, f"no new confirmation by {node}"
        time.sleep(0.01)


def test_node_isolated_right_after_a_confirmation_is_never_overlapped(
    ha: ControllerCluster,
) -> None:
    """Issue 12: the ACTIVE counts the move wait from the old node's last confirmation,
    on the metastore's clock. Its worst case: the scheduler's node is cut off from
    everything (the metastore and the ACTIVE) right after a confirming read, so it keeps
    its scheduler for a whole fence window from that read's send time; the new one must
    not start before the old one has stopped."""
    store = host_store(ha)
    try:
        with ha.observed() as observer:
            node = scheduler_node(ha)
            # Not the ACTIVE's own node: an ACTIVE there hands the lease over by itself
            # (anti-affinity), and losing it would cost a takeover on top of the move.
            ha.wait_active(TAKEOVER + SETTLE, not_on=node)
            # The confirmation rule applies once the ACTIVE's takeover and its last start
            # on the node are a move_wait old (docs/design.md, A6).
            time.sleep(MOVE_WAIT)
            confirmed = right_after_a_confirmation(store, node, SETTLE)
            ha.cluster.isolate(node)
            try:
                moved_to = observer.wait_single(SETTLE + TAKEOVER, not_on=node)
                # The metastore runs on this host: its clock is time.time()'s.
                moved_after = time.time() - confirmed.timestamp()
                wait_healthy_on(ha, moved_to)
            finally:
                ha.cluster.heal(node)
            assert observer.wait_single(SETTLE) == moved_to
        assert moved_after >= MOVE_WAIT, moved_after
    finally:
        store.close()


def test_metastore_outage_no_overlap_then_recovery(ha: ControllerCluster) -> None:
    servers = ha.servers  # type: ignore[attr-defined]
    with ha.observed() as observer:
        scheduler_node(ha)
        server = servers[0]
        if isinstance(server, MariaDBServer):
            server.restart()
        else:
            server.kill_member(server.members.index(server.leader()))
        try:
            node = observer.wait_single(SETTLE + TAKEOVER)
            wait_healthy_on(ha, node)
        finally:
            if isinstance(server, ZooKeeperCluster):
                for i, member in enumerate(server.members):
                    if not (member.process and member.process.running()):
                        server.start_member(i)
                server.wait_serving()
        ha.wait_active(TAKEOVER)


def test_crash_loop_under_systemd_moves_the_scheduler(ha: ControllerCluster) -> None:
    """Issue 10: a scheduler that systemd keeps restarting (Restart=on-failure) is moved
    and its node marked failed, though every restart comes up healthy; one incident
    sends at most one alert, and a recovery only after one."""
    with ha.observed() as observer:
        node = scheduler_node(ha)
        sent = notices_so_far(ha)
        looping = ha.cluster.node(node)
        # Every 3 s: slower than systemd's restart (RestartSec=1), within its start
        # limit (5 in 10 s), and two crashes well within the flap window (2 x 6 s).
        deadline = time.monotonic() + SETTLE
        while status(ha)["scheduler_node"] == node:
            assert time.monotonic() < deadline, "the crash-looping scheduler was not moved"
            looping.exec(f"systemctl kill -s KILL {UNIT}", check=False)
            time.sleep(3)
        moved_to = observer.wait_single(SETTLE, not_on=node)
        wait_healthy_on(ha, moved_to)
        assert node in status(ha)["failed_nodes"]
        assert_one_incident_notified(ha, sent)
