"""Unit tests of the placement rules (decisions.py): no services, a fake clock."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ha_toolkit.decisions import Decider
from ha_toolkit.metastore import ClusterRecord
from ha_toolkit.models import NodeStatus

REPO = Path(__file__).resolve().parent.parent
MASTERS = ["m1", "m2", "m3"]


def up(
    node: str, healthy: bool | None = True, since: float = 100.0, restarts: int | None = None
) -> NodeStatus:
    return NodeStatus(
        node, reachable=True, running=True, healthy=healthy, since_start=since, restarts=restarts
    )


def down(node: str) -> NodeStatus:
    return NodeStatus(node, reachable=True, running=False, healthy=False)


def gone(node: str) -> NodeStatus:
    return NodeStatus(node, reachable=False, error="unreachable")


def obs(*statuses: NodeStatus) -> dict[str, NodeStatus]:
    return {s.node: s for s in statuses}


def decider() -> Decider:
    return Decider(MASTERS, start_timeout=10.0, move_wait=30.0)


def test_steady_state_does_nothing() -> None:
    plan = decider().plan(
        ClusterRecord(scheduler_node="m1"), obs(up("m1"), down("m2"), down("m3")), 0
    )
    assert not plan.acts


def test_no_placement_adopts_the_single_running_scheduler() -> None:
    plan = decider().plan(ClusterRecord(), obs(down("m1"), up("m2"), down("m3")), 0)
    assert plan.place == "m2" and plan.start is None and plan.stop == ()


def test_no_placement_several_running_keeps_first_serving_and_stops_others() -> None:
    plan = decider().plan(ClusterRecord(), obs(up("m1", healthy=False), up("m2"), up("m3")), 0)
    assert plan.place == "m2"
    assert set(plan.stop) == {"m1", "m3"}


def test_no_placement_nothing_running_starts_on_first_reachable() -> None:
    plan = decider().plan(ClusterRecord(), obs(gone("m1"), down("m2"), down("m3")), 0)
    assert plan.place == "m2" and plan.start == "m2"


def test_dead_scheduler_is_started_in_place_once_then_moved() -> None:
    d = decider()
    record = ClusterRecord(scheduler_node="m1")
    plan = d.plan(record, obs(down("m1"), down("m2"), down("m3")), 0)
    assert plan.start == "m1" and plan.place is None
    d.started("m1", 0)
    plan = d.plan(record, obs(down("m1"), down("m2"), down("m3")), 2)
    assert plan.place == "m2" and plan.start == "m2" and plan.failed_nodes == ("m1",)


def test_starting_scheduler_is_left_alone_until_start_timeout() -> None:
    d = decider()
    record = ClusterRecord(scheduler_node="m1")
    starting = up("m1", healthy=False, since=3.0)
    assert not d.plan(record, obs(starting, down("m2"), down("m3")), 0).acts
    hung = up("m1", healthy=False, since=30.0)
    plan = d.plan(record, obs(hung, down("m2"), down("m3")), 0)
    assert plan.restart == "m1"
    d.started("m1", 0)
    assert not d.plan(record, obs(up("m1", False, 1.0), down("m2"), down("m3")), 5).acts
    plan = d.plan(record, obs(up("m1", False, 11.0), down("m2"), down("m3")), 11)
    assert plan.place == "m2" and plan.stop == ("m1",)


def young(node: str, check: str, seen_healthy: bool = False, since: float = 3.0) -> NodeStatus:
    """Running, unhealthy, `since` s after its start; `check` as node-action's health_check."""
    return NodeStatus(
        node,
        reachable=True,
        running=True,
        healthy=False,
        since_start=since,
        health_check=check,
        seen_healthy=seen_healthy,
    )


def test_the_start_window_ends_early_for_a_hung_or_once_healthy_scheduler() -> None:
    record = ClusterRecord(scheduler_node="m1")
    rest = (down("m2"), down("m3"))
    # Not listening yet, or answering 503 before it was ever healthy: starting.
    assert not decider().plan(record, obs(young("m1", "refused"), *rest), 0).acts
    assert not decider().plan(record, obs(young("m1", "failed"), *rest), 0).acts
    # Accepting connections without answering (hung), or unhealthy after it was
    # healthy since this start: restarted now, not after start_timeout.
    for status in (young("m1", "timeout"), young("m1", "failed", seen_healthy=True)):
        plan = decider().plan(record, obs(status, *rest), 0)
        assert plan.restart == "m1" and plan.repair and plan.place is None
    assert "(hung)" in decider().plan(record, obs(young("m1", "timeout"), *rest), 0).reason


