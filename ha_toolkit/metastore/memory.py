"""In-memory backend: the metastore contract without a server, for tests of the control loop.

One :class:`MemoryServer` holds the state; every :class:`MemoryMetastore` made by
:meth:`MemoryServer.connect` is one client of it, as each controller has its own
connection to a real server. Every call is atomic under the server's lock.

As with MySQL, expiry is decided by the server's clock only (``clock``, by default
``time.monotonic``; tests pass a fake one), and a lease carries the client's send
time on the client's clock. The server, or one client, can be made unreachable to
test what a controller does when its metastore is out of reach.

Not for production: the state lives and dies with one process, so it cannot
arbitrate between controllers on different machines. It is not offered as a
``metastore.type``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ha_toolkit.metastore import ClusterRecord, Event, Lease, LeaseLost, Metastore, MetastoreError

# As the MySQL backend: a controller counts as a standby while its heartbeat is
# younger than this many lease TTLs, and never less than the minimum window.
_STANDBY_TTLS = 3
_STANDBY_MIN_WINDOW = 60.0
_ANY_NODE = ""  # request_failover(None): "to the next master", read back as ""


@dataclass
class _State:
    holder: str | None = None
    epoch: int = 0
    expires_at: float | None = None  # on the server's clock
    ttl: float = 0.0
    scheduler_node: str | None = None
    placement_epoch: int = 0
    failed_nodes: tuple[str, ...] = ()
    paused: bool = False
    failover_to: str | None = None
    last_poll: datetime | None = None
    last_seen: dict[str, float] = field(default_factory=dict)  # controller -> heartbeat time
    confirmed: dict[str, datetime] = field(default_factory=dict)  # node -> latest confirmation
    events: list[Event] = field(default_factory=list)


class MemoryServer:
    """The shared state of every client made by :meth:`connect`."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.clock = clock
        # For last_poll, event times and confirmations, as a server's UTC: the one clock
        # confirmations and server_time are both read from, as on a real server.
        self.wall_clock = wall_clock
        self.reachable = True
        self._lock = threading.Lock()
        self._state: _State | None = None  # None until setup()

    def connect(self, clock: Callable[[], float] | None = None) -> MemoryMetastore:
        """A new client; `clock` is the client's own (default: the server's)."""
        return MemoryMetastore(self, clock or self.clock)


