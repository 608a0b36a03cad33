"""MariaDB/MySQL backend: the lease is one row, guarded by conditional UPDATEs.

Every expiry decision is made by the database server's clock (``UTC_TIMESTAMP(6)``
inside the statement that decides), never by a controller's clock, so controllers
need no clock synchronisation. Every lease-guarded write is a single statement
whose WHERE clause re-checks holder, epoch and expiry on the lease row: InnoDB
locks that row for the statement, so a takeover cannot slip between check and write.

Tables (``{prefix}_*``): ``lease`` and ``record`` (one seeded row each),
``controllers`` (heartbeats), ``confirmations`` (per node, the server's time when its
controller last began a confirming read) and ``events`` (append-only).

``request_failover(None)`` ("to the next master") is stored and read back as
``failover_to == ""``: the record has no other way to say "pending, any target".
"""

from __future__ import annotations

import contextlib
import json
import re
import select
import ssl
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import pymysql
from pymysql.constants import CLIENT

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
# A controller counts as a standby while its heartbeat is younger than this many
# lease TTLs (and never less than _STANDBY_MIN_WINDOW s), so one slow poll does not
# make it flicker out of `status`.
_STANDBY_TTLS = 3
_STANDBY_MIN_WINDOW = 60.0
_PREFIX_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,40}")
# Server errors that mean "not with these credentials": access denied to the database
# (1044), wrong user or password (1045), a command on our tables denied (1142), and
# a user that may not log in with a password (1698).
_ACCESS_DENIED = frozenset({1044, 1045, 1142, 1698})
_NO_SUCH_TABLE = 1146


def is_access_denied(exc: BaseException) -> bool:
    """Whether a pymysql error is the server refusing our credentials or rights."""
    return (
        isinstance(exc, pymysql.MySQLError)
        and bool(exc.args)
        and isinstance(exc.args[0], int)
        and exc.args[0] in _ACCESS_DENIED
    )


