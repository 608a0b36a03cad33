"""ZooKeeper backend: the lease is the lowest ephemeral sequential znode.

Layout under ``/{prefix}``::

    lock/<token>-lease-NNNNNNNNNN  ephemeral sequential, one per contending store;
                                   data: controller name. The lowest one holds the
                                   lease; the epoch is its czxid.
    record                         JSON placement, written only by fenced transactions
    requests                       JSON operator requests (paused, failover_to)
    poll                           mtime = end of the last poll (empty data: none yet)
    epoch                          the last winner's epoch, so read() still shows it
                                   once nobody holds the lease
    events/ev-NNNNNNNNNN           persistent sequential, JSON; ctime = event time
    controllers/<name>             ephemeral: a heartbeat is the session being alive
    confirmed/<node>               persistent; mtime = when that node's controller last
                                   began a confirming read (set before the read)

The lease TTL is the session timeout: ZooKeeper deletes the winner's znode when its
session expires, and only then can the next contender become the lowest. Because
sequence numbers and zxids grow together, each new winner's czxid exceeds every
earlier winner's, and ``clear()`` deletes znodes without resetting either counter.

``lease_remaining`` is always None here: the server keeps session deadlines to
itself. A znode's mtime is the wall clock of the ZooKeeper leader that ordered the write,
so a confirmation is comparable with ``server_time`` (the mtime of the reader's own
confirmation, set just before) only when both were written under the same leader: the
same leader epoch, the high 32 bits of their mzxids. Other confirmations are left out of
a record read with ``confirm_as`` (the ACTIVE then falls back to its own clock).
``request_failover(None)`` is stored as ``failover_to == ""``.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote

from kazoo.client import KazooClient
from kazoo.exceptions import (
    AuthFailedError,
    BadVersionError,
    KazooException,
    NoAuthError,
    NodeExistsError,
    NoNodeError,
    RolledBackError,
    SessionExpiredError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import KazooState, KeeperState
from kazoo.security import make_digest_acl

from ha_toolkit.config import MetastoreConfig
from ha_toolkit.metastore import (
    ClusterRecord,
    Event,
    Lease,
    LeaseLost,
    Metastore,
    MetastoreAuthError,
    MetastoreError,
    credentials,
)

_ANY_NODE = ""
# Session timeout for a store that reads before it ever contends; the first
# acquire() replaces the session with one whose timeout is the lease TTL.
_DEFAULT_SESSION_TTL = 10.0
_SEQ_DIGITS = 10  # ZooKeeper's sequential suffix
_EVENTS_KEPT = 1000
_TRIM_SLACK = 100  # trim in batches, not on every append
_CAS_TRIES = 10
_EMPTY_RECORD: dict[str, object] = {
    "scheduler_node": None,
    "placement_epoch": 0,
    "failed_nodes": [],
}
_EMPTY_REQUESTS: dict[str, object] = {"paused": False, "failover_to": None}


def _json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True).encode()


def _seq(name: str) -> int:
    return int(name[-_SEQ_DIGITS:])


def _ms_to_utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def is_access_denied(exc: BaseException) -> bool:
    """Whether a kazoo error is the ensemble refusing our credentials: authentication
    failed (SASL, or a scheme that checks), or our digest identity has no rights on the
    znodes (a wrong digest password is only noticed that way: the digest scheme itself
    accepts any credentials)."""
    return isinstance(exc, NoAuthError | AuthFailedError)


def _discard(client: Any, wait: bool = False) -> None:
    """Stop and close a kazoo client, best effort (the server expires its session
    anyway). kazoo's stop() joins its connection thread, which may be blocked
    connecting to an unreachable host for the whole session timeout: unless `wait`,
    that happens on a thread of its own."""

    def stop() -> None:
        with suppress(Exception):
            client.stop()
            client.close()

    if wait:
        stop()
    else:
        threading.Thread(target=stop, name="kazoo-discard", daemon=True).start()


def _refused(result: object) -> bool:
    """Whether a transaction's own failing operation was this one (not a rollback)."""
    return isinstance(result, Exception) and not isinstance(result, RolledBackError)