def test_a_scheduler_systemd_is_about_to_restart_is_left_to_systemd() -> None:
    record = ClusterRecord(scheduler_node="m1")
    # Between its crash and systemd's restart (RestartSec): its last start was seen
    # healthy, its port refuses; not the controller's to repair.
    crashed = replace(
        young("m1", "refused", seen_healthy=True, since=300.0), sub_state="auto-restart"
    )
    plan = decider().plan(record, obs(crashed, down("m2"), up("m3")), 0)
    assert plan.restart is None and plan.start is None and plan.place is None
    assert plan.stop == ("m3",)  # strays are still stopped


def test_hung_again_soon_after_a_restart_is_moved_at_once() -> None:
    d = decider()
    record = ClusterRecord(scheduler_node="m1")
    rest = (down("m2"), down("m3"))
    d.plan(record, obs(young("m1", "timeout", since=30.0), *rest), 0)
    d.started("m1", 0, repair=True)
    assert not d.plan(record, obs(young("m1", "refused", since=1.0), *rest), 2).acts
    plan = d.plan(record, obs(young("m1", "timeout", since=3.0), *rest), 4)
    assert plan.place == "m2" and plan.failed_nodes == ("m1",)
    assert "failed again soon after a restart" in plan.reason


def test_recovered_node_is_cleared_from_failed_nodes() -> None:
    record = ClusterRecord(scheduler_node="m2", failed_nodes=("m1", "m2"))
    plan = decider().plan(record, obs(down("m1"), up("m2"), down("m3")), 0)
    assert plan.place == "m2" and plan.failed_nodes == ("m1",)


def test_unreachable_scheduler_node_moves_to_next_master() -> None:
    plan = decider().plan(
        ClusterRecord(scheduler_node="m2"), obs(down("m1"), gone("m2"), down("m3")), 0
    )
    assert plan.place == "m3" and plan.start == "m3" and plan.failed_nodes == ()


def test_move_skips_failed_nodes_but_uses_them_as_last_resort() -> None:
    record = ClusterRecord(scheduler_node="m1", failed_nodes=("m2",))
    plan = decider().plan(record, obs(gone("m1"), down("m2"), down("m3")), 0)
    assert plan.place == "m3"
    record = ClusterRecord(scheduler_node="m1", failed_nodes=("m2", "m3"))
    plan = decider().plan(record, obs(gone("m1"), down("m2"), down("m3")), 0)
    assert plan.place == "m2"


def test_nothing_reachable_keeps_waiting() -> None:
    plan = decider().plan(
        ClusterRecord(scheduler_node="m1"), obs(gone("m1"), gone("m2"), gone("m3")), 0
    )
    assert plan.place is None and plan.start is None


def test_strays_are_stopped() -> None:
    plan = decider().plan(
        ClusterRecord(scheduler_node="m1"), obs(up("m1"), up("m2"), down("m3")), 0
    )
    assert plan.stop == ("m2",) and plan.place is None and plan.start is None


def test_failover_request_moves_and_clears() -> None:
    record = ClusterRecord(scheduler_node="m1", failover_to="m3")
    plan = decider().plan(record, obs(up("m1"), down("m2"), down("m3")), 0)
    assert (plan.place, plan.stop, plan.start, plan.clear_failover) == ("m3", ("m1",), "m3", True)


def test_failover_to_next_master() -> None:
    record = ClusterRecord(scheduler_node="m3", failover_to="")
    plan = decider().plan(record, obs(down("m1"), down("m2"), up("m3")), 0)
    assert plan.place == "m1"


def test_failover_to_unknown_or_unreachable_is_refused_and_cleared() -> None:
    for target, status in (("m9", down("m2")), ("m2", gone("m2"))):
        record = ClusterRecord(scheduler_node="m1", failover_to=target)
        plan = decider().plan(record, obs(up("m1"), status, down("m3")), 0)
        assert plan.clear_failover and plan.place is None and "refused" in plan.reason


def test_start_is_safe_only_when_others_are_seen_stopped_or_after_move_wait() -> None:
    d = decider()
    d.placement_written(100.0)
    assert d.safe_to_start("m2", obs(down("m1"), down("m2"), down("m3")), 100.0)
    assert not d.safe_to_start("m2", obs(gone("m1"), down("m2"), down("m3")), 100.0)
    assert not d.safe_to_start("m2", obs(up("m1"), down("m2"), down("m3")), 129.9)
    assert d.safe_to_start("m2", obs(gone("m1"), down("m2"), down("m3")), 130.0)


def at(seconds: float) -> datetime:
    """The metastore's clock, `seconds` after an arbitrary origin."""
    return datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)


def confirmed(server_time: float, **nodes: float) -> ClusterRecord:
    """A record read when the metastore's clock said `server_time`, with the nodes' last
    confirmation times."""
    return ClusterRecord(
        scheduler_node="m2",
        confirmations={node: at(t) for node, t in nodes.items()},
        server_time=at(server_time),
    )


