"""Prometheus metrics of one controller, on a private registry.

Exposed series (all prefixed ``ha_toolkit_``):

* ``role`` gauge: 1 while this controller is ACTIVE, 0 while STANDBY. A plain
  0/1 gauge rather than an enum, so "exactly one ACTIVE" is simply
  ``sum(ha_toolkit_role) == 1`` across the masters.
* ``epoch`` gauge: the fencing epoch this controller last saw or took.
* ``scheduler_up{node}`` gauge: 1/0 per master from the last poll; nodes absent
  from the last poll have no series.
* ``failovers_total`` counter: times this controller became ACTIVE.
* ``node_actions_total{action,result}`` counter: start/stop/... runs by outcome.
* ``poll_duration_seconds`` histogram: one control-loop poll.
* ``lease_renew_failures_total`` counter.
* ``paused`` gauge: 1 while failover is paused by an operator.

Metrics are recorded whether or not they are served, so callers need no ifs.
"""

from __future__ import annotations

from collections.abc import Mapping
from threading import Lock, Thread
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)

PREFIX = "ha_toolkit"

# A poll is a handful of health checks and metastore round trips: usually well
# under a second, up to the health-check timeouts when nodes are unreachable.
POLL_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0)


class Metrics:
    """The controller's metrics; served over HTTP when ``listen`` ("host:port") is given.

    Port 0 picks a free port (see :attr:`port`). Raises ``ValueError`` for a
    malformed ``listen`` and ``OSError`` when the address cannot be bound.
    """

    def __init__(self, listen: str | None) -> None:
        self._registry = CollectorRegistry(auto_describe=True)
        r = self._registry
        self._role = Gauge(
            f"{PREFIX}_role", "1 if this controller is ACTIVE, 0 if STANDBY", registry=r
        )
        self._epoch = Gauge(f"{PREFIX}_epoch", "Fencing epoch last seen or taken", registry=r)
        self._scheduler_up = Gauge(
            f"{PREFIX}_scheduler_up",
            "1 if the node's scheduler was healthy at the last poll",
            ["node"],
            registry=r,
        )
        self._failovers = Counter(
            f"{PREFIX}_failovers", "Times this controller became ACTIVE", registry=r
        )
        self._node_actions = Counter(
            f"{PREFIX}_node_actions",
            "Actions run on nodes, by action and result",
            ["action", "result"],
            registry=r,
        )
        self._poll_duration = Histogram(
            f"{PREFIX}_poll_duration_seconds",
            "Duration of one control-loop poll",
            buckets=POLL_BUCKETS,
            registry=r,
        )
        self._renew_failures = Counter(
            f"{PREFIX}_lease_renew_failures", "Failed lease renewals", registry=r
        )
        self._paused = Gauge(f"{PREFIX}_paused", "1 while failover is paused", registry=r)
        # Nodes that currently have a scheduler_up series, so stale ones can be removed.
        self._up_nodes: set[str] = set()
        self._up_lock = Lock()
        self._server: WSGIServer | None = None
        self._thread: Thread | None = None
        if listen is not None:
            host, port = parse_listen(listen)
            self._server, self._thread = start_http_server(port, host, registry=r)

    @property
    def port(self) -> int | None:
        """The TCP port being served, or None when not serving."""
        return None if self._server is None else int(self._server.server_port)

    def set_role(self, active: bool) -> None:
        self._role.set(1 if active else 0)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.set(epoch)

    def set_scheduler_up(self, statuses: Mapping[str, bool]) -> None:
        """Replace the per-node scheduler health with ``statuses`` (node -> healthy)."""
        with self._up_lock:
            for node in self._up_nodes - statuses.keys():
                self._scheduler_up.remove(node)
            for node, up in statuses.items():
                self._scheduler_up.labels(node=node).set(1 if up else 0)
            self._up_nodes = set(statuses)

    def count_failover(self) -> None:
        self._failovers.inc()

    def count_action(self, action: str, result: str) -> None:
        self._node_actions.labels(action=action, result=result).inc()

    def observe_poll(self, seconds: float) -> None:
        self._poll_duration.observe(seconds)

    def count_renew_failure(self) -> None:
        self._renew_failures.inc()

    def set_paused(self, paused: bool) -> None:
        self._paused.set(1 if paused else 0)

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format."""
        return bytes(generate_latest(self._registry))

    def close(self) -> None:
        """Stop serving and free the port (idempotent)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join()


def parse_listen(listen: str) -> tuple[str, int]:
    """``"host:port"`` (``"[::1]:9100"`` for IPv6; empty host = all interfaces)."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"metrics listen address must be host:port, got {listen!r}")
    host = host.removeprefix("[").removesuffix("]") or "0.0.0.0"
    return host, int(port_text)