class _Session:
    """One KazooClient session and what its state listener has learnt."""

    def __init__(self, client: Any, ttl: float) -> None:
        self.client = client
        self.ttl = ttl  # the session timeout we asked for
        self.negotiated: float | None = None  # what the server granted, seconds
        self.suspended = False

    def on_state(self, state: str) -> None:
        # Runs on kazoo's connection thread: flip flags, nothing that could block.
        self.suspended = state != KazooState.CONNECTED

    def session_id(self) -> int | None:
        client_id = self.client.client_id
        return int(client_id[0]) if client_id else None


class ZooKeeperMetastore(Metastore):
    """The lease and record as znodes under ``/{prefix}``. One thread at a time."""

    def __init__(self, config: MetastoreConfig) -> None:
        root = config.prefix.strip("/")
        if not root:
            raise ValueError("zookeeper metastore needs a non-empty prefix")
        if not config.hosts:
            raise ValueError("zookeeper metastore needs hosts")
        self._config = config
        self._hosts = ",".join(config.hosts)
        self._credentials = credentials(config)
        self._timeout = config.connect_timeout
        # Each call (the session it may have to start, and every request) ends by this
        # deadline: the controller feeds systemd's watchdog only between calls.
        self._deadline = 0.0
        self._root = f"/{root}"
        self._lock = f"{self._root}/lock"
        self._record = f"{self._root}/record"
        self._requests = f"{self._root}/requests"
        self._poll = f"{self._root}/poll"
        self._epoch_path = f"{self._root}/epoch"
        self._events = f"{self._root}/events"
        self._controllers = f"{self._root}/controllers"
        self._confirmed = f"{self._root}/confirmed"
        # Our znodes carry this token so we can find ones we created but never
        # heard back about (a create whose reply was lost) and delete them.
        self._token = uuid.uuid4().hex
        self._session: _Session | None = None
        self._node: str | None = None  # our contender znode, full path
        self._node_session: int | None = None
        self._node_controller: str | None = None
        self._node_epoch = 0
        self._announced = 0  # last epoch we wrote to the epoch znode

    # -- session ----------------------------------------------------------------

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """One call: its deadline starts, and kazoo's errors become MetastoreErrors."""
        self._deadline = time.monotonic() + self._timeout
        try:
            yield
        except MetastoreError:
            raise
        except (KazooException, KazooTimeoutError, OSError) as exc:
            detail = str(exc) or type(exc).__name__
            if is_access_denied(exc):
                raise MetastoreAuthError(
                    f"zookeeper {self._hosts}: {what} failed: access denied for "
                    f"{self._credentials}: {detail}"
                ) from exc
            raise MetastoreError(f"zookeeper {self._hosts}: {what} failed: {detail}") from exc

    def _start(self, ttl: float) -> _Session:
        config = self._config
        kwargs: dict[str, Any] = {}
        if config.user and config.password is not None:
            kwargs["auth_data"] = [("digest", f"{config.user}:{config.password}")]
            kwargs["default_acl"] = [make_digest_acl(config.user, config.password, all=True)]
        if config.tls.enabled:
            kwargs.update(
                use_ssl=True,
                ca=config.tls.ca_file,
                certfile=config.tls.cert_file,
                keyfile=config.tls.key_file,
                verify_certs=True,
            )
        client = KazooClient(
            hosts=self._hosts,
            timeout=ttl,
            # Reconnect quickly: a session that reaches a server again before it
            # expires keeps its lease.
            connection_retry={"max_tries": -1, "delay": 0.1, "max_delay": 1.0},
            command_retry={"max_tries": 0},
            **kwargs,
        )
        session = _Session(client, ttl)
        self._watch_negotiation(session)
        client.add_listener(session.on_state)
        try:
            client.start_async().wait(timeout=self._left())
            # As KazooClient.start(), but look at why before closing: kazoo gives up on
            # a session whose authentication failed, and start() would call that a timeout.
            auth_failed = client.client_state == KeeperState.AUTH_FAILED
            if not client.connected:
                raise AuthFailedError() if auth_failed else KazooTimeoutError("Connection time-out")
        except (KazooException, KazooTimeoutError, OSError) as exc:
            _discard(client)
            detail = str(exc) or type(exc).__name__
            if is_access_denied(exc):
                raise MetastoreAuthError(
                    f"zookeeper {self._hosts}: no session: authentication failed for "
                    f"{self._credentials}: {detail}"
                ) from exc
            raise MetastoreError(
                f"zookeeper {self._hosts}: no session within {self._timeout:g} s: {detail}"
            ) from exc
        return session

    @staticmethod
    def _watch_negotiation(session: _Session) -> None:
        """Record the session timeout the server granted.

        The server clamps the requested timeout to its min/maxSessionTimeout; a lease
        promising more than the server grants would outlive the session. kazoo only
        logs the granted value, so wrap the private method that receives it (it
        returns read_timeout = 2/3 of the granted timeout, in ms).
        """
        connection = session.client._connection
        original = getattr(connection, "_connect", None)
        if original is None:
            raise MetastoreError("unsupported kazoo version: cannot learn the session timeout")

        def connect(*args: Any) -> Any:
            read_timeout, connect_timeout = original(*args)
            session.negotiated = read_timeout * 1.5 / 1000.0
            return read_timeout, connect_timeout

        connection._connect = connect

    def _client(self, ttl: float | None = None) -> Any:
        session = self._session
        if session is not None and ttl is not None and session.ttl != ttl:
            self._stop_session()
            session = None
        if session is None:
            session = self._session = self._start(ttl or _DEFAULT_SESSION_TTL)
        if session.suspended:
            raise MetastoreError(f"zookeeper {self._hosts}: connection suspended")
        return session.client

    def _stop_session(self) -> None:
        session, self._session = self._session, None
        self._forget_node()
        if session is not None:
            # A connected session closes at once (its ephemeral znodes go with it);
            # a suspended one may have kazoo's thread stuck connecting to a host that
            # is gone, for up to the session timeout: that one closes in the background.
            _discard(session.client, wait=not session.suspended)

    def _left(self) -> float:
        """Seconds left of this call (none left: waits only for what is already there)."""
        return max(0.0, self._deadline - time.monotonic())

    def _wait(self, result: Any) -> Any:
        return result.get(timeout=self._left())

    def _forget_node(self) -> None:
        self._node = None
        self._node_session = None
        self._node_controller = None
        self._node_epoch = 0

    def _granted_ttl(self, ttl: float) -> float:
        assert self._session is not None
        negotiated = self._session.negotiated
        if negotiated is None:
            # Cannot happen once a request has been answered; refusing is the safe side.
            raise MetastoreError(f"zookeeper {self._hosts}: session timeout not known yet")
        return min(ttl, negotiated)

    def _owned(self, lease: Lease) -> Any:
        """Our client, if `lease` is our current contender znode in our live session."""
        if (
            self._session is None
            or self._node is None
            or self._node_epoch != lease.epoch
            or self._node_controller != lease.holder
        ):
            raise LeaseLost(f"lease epoch {lease.epoch} of {lease.holder} is not held here")
        client = self._client()
        if self._session.session_id() != self._node_session:
            # The session that owned the znode expired; a new one is not the lease.
            self._forget_node()
            raise LeaseLost(f"lease epoch {lease.epoch}: zookeeper session expired")
        return client

    # -- Metastore --------------------------------------------------------------

    def setup(self) -> None:
        with self._errors("setup"):
            client = self._client()
            for path in (self._lock, self._events, self._controllers, self._confirmed):
                client.ensure_path(path)
            for path, data in (
                (self._record, _json(_EMPTY_RECORD)),
                (self._requests, _json(_EMPTY_REQUESTS)),
                (self._poll, b""),
                (self._epoch_path, b"0"),
            ):
                with suppress(NodeExistsError):
                    client.create(path, data)

    def acquire(self, controller: str, ttl: float) -> Lease | None:
        with self._errors("acquire"):
            client = self._client(ttl)
            assert self._session is not None
            session_id = self._session.session_id()
            if self._node is not None and (
                self._node_session != session_id or self._node_controller != controller
            ):
                self._forget_node()  # deleted below with the other strays, if still there
            sent_at = time.monotonic()
            # sync first so the listing is the leader's, not a lagging follower's.
            synced = client.sync_async(self._lock)
            children: list[str] = self._wait(client.get_children_async(self._lock))
            self._wait(synced)
            if self._node is not None and self._node.rsplit("/", 1)[1] not in children:
                self._forget_node()  # deleted by clear()
            for name in children:
                path = f"{self._lock}/{name}"
                if name.startswith(self._token) and path != self._node:
                    # One znode per store, never more: drop strays before they pile up.
                    with suppress(NoNodeError):
                        self._wait(client.delete_async(path))
            if self._node is None:
                path, stat = self._wait(
                    client.create_async(
                        f"{self._lock}/{self._token}-lease-",
                        controller.encode(),
                        ephemeral=True,
                        sequence=True,
                        include_data=True,
                    )
                )
                self._node, self._node_epoch = path, int(stat.czxid)
                self._node_session, self._node_controller = int(stat.ephemeralOwner), controller
                children = self._wait(client.get_children_async(self._lock))
            assert self._node is not None
            lowest = min(children, key=_seq)
            if f"{self._lock}/{lowest}" != self._node:
                return None
            epoch = self._node_epoch
            if epoch != self._announced and not self._announce(client, epoch):
                return None
            return Lease(controller, epoch, sent_at, self._granted_ttl(ttl))

    def _announce(self, client: Any, epoch: int) -> bool:
        """Record a new winner's epoch (fenced); False if our znode is gone."""
        assert self._node is not None
        tx = client.transaction()
        tx.check(self._node, 0)
        tx.set_data(self._epoch_path, str(epoch).encode())
        results = self._wait(tx.commit_async())
        if _refused(results[0]):
            self._forget_node()
            return False
        self._check_results("announce", results)
        self._announced = epoch
        return True

    @staticmethod
    def _check_results(what: str, results: list[Any]) -> None:
        for result in results:
            if isinstance(result, Exception) and not isinstance(result, RolledBackError):
                raise result

    def renew(self, lease: Lease) -> Lease:
        with self._errors("renew"):
            client = self._owned(lease)
            assert self._node is not None
            sent_at = time.monotonic()
            synced = client.sync_async(self._lock)
            try:
                stat = self._wait(client.exists_async(self._node))
                self._wait(synced)
            except SessionExpiredError:
                stat = None
            if stat is None or int(stat.czxid) != lease.epoch:
                self._forget_node()
                raise LeaseLost(f"lease epoch {lease.epoch} of {lease.holder} is gone")
            return Lease(lease.holder, lease.epoch, sent_at, self._granted_ttl(lease.ttl))

    def release(self, lease: Lease) -> None:
        with self._errors("release"):
            try:
                client = self._owned(lease)
            except LeaseLost:
                return
            assert self._node is not None
            node = self._node
            self._forget_node()
            with suppress(NoNodeError):
                self._wait(client.delete_async(node))

    def _fenced(self, what: str, lease: Lease, build: Callable[[Any, Any], None]) -> None:
        """Commit the operations `build(client, tx)` adds, only while our znode exists;
        rebuilt and retried when one of their own version checks fails."""
        with self._errors(what):
            client = self._owned(lease)
            assert self._node is not None
            for _ in range(_CAS_TRIES):
                tx = client.transaction()
                tx.check(self._node, 0)
                build(client, tx)
                try:
                    results = self._wait(tx.commit_async())
                except SessionExpiredError:
                    results = [NoNodeError()]
                if _refused(results[0]):
                    self._forget_node()
                    raise LeaseLost(f"{what} refused: epoch {lease.epoch} is no longer current")
                if not any(isinstance(r, BadVersionError) for r in results):
                    self._check_results(what, results)
                    return
            raise MetastoreError(f"zookeeper {self._hosts}: {what}: too many concurrent updates")

    def write_placement(
        self, lease: Lease, node: str | None, failed_nodes: tuple[str, ...] = ()
    ) -> None:
        record = {
            "scheduler_node": node,
            "placement_epoch": lease.epoch,
            "failed_nodes": list(failed_nodes),
        }

        def build(client: Any, tx: Any) -> None:
            tx.set_data(self._record, _json(record))

        self._fenced("write_placement", lease, build)

    def finish_poll(self, lease: Lease, clear_failover: bool = False) -> None:
        def build(client: Any, tx: Any) -> None:
            tx.set_data(self._poll, b"1")
            if clear_failover:
                data, stat = self._wait(client.get_async(self._requests))
                requests = {**json.loads(data), "failover_to": None}
                tx.set_data(self._requests, _json(requests), version=stat.version)

        self._fenced("finish_poll", lease, build)

    def _update_requests(self, what: str, change: dict[str, Any]) -> None:
        with self._errors(what):
            client = self._client()
            for _ in range(_CAS_TRIES):
                data, stat = self._wait(client.get_async(self._requests))
                requests = {**json.loads(data), **change}
                try:
                    self._wait(
                        client.set_async(self._requests, _json(requests), version=stat.version)
                    )
                    return
                except BadVersionError:
                    continue
            raise MetastoreError(f"zookeeper {self._hosts}: {what}: too many concurrent updates")

    def set_paused(self, paused: bool) -> None:
        self._update_requests("set_paused", {"paused": paused})

    def request_failover(self, node: str | None) -> None:
        target = _ANY_NODE if node is None else node
        self._update_requests("request_failover", {"failover_to": target})

    def _confirm(self, client: Any, node: str) -> Any:
        """Set `node`'s confirmation znode (created on first use); its new stat."""
        path = f"{self._confirmed}/{quote(node, safe='')}"
        with suppress(NoNodeError):
            return self._wait(client.set_async(path, node.encode()))
        try:
            _, stat = self._wait(
                client.create_async(path, node.encode(), makepath=True, include_data=True)
            )
            return stat
        except NodeExistsError:  # another controller on this node created it meanwhile
            return self._wait(client.set_async(path, node.encode()))

    def _confirmations(self, client: Any, own: Any) -> dict[str, datetime]:
        """Every node's confirmation time; with `own` (the reader's just-written stat),
        only those written under the same ZooKeeper leader, so on the same clock."""
        try:
            names = self._wait(client.get_children_async(self._confirmed))
        except NoNodeError:  # set up before confirmations existed; nobody confirmed yet
            return {}
        pending = [(n, client.exists_async(f"{self._confirmed}/{n}")) for n in names]
        times: dict[str, datetime] = {}
        for name, result in pending:
            stat = self._wait(result)
            if stat is None or (own is not None and stat.mzxid >> 32 != own.mzxid >> 32):
                continue
            # mtime is in whole ms, rounded down: the next ms is never before the write.
            times[unquote(name)] = _ms_to_utc(stat.mtime + 1)
        return times

    def read(self, confirm_as: str | None = None) -> ClusterRecord:
        with self._errors("read"):
            client = self._client()
            # Written (and waited for) before any read is sent: the reads below are
            # served after it, and see every write committed before it.
            own = self._confirm(client, confirm_as) if confirm_as is not None else None
            client.sync_async(self._root)
            pending = [
                client.get_children_async(self._lock),
                client.get_async(self._record),
                client.get_async(self._requests),
                client.get_async(self._poll),
                client.get_async(self._epoch_path),
                client.get_children_async(self._controllers),
            ]
            children, record, requests, poll, epoch_data, controllers = (
                self._wait(p) for p in pending
            )
            holder: str | None = None
            epoch = int(epoch_data[0] or b"0")
            for name in sorted(children, key=_seq):
                try:
                    data, stat = self._wait(client.get_async(f"{self._lock}/{name}"))
                except NoNodeError:  # gone since the listing: the next one holds
                    continue
                holder, epoch = data.decode(), int(stat.czxid)
                break
            placement = json.loads(record[0])
            wishes = json.loads(requests[0])
            confirmations = self._confirmations(client, own)
            poll_data, poll_stat = poll
            names = sorted(unquote(c) for c in controllers)
            return ClusterRecord(
                holder=holder,
                epoch=epoch,
                lease_remaining=None,
                scheduler_node=placement["scheduler_node"],
                placement_epoch=int(placement["placement_epoch"]),
                failed_nodes=tuple(placement["failed_nodes"]),
                paused=bool(wishes["paused"]),
                failover_to=wishes["failover_to"],
                standbys=tuple(n for n in names if n != holder),
                # An ephemeral znode: there only while its controller's session lives.
                live_standbys=tuple(n for n in names if n != holder),
                last_poll=_ms_to_utc(poll_stat.mtime) if poll_data else None,
                confirmations=confirmations,
                # Rounded down: never later than the server's clock at our own write.
                server_time=_ms_to_utc(own.mtime) if own is not None else None,
            )

    def heartbeat(self, controller: str) -> None:
        with self._errors("heartbeat"):
            client = self._client()
            path = f"{self._controllers}/{quote(controller, safe='')}"
            with suppress(NodeExistsError):
                self._wait(client.create_async(path, controller.encode(), ephemeral=True))

    def append_event(self, event: Event) -> None:
        data = {
            "controller": event.controller,
            "epoch": event.epoch,
            "action": event.action,
            "node": event.node,
            "result": event.result,
        }
        with self._errors("append_event"):
            client = self._client()
            self._wait(client.create_async(f"{self._events}/ev-", _json(data), sequence=True))
            stat = self._wait(client.exists_async(self._events))
            if stat is not None and stat.numChildren > _EVENTS_KEPT + _TRIM_SLACK:
                self._trim_events(client)

    def _trim_events(self, client: Any) -> None:
        names = sorted(self._wait(client.get_children_async(self._events)), key=_seq)
        for name in names[:-_EVENTS_KEPT]:
            # Another controller may have trimmed it first.
            with suppress(NoNodeError):
                self._wait(client.delete_async(f"{self._events}/{name}"))

    def events(self, limit: int = 50) -> list[Event]:
        if limit <= 0:
            return []
        with self._errors("events"):
            client = self._client()
            names = sorted(self._wait(client.get_children_async(self._events)), key=_seq)
            pending = [client.get_async(f"{self._events}/{n}") for n in names[-limit:]]
            events = []
            for result in pending:
                try:
                    data, stat = self._wait(result)
                except NoNodeError:  # trimmed meanwhile
                    continue
                fields = json.loads(data)
                events.append(
                    Event(
                        controller=fields["controller"],
                        epoch=int(fields["epoch"]),
                        action=fields["action"],
                        node=fields["node"],
                        result=fields["result"],
                        time=_ms_to_utc(stat.ctime),
                    )
                )
            return events

    def clear(self) -> None:
        with self._errors("clear"):
            client = self._client()
            # One transaction, so no winner can slip in between deleting the lock
            # znodes and resetting the record it would then write to.
            for _ in range(_CAS_TRIES):
                children = self._wait(client.get_children_async(self._lock))
                tx = client.transaction()
                for name in children:
                    tx.delete(f"{self._lock}/{name}")
                tx.set_data(self._record, _json(_EMPTY_RECORD))
                tx.set_data(self._requests, _json(_EMPTY_REQUESTS))
                tx.set_data(self._poll, b"")
                results = self._wait(tx.commit_async())
                if not any(isinstance(r, NoNodeError) for r in results[: len(children)]):
                    self._check_results("clear", results)
                    self._forget_node()
                    return
            raise MetastoreError(f"zookeeper {self._hosts}: clear: too many concurrent changes")

    def close(self) -> None:
        self._stop_session()