def test_start_is_safe_once_the_metastore_saw_move_wait_pass_since_the_last_confirmation() -> None:
    d = decider()  # move_wait 30 s
    d.placement_written(100.0)  # also when it took the lease: long enough ago below
    view = obs(gone("m1"), down("m2"), down("m3"))
    # Read at 101, after the write; m1 last confirmed at metastore time 500.
    assert not d.safe_to_start("m2", view, 102.0, confirmed(529.9, m1=500.0), read_at=101.0)
    assert d.start_wait("m2", view, 102.0, confirmed(529.9, m1=500.0), 101.0) == pytest.approx(0.1)
    # The ACTIVE's clock alone (the old rule) would still wait 28 s.
    assert d.safe_to_start("m2", view, 130.0 + 2.0, confirmed(530.0, m1=500.0), read_at=101.0)
    # Only a move_wait after this ACTIVE took the lease, and after its last start there:
    # a start on a node whose right had lapsed runs until its controller next looks.
    early = decider()
    early.placement_written(100.0)
    early.active_since = 100.0
    assert not early.safe_to_start("m2", view, 129.0, confirmed(600.0, m1=500.0), 101.0)
    assert early.start_wait("m2", view, 129.0, confirmed(600.0, m1=500.0), 101.0) == 1.0
    early.active_since = 0.0
    early.started("m1", 110.0)
    early.placement_written(120.0)  # moved away from m1 (the old rule: until 150)
    assert not early.safe_to_start("m2", view, 139.0, confirmed(600.0, m1=500.0), 121.0)
    assert early.safe_to_start("m2", view, 140.0, confirmed(600.0, m1=500.0), 121.0)


def test_the_confirmation_rule_needs_a_record_read_after_the_placement_was_written() -> None:
    d = decider()
    d.placement_written(100.0)
    view = obs(gone("m1"), down("m2"), down("m3"))
    old = confirmed(900.0, m1=500.0)
    # Sent before the write returned: m1 may since have confirmed the old placement
    # with a confirmation this record does not show.
    assert not d.safe_to_start("m2", view, 110.0, old, read_at=99.0)
    assert d.safe_to_start("m2", view, 110.0, old, read_at=100.0)


def test_without_a_confirmation_time_only_the_old_rule_is_left() -> None:
    d = decider()
    d.placement_written(100.0)
    view = obs(gone("m1"), down("m2"), gone("m3"))
    # m3 never recorded a confirmation (or on another clock): unknown, not clear.
    record = confirmed(900.0, m1=500.0)
    assert not d.safe_to_start("m2", view, 129.9, record, read_at=101.0)
    assert d.safe_to_start("m2", view, 130.0, record, read_at=101.0)
    # No server time (a read without confirm_as on zookeeper): the same.
    no_clock = replace(record, server_time=None)
    assert not d.safe_to_start("m2", view, 129.9, no_clock, read_at=101.0)
    # m3 seen stopped instead: m1's confirmation alone decides.
    assert d.safe_to_start("m2", obs(gone("m1"), down("m2"), down("m3")), 110.0, record, 101.0)


def test_a_confirmation_newer_than_the_read_only_delays_the_start() -> None:
    d = decider()
    d.placement_written(100.0)
    view = obs(gone("m1"), down("m2"), down("m3"))
    # Recorded after the server time of the read (its clock set back, or a later
    # statement): counted as it is, never as older.
    assert not d.safe_to_start("m2", view, 110.0, confirmed(500.0, m1=510.0), 101.0)
    assert d.start_wait("m2", view, 110.0, confirmed(500.0, m1=510.0), 101.0) == 20.0


def test_new_placements_avoid_the_active_node_when_they_can() -> None:
    d = Decider(MASTERS, start_timeout=10.0, move_wait=30.0, me="m1")
    plan = d.plan(ClusterRecord(), obs(down("m1"), down("m2"), down("m3")), 0)
    assert plan.place == "m2"
    plan = d.plan(ClusterRecord(scheduler_node="m3"), obs(down("m1"), gone("m2"), gone("m3")), 0)
    assert plan.place == "m1"  # the only reachable master left
    healthy_on_active = d.plan(ClusterRecord(scheduler_node="m1"), obs(up("m1"), down("m2")), 0)
    assert not healthy_on_active.acts  # a healthy scheduler is not moved for this


