"""The metastore: a lease with a fencing epoch, and the cluster record it guards.

One small interface, one module per backend (``mysql``, ``zookeeper``, and
``memory``: the same contract in one process, for fast tests of the control
loop; it is not a ``metastore.type``). Every backend passes the same contract
suite (tests/test_metastore_contract.py), the real ones against a real server.

What it guarantees, assuming clocks whose *rate* drifts by a bounded amount
(no synchronisation assumed):

* at most one controller holds a valid lease at a time; the epoch grows
  whenever the holder changes;
* a write made under a lease lands only if that lease's epoch is still the
  current one and the lease has not expired by the metastore's own judgement;
* a :class:`Lease` carries a local deadline on the holder's monotonic clock,
  measured from the moment the acquire/renew request was *sent*, so the holder
  stops trusting it no later than the metastore stops honouring it;
* ``read(confirm_as=node)`` records the metastore's own time as that node's latest
  confirmation *before* it reads, so a node that counts the read as confirming its
  placement (from when it sent it) was sent no later than the recorded time.

What it does not guarantee: anything about a holder that acts after its
local deadline. Callers check :meth:`Lease.remaining` before every action.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ha_toolkit.config import MetastoreConfig


class MetastoreError(Exception):
    """The metastore could not be reached or answered with an error."""


class LeaseLost(MetastoreError):
    """Our lease is no longer current: a renew or fenced write was refused."""


class MetastoreAuthError(MetastoreError):
    """The metastore answered but refused our credentials (wrong user or password, or
    no rights on our tables or znodes). Retried like unreachability: an operator may
    fix the grant while the controllers run."""


def credentials(config: MetastoreConfig) -> str:
    """Who we log in as and where the password came from, for an error message: the
    user and the password file, never the password."""
    from ha_toolkit.config import PASSWORD_ENV

    if config.password_file:
        source = f"password from {config.password_file}"
    elif config.password is not None:
        source = f"password from metastore.password or ${PASSWORD_ENV}"
    else:
        source = "no password"
    return f"user {config.user!r} ({source})" if config.user else f"no user ({source})"


@dataclass(frozen=True)
class Lease:
    holder: str
    epoch: int
    sent_at: float  # time.monotonic() when the acquire/renew request was sent
    ttl: float  # seconds the metastore honours the lease after it received the request

    @property
    def deadline(self) -> float:
        return self.sent_at + self.ttl

    def remaining(self, now: float | None = None) -> float:
        """Seconds this lease is still ours by our own clock (negative once past)."""
        return self.deadline - (time.monotonic() if now is None else now)


@dataclass(frozen=True)
class ClusterRecord:
    """What every controller reads each cycle."""

    holder: str | None = None  # controller holding the lease, if any
    epoch: int = 0  # current fencing epoch (0: never held)
    lease_remaining: float | None = None  # by the metastore's clock; informational
    scheduler_node: str | None = None  # placement: where the scheduler may run
    placement_epoch: int = 0  # epoch under which the placement was written
    failed_nodes: tuple[str, ...] = ()  # masters where the scheduler would not start
    paused: bool = False  # maintenance: the ACTIVE takes no node action
    failover_to: str | None = None  # pending `ha-toolkit failover --to NODE` request
    standbys: tuple[str, ...] = ()  # controllers seen recently, other than the holder
    # Those of them heard from within the last lease TTL: alive now (zookeeper: all of
    # them, a heartbeat there is a live session). The ACTIVE hands over only to these.
    live_standbys: tuple[str, ...] = ()
    last_poll: datetime | None = None  # when the ACTIVE last finished a poll (UTC)
    # node -> the metastore's clock when that node's controller last began a confirming
    # read (read(confirm_as=node)): recorded before the read, so never earlier than the
    # moment the node sent any read it counts as confirming. Only times on the clock of
    # server_time (zookeeper: written under the same leader); every one when server_time
    # is None (for display).
    confirmations: Mapping[str, datetime] = field(default_factory=dict, hash=False)
    # The metastore's clock at (or before) this read, on the same clock as confirmations;
    # None when the backend cannot tell (zookeeper, a read without confirm_as).
    server_time: datetime | None = None


@dataclass(frozen=True)
class Event:
    """One entry of the append-only event log."""

    controller: str
    epoch: int
    action: str
    node: str | None
    result: str
    time: datetime | None = field(default=None, compare=False)  # set by the metastore (UTC)


class Metastore(ABC):
    """A backend. Methods raise :class:`MetastoreError` when the server is out of
    reach and :class:`LeaseLost` when a lease-guarded call is refused."""

    @abstractmethod
    def setup(self) -> None:
        """Create tables or paths; idempotent."""

    @abstractmethod
    def acquire(self, controller: str, ttl: float) -> Lease | None:
        """Take the lease if it is free or expired, or confirm it if already ours.
        Returns None while another controller holds a valid lease. Safe to call
        from several controllers at the same moment: exactly one wins."""

    @abstractmethod
    def renew(self, lease: Lease) -> Lease:
        """Extend our lease; raises LeaseLost if it is no longer ours."""

    @abstractmethod
    def release(self, lease: Lease) -> None:
        """Give the lease up (best effort; it expires anyway)."""

    @abstractmethod
    def read(self, confirm_as: str | None = None) -> ClusterRecord:
        """The current record; any controller, leader or not, may read it.

        With `confirm_as` (the reading controller's node name), first record the
        metastore's current time as that node's latest confirmation (kept as the
        later of it and the one recorded before), then read: a write that completes
        before the read is served. If either fails the call raises, so a caller
        that counts a record naming its node as confirmed, from when it sent this
        call, only does so for a read whose confirmation time was recorded."""

    @abstractmethod
    def write_placement(
        self, lease: Lease, node: str | None, failed_nodes: tuple[str, ...] = ()
    ) -> None:
        """Fenced write of the scheduler placement; raises LeaseLost for a stale lease."""

    @abstractmethod
    def finish_poll(self, lease: Lease, clear_failover: bool = False) -> None:
        """Fenced: record the end of a poll; optionally clear the failover request."""

    @abstractmethod
    def set_paused(self, paused: bool) -> None:
        """Operator request (not fenced: any node's CLI may pause or resume)."""

    @abstractmethod
    def request_failover(self, node: str | None) -> None:
        """Operator request to move the scheduler to `node` (None: the next master)."""

    @abstractmethod
    def heartbeat(self, controller: str) -> None:
        """A STANDBY says it is alive (shown by `status`)."""

    @abstractmethod
    def append_event(self, event: Event) -> None:
        """Append to the event log."""

    @abstractmethod
    def events(self, limit: int = 50) -> list[Event]:
        """The newest `limit` events, oldest first."""

    @abstractmethod
    def clear(self) -> None:
        """Delete the lease, record and requests (not the event log)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""


def open_metastore(config: MetastoreConfig) -> Metastore:
    """The backend named by ``config.type``."""
    if config.type == "mysql":
        from ha_toolkit.metastore.mysql import MySQLMetastore

        return MySQLMetastore(config)
    if config.type == "zookeeper":
        from ha_toolkit.metastore.zookeeper import ZooKeeperMetastore

        return ZooKeeperMetastore(config)
    raise ValueError(f"unknown metastore type {config.type!r}")
