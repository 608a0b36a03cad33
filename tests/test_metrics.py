"""Metrics: values recorded, served over real HTTP, and the port freed on close."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ha_toolkit.metrics import Metrics, parse_listen

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Exposition text -> {(sample name, sorted labels): value}."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return parse(response.read().decode())


@pytest.fixture
def served() -> Iterator[Metrics]:
    metrics = Metrics("127.0.0.1:0")
    try:
        yield metrics
    finally:
        metrics.close()


def test_recorded_values_are_served_over_http(served: Metrics) -> None:
    served.set_role(True)
    served.set_epoch(42)
    served.set_scheduler_up({"node1": False, "node2": True})
    served.count_failover()
    served.count_action("start", "ok")
    served.count_action("start", "ok")
    served.count_action("stop", "unreachable")
    for seconds in (0.4, 1.5, 12.0):
        served.observe_poll(seconds)
    served.count_renew_failure()
    served.set_paused(True)
    assert served.port is not None

    samples = scrape(served.port)

    assert samples[("ha_toolkit_role", ())] == 1
    assert samples[("ha_toolkit_epoch", ())] == 42
    assert samples[("ha_toolkit_scheduler_up", (("node", "node1"),))] == 0
    assert samples[("ha_toolkit_scheduler_up", (("node", "node2"),))] == 1
    assert samples[("ha_toolkit_failovers_total", ())] == 1
    actions = "ha_toolkit_node_actions_total"
    assert samples[(actions, (("action", "start"), ("result", "ok")))] == 2
    assert samples[(actions, (("action", "stop"), ("result", "unreachable")))] == 1
    assert samples[("ha_toolkit_poll_duration_seconds_count", ())] == 3
    assert samples[("ha_toolkit_poll_duration_seconds_sum", ())] == pytest.approx(13.9)
    buckets = "ha_toolkit_poll_duration_seconds_bucket"
    assert samples[(buckets, (("le", "0.5"),))] == 1
    assert samples[(buckets, (("le", "2.0"),))] == 2
    assert samples[(buckets, (("le", "15.0"),))] == 3
    assert samples[("ha_toolkit_lease_renew_failures_total", ())] == 1
    assert samples[("ha_toolkit_paused", ())] == 1
    assert parse(served.render().decode()) == samples


def test_defaults_before_anything_is_recorded() -> None:
    samples = parse(Metrics(None).render().decode())
    assert samples[("ha_toolkit_role", ())] == 0
    assert samples[("ha_toolkit_paused", ())] == 0
    assert samples[("ha_toolkit_failovers_total", ())] == 0
    assert not any(name == "ha_toolkit_scheduler_up" for name, _ in samples)


def test_standby_and_unpaused_set_gauges_back_to_zero() -> None:
    metrics = Metrics(None)
    metrics.set_role(True)
    metrics.set_paused(True)
    metrics.set_role(False)
    metrics.set_paused(False)
    samples = parse(metrics.render().decode())
    assert samples[("ha_toolkit_role", ())] == 0
    assert samples[("ha_toolkit_paused", ())] == 0


def test_nodes_missing_from_the_last_poll_lose_their_series() -> None:
    metrics = Metrics(None)
    metrics.set_scheduler_up({"node1": True, "node2": False, "node3": False})
    metrics.set_scheduler_up({"node2": True, "node3": False})
    samples = parse(metrics.render().decode())
    up = {
        dict(labels)["node"]: value
        for (name, labels), value in samples.items()
        if name == "ha_toolkit_scheduler_up"
    }
    assert up == {"node2": 1, "node3": 0}


def test_registries_are_private_to_each_instance() -> None:
    first, second = Metrics(None), Metrics(None)
    first.count_failover()
    assert parse(second.render().decode())[("ha_toolkit_failovers_total", ())] == 0


def test_close_frees_the_port() -> None:
    metrics = Metrics("127.0.0.1:0")
    try:
        port = metrics.port
        assert port is not None
        scrape(port)
    finally:
        metrics.close()
    metrics.close()  # idempotent
    assert metrics.port is None

    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    # A new listener can take the port at once (a restart of the controller).
    again = Metrics(f"127.0.0.1:{port}")
    try:
        assert again.port == port
        assert ("ha_toolkit_role", ()) in scrape(port)
    finally:
        again.close()


def test_not_serving_without_a_listen_address() -> None:
    metrics = Metrics(None)
    assert metrics.port is None
    metrics.close()


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        (":9464", ("0.0.0.0", 9464)),
        ("[::1]:9464", ("::1", 9464)),
    ],
)
def test_parse_listen(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["9464", "host:", "host:port", "host:70000", ""])
def test_parse_listen_rejects_malformed_addresses(listen: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        parse_listen(listen)