_CONFIRMATIONS_TABLE = """CREATE TABLE IF NOT EXISTS `{p}_confirmations` (
        node VARCHAR(255) NOT NULL PRIMARY KEY,
        confirmed_at DATETIME(6) NOT NULL
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS `{p}_lease` (
        id TINYINT UNSIGNED NOT NULL PRIMARY KEY,
        holder VARCHAR(255) NULL,
        epoch BIGINT UNSIGNED NOT NULL DEFAULT 0,
        expires_at DATETIME(6) NULL,
        ttl DOUBLE NULL
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    "INSERT IGNORE INTO `{p}_lease` (id, epoch) VALUES (1, 0)",
    """CREATE TABLE IF NOT EXISTS `{p}_record` (
        id TINYINT UNSIGNED NOT NULL PRIMARY KEY,
        scheduler_node VARCHAR(255) NULL,
        placement_epoch BIGINT UNSIGNED NOT NULL DEFAULT 0,
        failed_nodes TEXT NULL,
        paused BOOLEAN NOT NULL DEFAULT FALSE,
        failover_to VARCHAR(255) NULL,
        last_poll DATETIME(6) NULL
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    "INSERT IGNORE INTO `{p}_record` (id) VALUES (1)",
    """CREATE TABLE IF NOT EXISTS `{p}_controllers` (
        name VARCHAR(255) NOT NULL PRIMARY KEY,
        last_seen DATETIME(6) NOT NULL
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    _CONFIRMATIONS_TABLE,
    """CREATE TABLE IF NOT EXISTS `{p}_events` (
        id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
        time DATETIME(6) NOT NULL,
        controller VARCHAR(255) NOT NULL,
        epoch BIGINT UNSIGNED NOT NULL,
        action VARCHAR(255) NOT NULL,
        node VARCHAR(255) NULL,
        result TEXT NOT NULL
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
)

# The epoch assignment comes first: MariaDB evaluates SET left to right, so it
# must read the old holder and expiry before they are overwritten. A lease that
# had expired gets a new epoch even when we were its holder: a previous
# incarnation of us may still have writes in flight under the old one.
_ACQUIRE = """
UPDATE `{p}_lease` SET
    epoch = IF(holder <=> %(me)s AND expires_at > UTC_TIMESTAMP(6), epoch, epoch + 1),
    holder = %(me)s,
    expires_at = UTC_TIMESTAMP(6) + INTERVAL %(us)s MICROSECOND,
    ttl = %(ttl)s
WHERE id = 1
    AND (holder IS NULL OR holder = %(me)s
         OR expires_at IS NULL OR expires_at <= UTC_TIMESTAMP(6))
"""

_RENEW = """
UPDATE `{p}_lease` SET
    expires_at = UTC_TIMESTAMP(6) + INTERVAL %(us)s MICROSECOND,
    ttl = %(ttl)s
WHERE id = 1 AND holder = %(me)s AND epoch = %(epoch)s AND expires_at > UTC_TIMESTAMP(6)
"""

# Fenced writes join the lease row so the check and the write are one statement.
_FENCE = (
    "l.id = 1 AND l.holder = %(me)s AND l.epoch = %(epoch)s AND l.expires_at > UTC_TIMESTAMP(6)"
)

_WRITE_PLACEMENT = f"""
UPDATE `{{p}}_record` r JOIN `{{p}}_lease` l ON l.id = 1 SET
    r.scheduler_node = %(node)s,
    r.placement_epoch = %(epoch)s,
    r.failed_nodes = %(failed)s
WHERE r.id = 1 AND {_FENCE}
"""

_FINISH_POLL = f"""
UPDATE `{{p}}_record` r JOIN `{{p}}_lease` l ON l.id = 1 SET
    r.last_poll = UTC_TIMESTAMP(6),
    r.failover_to = IF(%(clear)s, NULL, r.failover_to)
WHERE r.id = 1 AND {_FENCE}
"""

# The server's clock, its own statement committed (autocommit) before the read that
# follows: never earlier than when the caller sent it. GREATEST: a server clock set back
# must not make a node's confirmation look older than one already recorded.
_CONFIRM = """
INSERT INTO `{p}_confirmations` (node, confirmed_at) VALUES (%s, UTC_TIMESTAMP(6))
ON DUPLICATE KEY UPDATE confirmed_at = GREATEST(confirmed_at, UTC_TIMESTAMP(6))
"""

_READ = """
SELECT l.holder, l.epoch, l.expires_at > UTC_TIMESTAMP(6),
       TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), l.expires_at), l.ttl,
       r.scheduler_node, r.placement_epoch, r.failed_nodes, r.paused, r.failover_to,
       r.last_poll, UTC_TIMESTAMP(6)
FROM `{p}_lease` l JOIN `{p}_record` r ON r.id = 1
WHERE l.id = 1
"""

# The epoch stays: nodes refuse an epoch lower than one they have seen, so a reset
# must never let the counter start over.
_CLEAR = """
UPDATE `{p}_lease` l JOIN `{p}_record` r ON r.id = 1 SET
    l.holder = NULL, l.expires_at = NULL,
    r.scheduler_node = NULL, r.placement_epoch = 0, r.failed_nodes = NULL,
    r.paused = FALSE, r.failover_to = NULL, r.last_poll = NULL
WHERE l.id = 1
"""


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.replace(tzinfo=UTC)


def _closed_by_server(conn: pymysql.connections.Connection[Any]) -> bool:
    """Whether the server has hung up on (or written to) our idle connection.

    Between statements nothing may arrive, so a readable socket means EOF or an
    error packet: the server was restarted or dropped us. Finding that out here,
    for free, lets the call reconnect instead of failing on the dead socket.
    """
    sock = getattr(conn, "_sock", None)  # pymysql's socket; None once closed
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class MySQLMetastore(Metastore):
    """The lease and record in MariaDB/MySQL tables named ``{prefix}_*``.
    One connection, used by one thread at a time."""

    def __init__(self, config: MetastoreConfig) -> None:
        if not _PREFIX_RE.fullmatch(config.prefix):
            raise ValueError("metastore prefix must be letters, digits and _ (max 41)")
        if not config.dsn:
            raise ValueError("mysql metastore needs a dsn")
        parts = urlsplit(config.dsn)
        if parts.scheme not in ("mysql", "mariadb") or not parts.hostname:
            raise ValueError("mysql dsn must look like mysql://user@host:port/database")
        database = parts.path.lstrip("/")
        if not database:
            raise ValueError("mysql dsn names no database")
        self._prefix = config.prefix
        self._host = parts.hostname
        self._port = parts.port or 3306
        self._database = unquote(database)
        self._user = config.user or unquote(parts.username or "")
        if config.password is not None:
            self._password = config.password
        else:
            self._password = unquote(parts.password or "")
        self._timeout = config.connect_timeout
        self._credentials = credentials(replace(config, user=self._user))
        self._ssl: ssl.SSLContext | None = None
        if config.tls.enabled:
            self._ssl = ssl.create_default_context(cafile=config.tls.ca_file)
            if config.tls.cert_file:
                self._ssl.load_cert_chain(config.tls.cert_file, config.tls.key_file)
        self._conn: pymysql.connections.Connection[pymysql.cursors.Cursor] | None = None

    # -- connection -----------------------------------------------------------

    def _error(self, what: str, exc: BaseException) -> MetastoreError:
        detail = str(exc)
        if is_access_denied(exc) and len(exc.args) > 1:
            detail = str(exc.args[1])  # the server's words, without the error tuple
        if self._password:
            detail = detail.replace(self._password, "***")
        where = f"mysql {self._host}:{self._port}/{self._database}"
        if is_access_denied(exc):
            # One line naming who we are and where the password came from: "unreachable"
            # would send the operator to the network instead of the grant.
            return MetastoreAuthError(
                f"{where}: {what} failed: access denied for {self._credentials}: {detail}"
            )
        return MetastoreError(f"{where}: {what} failed: {detail}")

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            # Often already broken: all we want is the socket gone.
            with contextlib.suppress(Exception):
                conn.close()

    def _connect(self) -> pymysql.connections.Connection[pymysql.cursors.Cursor]:
        if self._conn is not None and _closed_by_server(self._conn):
            self._drop()
        if self._conn is None:
            lock_wait = max(1, int(self._timeout))
            try:
                self._conn = pymysql.connect(
                    host=self._host,
                    port=self._port,
                    user=self._user,
                    password=self._password,
                    database=self._database,
                    charset="utf8mb4",
                    autocommit=True,
                    client_flag=CLIENT.FOUND_ROWS,
                    connect_timeout=self._timeout,
                    read_timeout=self._timeout,
                    write_timeout=self._timeout,
                    ssl=self._ssl,
                    init_command=(
                        f"SET time_zone = '+00:00', innodb_lock_wait_timeout = {lock_wait}"
                    ),
                )
            except (pymysql.MySQLError, OSError) as exc:
                raise self._error("connect", exc) from exc
        return self._conn

    def _run(
        self, what: str, sql: str, args: Sequence[Any] | dict[str, Any] | None = None
    ) -> tuple[int, tuple[tuple[Any, ...], ...]]:
        """Execute one statement; (rows matched or returned, fetched rows)."""
        conn = self._connect()
        try:
            with conn.cursor() as cur:
                count = cur.execute(sql.format(p=self._prefix), args)
                rows = cur.fetchall()
        except (pymysql.OperationalError, pymysql.InterfaceError, OSError) as exc:
            # The connection is in an unknown state: reconnect on the next call.
            self._drop()
            raise self._error(what, exc) from exc
        except pymysql.MySQLError as exc:
            raise self._error(what, exc) from exc
        return count, rows

    # -- Metastore --------------------------------------------------------------

    def setup(self) -> None:
        for statement in _SCHEMA:
            self._run("setup", statement)

    def acquire(self, controller: str, ttl: float) -> Lease | None:
        self._connect()
        sent_at = time.monotonic()
        args = {"me": controller, "us": round(ttl * 1e6), "ttl": ttl}
        taken, _ = self._run("acquire", _ACQUIRE, args)
        if not taken:
            return None
        _, rows = self._run(
            "acquire", "SELECT epoch FROM `{p}_lease` WHERE id = 1 AND holder = %s", (controller,)
        )
        if not rows:  # lost again between the two statements (a TTL shorter than a round trip)
            return None
        return Lease(controller, int(rows[0][0]), sent_at, ttl)

    def renew(self, lease: Lease) -> Lease:
        self._connect()
        sent_at = time.monotonic()
        args = {
            "me": lease.holder,
            "epoch": lease.epoch,
            "us": round(lease.ttl * 1e6),
            "ttl": lease.ttl,
        }
        matched, _ = self._run("renew", _RENEW, args)
        if not matched:
            raise LeaseLost(f"lease epoch {lease.epoch} of {lease.holder} is no longer current")
        return Lease(lease.holder, lease.epoch, sent_at, lease.ttl)

    def release(self, lease: Lease) -> None:
        self._run(
            "release",
            "UPDATE `{p}_lease` SET holder = NULL, expires_at = NULL"
            " WHERE id = 1 AND holder = %s AND epoch = %s",
            (lease.holder, lease.epoch),
        )

    def _confirm(self, node: str) -> None:
        try:
            self._run("read", _CONFIRM, (node,))
        except MetastoreError as exc:
            cause = exc.__cause__
            if not (isinstance(cause, pymysql.MySQLError) and cause.args[:1] == (_NO_SUCH_TABLE,)):
                raise
            # Set up before confirmations existed and `init` not run since: create the
            # table (as init would) rather than have every node fence itself.
            self._run("read", _CONFIRMATIONS_TABLE)
            self._run("read", _CONFIRM, (node,))

    def read(self, confirm_as: str | None = None) -> ClusterRecord:
        if confirm_as is not None:
            self._confirm(confirm_as)
        _, rows = self._run("read", _READ)
        if not rows:
            raise MetastoreError("mysql metastore is not set up (no lease row)")
        (
            holder,
            epoch,
            valid,
            remaining_us,
            ttl,
            node,
            placement_epoch,
            failed,
            paused,
            failover_to,
            last_poll,
            server_time,
        ) = rows[0]
        if not valid:
            holder = None
        window = max(_STANDBY_MIN_WINDOW, _STANDBY_TTLS * (ttl or 0.0))
        # Each controller with whether it was heard from within one lease TTL (alive now).
        _, seen = self._run(
            "read",
            "SELECT name, last_seen > UTC_TIMESTAMP(6) - INTERVAL %s MICROSECOND"
            " FROM `{p}_controllers`"
            " WHERE last_seen > UTC_TIMESTAMP(6) - INTERVAL %s MICROSECOND ORDER BY name",
            (round((ttl or 0.0) * 1e6), round(window * 1e6)),
        )
        # Read after server_time: a confirmation recorded in between only looks younger.
        _, confirmed = self._run("read", "SELECT node, confirmed_at FROM `{p}_confirmations`")
        return ClusterRecord(
            holder=holder,
            epoch=int(epoch),
            lease_remaining=remaining_us / 1e6 if valid else None,
            scheduler_node=node,
            placement_epoch=int(placement_epoch),
            failed_nodes=tuple(json.loads(failed)) if failed else (),
            paused=bool(paused),
            failover_to=failover_to,
            standbys=tuple(name for name, _ in seen if name != holder),
            live_standbys=tuple(name for name, live in seen if live and name != holder),
            last_poll=_utc(last_poll),
            confirmations={node: when.replace(tzinfo=UTC) for node, when in confirmed},
            server_time=_utc(server_time),
        )

    def _fenced(self, what: str, lease: Lease, sql: str, args: dict[str, Any]) -> None:
        matched, _ = self._run(what, sql, {"me": lease.holder, "epoch": lease.epoch, **args})
        if not matched:
            raise LeaseLost(f"{what} refused: epoch {lease.epoch} is no longer current")

    def write_placement(
        self, lease: Lease, node: str | None, failed_nodes: tuple[str, ...] = ()
    ) -> None:
        failed = json.dumps(list(failed_nodes)) if failed_nodes else None
        self._fenced("write_placement", lease, _WRITE_PLACEMENT, {"node": node, "failed": failed})

    def finish_poll(self, lease: Lease, clear_failover: bool = False) -> None:
        self._fenced("finish_poll", lease, _FINISH_POLL, {"clear": clear_failover})

    def set_paused(self, paused: bool) -> None:
        self._run("set_paused", "UPDATE `{p}_record` SET paused = %s WHERE id = 1", (paused,))

    def request_failover(self, node: str | None) -> None:
        target = _ANY_NODE if node is None else node
        self._run(
            "request_failover", "UPDATE `{p}_record` SET failover_to = %s WHERE id = 1", (target,)
        )

    def heartbeat(self, controller: str) -> None:
        self._run(
            "heartbeat",
            "INSERT INTO `{p}_controllers` (name, last_seen) VALUES (%s, UTC_TIMESTAMP(6))"
            " ON DUPLICATE KEY UPDATE last_seen = UTC_TIMESTAMP(6)",
            (controller,),
        )

    def append_event(self, event: Event) -> None:
        self._run(
            "append_event",
            "INSERT INTO `{p}_events` (time, controller, epoch, action, node, result)"
            " VALUES (UTC_TIMESTAMP(6), %s, %s, %s, %s, %s)",
            (event.controller, event.epoch, event.action, event.node, event.result),
        )

    def events(self, limit: int = 50) -> list[Event]:
        _, rows = self._run(
            "events",
            "SELECT * FROM (SELECT id, time, controller, epoch, action, node, result"
            " FROM `{p}_events` ORDER BY id DESC LIMIT %s) newest ORDER BY id",
            (max(0, limit),),
        )
        return [
            Event(
                controller=controller,
                epoch=int(epoch),
                action=action,
                node=node,
                result=result,
                time=_utc(when),
            )
            for _, when, controller, epoch, action, node, result in rows
        ]

    def clear(self) -> None:
        self._run("clear", _CLEAR)

    def close(self) -> None:
        self._drop()