def test_a_scheduler_that_keeps_failing_after_restarts_is_moved() -> None:
    d = decider()
    record = ClusterRecord(scheduler_node="m1")
    plan = d.plan(record, obs(down("m1"), down("m2"), down("m3")), 0)
    assert plan.start == "m1" and plan.repair
    d.started("m1", 0, plan.repair)
    assert not d.plan(record, obs(up("m1"), down("m2"), down("m3")), 2).acts  # healthy again
    plan = d.plan(record, obs(down("m1"), down("m2"), down("m3")), 5)  # down again, soon
    assert plan.place == "m2" and plan.failed_nodes == ("m1",)
    d2 = decider()
    d2.plan(record, obs(down("m1"), down("m2"), down("m3")), 0)
    d2.started("m1", 0, repair=True)
    d2.plan(record, obs(up("m1"), down("m2"), down("m3")), 2)
    plan = d2.plan(record, obs(down("m1"), down("m2"), down("m3")), 21)  # long after: restart
    assert plan.start == "m1" and plan.place is None


def test_a_first_start_does_not_count_as_a_repair() -> None:
    d = decider()
    plan = d.plan(ClusterRecord(), obs(down("m1"), down("m2"), down("m3")), 0)
    d.started(plan.start or "", 0, plan.repair)
    record = ClusterRecord(scheduler_node="m1")
    assert not d.plan(record, obs(up("m1"), down("m2"), down("m3")), 2).acts
    assert d.plan(record, obs(down("m1"), down("m2"), down("m3")), 4).start == "m1"


def test_a_deferred_repair_does_not_count_as_flapping() -> None:
    d = decider()
    record = ClusterRecord(scheduler_node="m1")
    assert d.plan(record, obs(down("m1"), gone("m2"), down("m3")), 0).start == "m1"
    # not started (unsafe yet): the next poll plans the same repair, not a move
    assert d.plan(record, obs(down("m1"), gone("m2"), down("m3")), 1).start == "m1"


def test_systemd_restarts_on_two_polls_within_the_flap_window_move_the_scheduler() -> None:
    d = decider()  # flap window: 2 x 10 s
    record = ClusterRecord(scheduler_node="m1")
    rest = (down("m2"), down("m3"))
    assert not d.plan(record, obs(up("m1", restarts=4), *rest), 0).acts  # a baseline
    assert not d.plan(record, obs(up("m1", restarts=6), *rest), 2).acts  # one poll saw it
    assert not d.plan(record, obs(up("m1", restarts=6), *rest), 4).acts
    plan = d.plan(record, obs(up("m1", restarts=7), *rest), 19)  # healthy, but again
    assert plan.place == "m2" and plan.start == "m2" and plan.stop == ("m1",)
    assert plan.failed_nodes == ("m1",) and "keeps crashing" in plan.reason


def test_systemd_restarts_further_apart_than_the_flap_window_are_left_to_systemd() -> None:
    d = decider()
    record = ClusterRecord(scheduler_node="m1")
    rest = (down("m2"), down("m3"))
    for now, count in ((0, 0), (2, 1), (23, 2), (44, 3), (46, 3)):
        assert not d.plan(record, obs(up("m1", restarts=count), *rest), now).acts


def test_a_reset_or_a_first_sight_of_the_restart_count_is_only_a_baseline() -> None:
    d = decider()
    record = ClusterRecord(scheduler_node="m1")
    rest = (down("m2"), down("m3"))
    assert not d.plan(record, obs(up("m1", restarts=9), *rest), 0).acts  # a new ACTIVE
    assert not d.plan(record, obs(up("m1", restarts=0), *rest), 2).acts  # reset-failed
    assert not d.plan(record, obs(up("m1", restarts=1), *rest), 4).acts  # one crash
    assert not d.plan(record, obs(up("m1", restarts=None), *rest), 6).acts  # old node-action
    assert d.plan(record, obs(up("m1", restarts=2), *rest), 8).place == "m2"


def test_the_crash_count_starts_over_with_the_controllers_own_start() -> None:
    d = decider()
    record = ClusterRecord(scheduler_node="m1")
    rest = (down("m2"), down("m3"))
    assert not d.plan(record, obs(up("m1", restarts=0), *rest), 0).acts
    assert not d.plan(record, obs(up("m1", restarts=1), *rest), 2).acts  # one crash
    plan = d.plan(record, obs(up("m1", healthy=False, restarts=1), *rest), 4)
    assert plan.restart == "m1" and plan.repair  # hung, long after its start
    d.started("m1", 4, plan.repair, restarts=0)  # the restart's start reset the count
    assert not d.plan(record, obs(up("m1", since=1.0, restarts=0), *rest), 6).acts
    assert not d.plan(record, obs(up("m1", since=0.5, restarts=1), *rest), 8).acts
    plan = d.plan(record, obs(up("m1", since=0.5, restarts=2), *rest), 10)
    assert plan.place == "m2" and plan.failed_nodes == ("m1",)


def test_decisions_import_no_ansible() -> None:
    # decisions.py is pure: importing it must not load Ansible or ansible-runner.
    code = (
        "import sys, ha_toolkit.decisions; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ansible', 'ansible_runner')"
        " or m == 'ha_toolkit.nodes'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout
    assert out.strip() == "[]"