class MemoryMetastore(Metastore):
    """One client of a :class:`MemoryServer`."""

    def __init__(self, server: MemoryServer, clock: Callable[[], float]) -> None:
        self._server = server
        self._clock = clock
        self.reachable = True  # False: this client alone is cut off from the server

    # -- helpers ----------------------------------------------------------------------------
    def _check_reachable(self, what: str) -> None:
        if not (self._server.reachable and self.reachable):
            raise MetastoreError(f"memory metastore: {what} failed: unreachable")

    def _state(self, what: str) -> _State:
        """The state, once the server is reachable and set up (call under the lock)."""
        self._check_reachable(what)
        if self._server._state is None:
            raise MetastoreError("memory metastore is not set up")
        return self._server._state

    def _valid(self, state: _State) -> bool:
        return (
            state.holder is not None
            and state.expires_at is not None
            and state.expires_at > self._server.clock()
        )

    def _fenced(self, what: str, lease: Lease) -> _State:
        state = self._state(what)
        if not (self._valid(state) and state.holder == lease.holder and state.epoch == lease.epoch):
            raise LeaseLost(f"{what} refused: epoch {lease.epoch} is no longer current")
        return state

    # -- Metastore --------------------------------------------------------------------------
    def setup(self) -> None:
        with self._server._lock:
            self._check_reachable("setup")
            if self._server._state is None:
                self._server._state = _State()

    def acquire(self, controller: str, ttl: float) -> Lease | None:
        sent_at = self._clock()
        with self._server._lock:
            state = self._state("acquire")
            valid = self._valid(state)
            if valid and state.holder != controller:
                return None
            # As MySQL: a lease that had lapsed gets a new epoch even when we held it,
            # since a previous incarnation of us may still have writes in flight.
            if not (valid and state.holder == controller):
                state.epoch += 1
            state.holder = controller
            state.expires_at = self._server.clock() + ttl
            state.ttl = ttl
            return Lease(controller, state.epoch, sent_at, ttl)

    def renew(self, lease: Lease) -> Lease:
        sent_at = self._clock()
        with self._server._lock:
            state = self._state("renew")
            if not (
                self._valid(state) and state.holder == lease.holder and state.epoch == lease.epoch
            ):
                raise LeaseLost(f"lease epoch {lease.epoch} of {lease.holder} is no longer current")
            state.expires_at = self._server.clock() + lease.ttl
            return Lease(lease.holder, lease.epoch, sent_at, lease.ttl)

    def release(self, lease: Lease) -> None:
        with self._server._lock:
            state = self._state("release")
            if state.holder == lease.holder and state.epoch == lease.epoch:
                state.holder = None
                state.expires_at = None

    def read(self, confirm_as: str | None = None) -> ClusterRecord:
        with self._server._lock:
            state = self._state("read")
            server_time = self._server.wall_clock()
            if confirm_as is not None:
                # Atomic with the read below (one lock): recorded before it is served.
                before = state.confirmed.get(confirm_as)
                state.confirmed[confirm_as] = max(server_time, before or server_time)
            now = self._server.clock()
            valid = self._valid(state)
            holder = state.holder if valid else None
            window = max(_STANDBY_MIN_WINDOW, _STANDBY_TTLS * state.ttl)
            standbys = sorted(
                name
                for name, seen in state.last_seen.items()
                if now - seen < window and name != holder
            )
            live = tuple(n for n in standbys if now - state.last_seen[n] < state.ttl)
            return ClusterRecord(
                holder=holder,
                epoch=state.epoch,
                lease_remaining=(state.expires_at or now) - now if valid else None,
                scheduler_node=state.scheduler_node,
                placement_epoch=state.placement_epoch,
                failed_nodes=state.failed_nodes,
                paused=state.paused,
                failover_to=state.failover_to,
                standbys=tuple(standbys),
                live_standbys=live,
                last_poll=state.last_poll,
                confirmations=dict(state.confirmed),
                server_time=server_time,
            )

    def write_placement(
        self, lease: Lease, node: str | None, failed_nodes: tuple[str, ...] = ()
    ) -> None:
        with self._server._lock:
            state = self._fenced("write_placement", lease)
            state.scheduler_node = node
            state.placement_epoch = lease.epoch
            state.failed_nodes = tuple(failed_nodes)

    def finish_poll(self, lease: Lease, clear_failover: bool = False) -> None:
        with self._server._lock:
            state = self._fenced("finish_poll", lease)
            state.last_poll = self._server.wall_clock()
            if clear_failover:
                state.failover_to = None

    def set_paused(self, paused: bool) -> None:
        with self._server._lock:
            self._state("set_paused").paused = paused

    def request_failover(self, node: str | None) -> None:
        with self._server._lock:
            self._state("request_failover").failover_to = _ANY_NODE if node is None else node

    def heartbeat(self, controller: str) -> None:
        with self._server._lock:
            self._state("heartbeat").last_seen[controller] = self._server.clock()

    def append_event(self, event: Event) -> None:
        with self._server._lock:
            state = self._state("append_event")
            state.events.append(
                Event(
                    event.controller,
                    event.epoch,
                    event.action,
                    event.node,
                    event.result,
                    time=self._server.wall_clock(),
                )
            )

    def events(self, limit: int = 50) -> list[Event]:
        with self._server._lock:
            events = self._state("events").events
            return list(events[-limit:]) if limit > 0 else []

    def clear(self) -> None:
        with self._server._lock:
            state = self._state("clear")
            # The epoch stays (nodes refuse an epoch lower than one they have seen),
            # and so do the event log, the heartbeats and the confirmations, as in the
            # other backends.
            keep = _State(
                epoch=state.epoch,
                last_seen=state.last_seen,
                confirmed=state.confirmed,
                events=state.events,
            )
            self._server._state = keep

    def close(self) -> None:
        pass  # nothing to release; a closed client, like a real one, may be used again
