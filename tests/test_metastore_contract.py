"""The metastore contract: every backend passes the same tests.

The contract lives in `_Contract`; `TestMySQL` and `TestZooKeeper` supply a
`config` for a real server and the one thing that differs, how a holder loses its
lease without cooperating. `TestMemory` runs the same contract on the in-memory
backend (ha_toolkit/metastore/memory.py), whose clients share one process: its
contenders are threads instead of processes. Each backend is a class of its own
rather than a parameter because tests/conftest.py tells integration from unit tests
by the fixtures a test names (the real servers' fixtures make TestMySQL and
TestZooKeeper integration tests; TestMemory names none, so it is a unit test), and
a parametrized fixture reaching its server through `request.getfixturevalue` would
hide that (naming both servers would start both for every test).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, TypeVar

import pytest
from kazoo.client import KazooClient

from ha_toolkit.config import MetastoreConfig
from ha_toolkit.metastore import (
    Event,
    Lease,
    LeaseLost,
    Metastore,
    MetastoreError,
    open_metastore,
)
from ha_toolkit.metastore.memory import MemoryMetastore, MemoryServer
from tests.harness.mariadb import MariaDBServer
from tests.harness.procs import free_port
from tests.harness.zookeeper import ZooKeeperCluster

REPO = Path(__file__).resolve().parent.parent
StoreFactory = Callable[[], Metastore]
T = TypeVar("T")

LONG_TTL = 30.0  # outlives any test step
WAIT = 15.0  # bound on waiting for an expiry the test caused
SECRET = "pw-that-must-not-leak-7d1f"

# A contender in its own process: reads its spec from stdin, says "ready", acquires on
# "go", reports the lease, then holds it (its session open) until stdin closes.
CONTENDER = """
import json, sys
from ha_toolkit.config import MetastoreConfig
from ha_toolkit.metastore import open_metastore

spec = json.loads(sys.stdin.readline())
name, ttl = spec.pop("name"), spec.pop("ttl")
spec["hosts"] = tuple(spec["hosts"])
store = open_metastore(MetastoreConfig(**spec))
print("ready", flush=True)
sys.stdin.readline()
lease = store.acquire(name, ttl)
print(json.dumps(lease and {"epoch": lease.epoch, "deadline": lease.deadline}), flush=True)
sys.stdin.read()
store.close()
"""


class _Contender:
    def __init__(self, config: MetastoreConfig, name: str, ttl: float, log: Path) -> None:
        spec = {
            "type": config.type,
            "dsn": config.dsn,
            "hosts": list(config.hosts),
            "prefix": config.prefix,
            "connect_timeout": config.connect_timeout,
            "name": name,
            "ttl": ttl,
        }
        self.name = name
        self.log = log
        with log.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", CONTENDER],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO)},
            )
        self._send(json.dumps(spec))

    @property
    def _stdin(self) -> IO[str]:
        assert self.proc.stdin is not None
        return self.proc.stdin

    def _send(self, line: str) -> None:
        self._stdin.write(line + "\n")
        self._stdin.flush()

    def _receive(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"contender {self.name} died: {self.log.read_text()[-2000:]}"
        return line

    def wait_ready(self) -> None:
        assert self._receive().strip() == "ready"

    def go(self) -> None:
        self._send("go")

    def result(self) -> dict[str, Any] | None:
        result: dict[str, Any] | None = json.loads(self._receive())
        return result

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self._stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc.stdout:
            self.proc.stdout.close()


class _ThreadContender:
    """The same part as `_Contender`, played by a thread on a client of an in-memory
    server (which cannot be shared between processes)."""

    def __init__(self, store: Metastore, name: str, ttl: float) -> None:
        self.name = name
        self._store = store
        self._ttl = ttl
        self._result: dict[str, Any] | None = None
        self._thread = threading.Thread(target=self._acquire, name=name, daemon=True)

    def _acquire(self) -> None:
        lease = self._store.acquire(self.name, self._ttl)
        self._result = lease and {"epoch": lease.epoch, "deadline": lease.deadline}

    def wait_ready(self) -> None:
        pass

    def go(self) -> None:
        self._thread.start()

    def result(self) -> dict[str, Any] | None:
        self._thread.join(10)
        assert not self._thread.is_alive(), f"contender {self.name} did not finish"
        return self._result

    def kill(self) -> None:
        pass  # it never renews: as good as dead

    def close(self) -> None:
        pass


def _acquire_within(store: Metastore, controller: str, ttl: float, bound: float) -> Lease:
    """Poll acquire() until it wins; MetastoreError counts as not yet."""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        try:
            lease = store.acquire(controller, ttl)
        except MetastoreError:
            lease = None
        if lease is not None:
            return lease
        time.sleep(0.1)
    raise AssertionError(f"{controller} did not get the lease within {bound} s")


def _settled(call: Callable[[], T], bound: float = WAIT) -> T:
    """The result of `call` once the store answers (a reconnecting store may raise
    MetastoreError for a while); LeaseLost is an answer and propagates."""
    deadline = time.monotonic() + bound
    while True:
        try:
            return call()
        except LeaseLost:
            raise
        except MetastoreError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _refused(call: Callable[[], object]) -> None:
    """`call` never lands and is eventually refused with LeaseLost."""
    with pytest.raises(LeaseLost):
        _settled(call)


def _near_now(when: datetime | None) -> bool:
    return when is not None and abs(when - datetime.now(UTC)) < timedelta(seconds=30)


class _Contract:
    """What every backend guarantees. Subclasses provide `config` and `lose_lease`."""

    short_ttl: float  # seconds; a lease meant to lapse during the test

    def unreachable_config(self) -> MetastoreConfig:
        raise NotImplementedError

    def open_unreachable(self) -> Metastore:
        """A store whose server does not answer."""
        return open_metastore(self.unreachable_config())

    def lose_lease(self, store: Metastore) -> None:
        """Make `store`'s lease end without its cooperation (it stops renewing)."""
        raise NotImplementedError

    def contender(
        self, config: MetastoreConfig, store_factory: StoreFactory, name: str, ttl: float, log: Path
    ) -> _Contender | _ThreadContender:
        """A contender for the lease in a process of its own."""
        return _Contender(config, name, ttl, log)

    @pytest.fixture
    def store_factory(self, config: MetastoreConfig) -> Iterator[StoreFactory]:
        made: list[Metastore] = []

        def make() -> Metastore:
            store = open_metastore(config)
            made.append(store)
            return store

        yield make
        for store in made:
            store.close()

    def test_exactly_one_of_three_processes_wins_a_race(
        self, store_factory: StoreFactory, config: MetastoreConfig, tmp_path: Path
    ) -> None:
        observer = store_factory()
        observer.setup()
        names = ["c1", "c2", "c3"]
        contenders = [
            self.contender(config, store_factory, n, LONG_TTL, tmp_path / f"{n}.log") for n in names
        ]
        try:
            for contender in contenders:
                contender.wait_ready()
            for contender in contenders:
                contender.go()
            results = {c.name: c.result() for c in contenders}
            winners = {name: r for name, r in results.items() if r is not None}
            assert len(winners) == 1, results
            ((winner, won),) = winners.items()
            record = observer.read()
            assert (record.holder, record.epoch) == (winner, won["epoch"])
            assert observer.acquire("c4", LONG_TTL) is None
        finally:
            for contender in contenders:
                contender.close()

    def test_renew_keeps_the_lease_and_release_hands_it_over(
        self, store_factory: StoreFactory
    ) -> None:
        holder, other = store_factory(), store_factory()
        holder.setup()
        lease = holder.acquire("c1", self.short_ttl)
        assert lease is not None and lease.holder == "c1"
        assert 0 < lease.ttl <= self.short_ttl
        again = holder.acquire("c1", self.short_ttl)
        assert again is not None and again.epoch == lease.epoch
        # Keep renewing well past the first TTL: the lease must stay ours.
        until = lease.deadline + 0.5
        while time.monotonic() < until:
            renewed = holder.renew(lease)
            assert (renewed.holder, renewed.epoch) == (lease.holder, lease.epoch)
            assert renewed.sent_at >= lease.sent_at and 0 < renewed.ttl <= self.short_ttl
            lease = renewed
            assert other.acquire("c2", self.short_ttl) is None
            time.sleep(0.25)
        record = other.read()
        assert (record.holder, record.epoch) == ("c1", lease.epoch)
        holder.release(lease)
        holder.release(lease)  # releasing a lease no longer held is harmless
        taken = other.acquire("c2", self.short_ttl)
        assert taken is not None and taken.epoch > lease.epoch
        with pytest.raises(LeaseLost):
            holder.write_placement(lease, "m1")

    def test_killed_holder_is_succeeded_after_its_deadline_with_a_larger_epoch(
        self, store_factory: StoreFactory, config: MetastoreConfig, tmp_path: Path
    ) -> None:
        successor = store_factory()
        successor.setup()
        holder = self.contender(config, store_factory, "c1", self.short_ttl, tmp_path / "c1.log")
        try:
            holder.wait_ready()
            holder.go()
            old = holder.result()
            assert old is not None
            holder.kill()
            lease = _acquire_within(successor, "c2", self.short_ttl, WAIT)
            # No two holders trust a lease at once: the successor only got it after
            # the dead holder's own deadline (CLOCK_MONOTONIC is system-wide).
            assert time.monotonic() >= old["deadline"]
            assert lease.epoch > old["epoch"]
        finally:
            holder.close()

    def test_stale_lease_is_fenced_after_takeover(self, store_factory: StoreFactory) -> None:
        old, new = store_factory(), store_factory()
        old.setup()
        stale = old.acquire("c1", self.short_ttl)
        assert stale is not None
        old.write_placement(stale, "m1", ("m3",))
        self.lose_lease(old)
        lease = _acquire_within(new, "c2", self.short_ttl, WAIT)
        assert lease.epoch > stale.epoch
        new.write_placement(lease, "m2")
        # Renewing stays possible while we check the stale side.
        lease = new.renew(lease)

        _refused(lambda: old.write_placement(stale, "m1", ("m2",)))
        _refused(lambda: old.finish_poll(stale, clear_failover=True))
        _refused(lambda: old.renew(stale))
        assert _settled(lambda: old.acquire("c1", self.short_ttl)) is None

        record = new.read()
        assert (record.holder, record.epoch) == ("c2", lease.epoch)
        assert (record.scheduler_node, record.placement_epoch) == ("m2", lease.epoch)
        assert record.failed_nodes == ()
        assert record.last_poll is None

    def test_lapsed_holder_gets_a_new_epoch(self, store_factory: StoreFactory) -> None:
        store = store_factory()
        store.setup()
        lease = store.acquire("c1", self.short_ttl)
        assert lease is not None
        self.lose_lease(store)
        deadline = time.monotonic() + WAIT
        while _settled(store.read).holder is not None:
            assert time.monotonic() < deadline, "the lease never lapsed"
            time.sleep(0.1)
        _refused(lambda: store.renew(lease))
        again = _settled(lambda: store.acquire("c1", self.short_ttl))
        assert again is not None and again.epoch > lease.epoch

    def test_record_round_trips_and_setup_is_idempotent(self, store_factory: StoreFactory) -> None:
        active, standby = store_factory(), store_factory()
        active.setup()
        active.setup()
        empty = standby.read()
        assert (empty.holder, empty.scheduler_node, empty.last_poll) == (None, None, None)
        assert (empty.paused, empty.failover_to, empty.failed_nodes) == (False, None, ())

        lease = active.acquire("c1", LONG_TTL)
        assert lease is not None
        active.write_placement(lease, "m2", ("m1", "m3"))
        active.write_placement(lease, "m2", ("m1", "m3"))  # an unchanged write still lands
        standby.set_paused(True)
        standby.request_failover("m3")
        active.heartbeat("c1")
        standby.heartbeat("c2")
        standby.setup()  # changes nothing on a set-up metastore
        record = standby.read()
        assert (record.holder, record.epoch) == ("c1", lease.epoch)
        assert record.lease_remaining is None or 0 < record.lease_remaining <= LONG_TTL
        assert (record.scheduler_node, record.placement_epoch) == ("m2", lease.epoch)
        assert record.failed_nodes == ("m1", "m3")
        assert (record.paused, record.failover_to) == (True, "m3")
        assert record.standbys == ("c2",)
        assert record.live_standbys == ("c2",)  # heard from just now
        assert record.last_poll is None

        active.finish_poll(lease)
        assert _near_now(standby.read().last_poll)
        assert standby.read().failover_to == "m3"
        active.finish_poll(lease, clear_failover=True)
        standby.set_paused(False)
        record = standby.read()
        assert (record.paused, record.failover_to) == (False, None)
        # No target: "to the next master", which the record shows as "".
        standby.request_failover(None)
        assert standby.read().failover_to == ""
        active.write_placement(lease, None)
        record = active.read()
        assert (record.scheduler_node, record.failed_nodes) == (None, ())

    def test_a_confirming_read_records_the_metastores_time_before_it_reads(
        self, store_factory: StoreFactory
    ) -> None:
        m1, m2, operator = store_factory(), store_factory(), store_factory()
        m1.setup()
        assert operator.read().confirmations == {}
        # The metastore runs on this host: its clock is the one datetime.now() reads.
        sent = datetime.now(UTC)
        first = m1.read(confirm_as="m1")
        assert first.server_time is not None and _near_now(first.server_time)
        confirmed = first.confirmations["m1"]
        # Never earlier than the call was sent (the node counts its right from there),
        # and recorded before the read was served: not after the read's server time
        # (zookeeper's mtime is in whole ms, the confirmation its next ms).
        assert sent <= confirmed <= first.server_time + timedelta(milliseconds=1)
        again = m1.read(confirm_as="m1")
        assert again.confirmations["m1"] >= confirmed
        # Every reader sees it, on the clock of its own server_time; a read without
        # confirm_as records nothing.
        seen = m2.read(confirm_as="m2")
        assert seen.confirmations["m1"] == again.confirmations["m1"]
        assert seen.server_time is not None
        assert seen.server_time + timedelta(milliseconds=1) >= seen.confirmations["m1"]
        assert set(seen.confirmations) == {"m1", "m2"}
        assert set(operator.read().confirmations) == {"m1", "m2"}
        # Kept by clear(), as heartbeats are: forgetting one would only make the ACTIVE
        # fall back to its own clock, but a cleared record says nothing about the nodes.
        operator.clear()
        assert set(operator.read().confirmations) == {"m1", "m2"}

    def test_event_log_keeps_order_and_limit(self, store_factory: StoreFactory) -> None:
        writer, reader = store_factory(), store_factory()
        writer.setup()
        assert reader.events() == []
        logged = [
            Event(f"c{i}", i, "start" if i % 2 else "stop", f"m{i}" if i % 2 else None, "ok")
            for i in range(5)
        ]
        for event in logged:
            writer.append_event(event)
        assert reader.events() == logged
        assert reader.events(3) == logged[2:]
        assert reader.events(1) == logged[4:]
        times = [e.time for e in reader.events()]
        assert all(_near_now(t) for t in times)
        assert times == sorted(times)  # type: ignore[type-var]

    def test_clear_resets_state_but_never_the_epoch(self, store_factory: StoreFactory) -> None:
        active, operator = store_factory(), store_factory()
        active.setup()
        lease = active.acquire("c1", LONG_TTL)
        assert lease is not None
        active.write_placement(lease, "m1", ("m2",))
        active.finish_poll(lease)
        operator.set_paused(True)
        operator.request_failover("m2")
        event = Event("c1", lease.epoch, "start", "m1", "ok")
        active.append_event(event)

        operator.clear()
        record = operator.read()
        assert (record.holder, record.scheduler_node, record.placement_epoch) == (None, None, 0)
        assert (record.failed_nodes, record.paused, record.failover_to) == ((), False, None)
        assert record.last_poll is None
        assert record.epoch >= lease.epoch
        assert operator.events() == [event]

        _refused(lambda: active.write_placement(lease, "m1"))
        _refused(lambda: active.renew(lease))
        operator.setup()
        taken = operator.acquire("c2", LONG_TTL)
        assert taken is not None and taken.epoch > lease.epoch
        assert operator.read().epoch == taken.epoch

    def test_unreachable_metastore_fails_fast_without_leaking_the_password(self) -> None:
        config = self.unreachable_config()
        calls: list[Callable[[Metastore], object]] = [
            lambda store: store.setup(),
            lambda store: store.acquire("c1", LONG_TTL),
            lambda store: store.read(),
        ]
        for call in calls:
            started = time.monotonic()
            with pytest.raises(MetastoreError) as caught:
                store = self.open_unreachable()
                try:
                    call(store)
                finally:
                    store.close()
            assert time.monotonic() - started < config.connect_timeout + 2
            assert SECRET not in str(caught.value)
            assert SECRET not in repr(caught.value)


class TestMySQL(_Contract):
    short_ttl = 1.5

    @pytest.fixture
    def config(self, mariadb: MariaDBServer) -> MetastoreConfig:
        return MetastoreConfig(
            type="mysql", dsn=mariadb.dsn, prefix="contract", connect_timeout=2.0
        )

    def unreachable_config(self) -> MetastoreConfig:
        port = free_port()
        return MetastoreConfig(
            type="mysql",
            dsn=f"mysql://ha_toolkit:{SECRET}@127.0.0.1:{port}/ha_toolkit",
            connect_timeout=1.0,
        )

    def lose_lease(self, store: Metastore) -> None:
        pass  # not renewing is enough: the server's clock ends the lease

    def test_connection_failures_are_reported_then_recovered(
        self, mariadb: MariaDBServer, config: MetastoreConfig, store_factory: StoreFactory
    ) -> None:
        intruder = open_metastore(replace(config, password=SECRET))
        try:
            with pytest.raises(MetastoreError) as caught:
                intruder.read()
        finally:
            intruder.close()
        assert "Access denied" in str(caught.value)
        assert SECRET not in str(caught.value)

        store = store_factory()
        store.setup()
        lease = store.acquire("c1", LONG_TTL)
        assert lease is not None
        mariadb.stop()
        started = time.monotonic()
        with pytest.raises(MetastoreError):
            store.renew(lease)
        assert time.monotonic() - started < 2.0 + 2
        mariadb.start()
        lease = store.renew(lease)  # the same instance reconnects
        mariadb.restart()
        renewed = store.renew(lease)
        assert renewed.epoch == lease.epoch
        store.write_placement(renewed, "m1")
        assert store.read().scheduler_node == "m1"

    def test_a_confirming_read_creates_a_missing_confirmations_table(
        self, store_factory: StoreFactory
    ) -> None:
        store = store_factory()
        store.setup()
        # A metastore set up by a version before confirmations, `init` not run since.
        store._run("drop", "DROP TABLE `{p}_confirmations`")  # type: ignore[attr-defined]
        with pytest.raises(MetastoreError):
            store.read()
        assert "m1" in store.read(confirm_as="m1").confirmations


class TestZooKeeper(_Contract):
    short_ttl = 2.0  # sessions this short are granted by the harness (minSessionTimeout 1 s)

    @pytest.fixture
    def config(self, zookeeper: ZooKeeperCluster) -> MetastoreConfig:
        return MetastoreConfig(
            type="zookeeper", hosts=(zookeeper.hosts,), prefix="contract", connect_timeout=2.0
        )

    def unreachable_config(self) -> MetastoreConfig:
        return MetastoreConfig(
            type="zookeeper",
            hosts=(f"127.0.0.1:{free_port()}",),
            user="ha_toolkit",
            password=SECRET,
            connect_timeout=0.5,
        )

    def test_a_server_that_never_answers_costs_one_timeout(self) -> None:
        """A listener that accepts and never answers holds kazoo's connection thread for
        the session timeout (10 s here); the call still ends by its own deadline."""
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen()
            config = MetastoreConfig(
                type="zookeeper",
                hosts=(f"127.0.0.1:{silent.getsockname()[1]}",),
                connect_timeout=0.5,
            )
            store = open_metastore(config)
            started = time.monotonic()
            with pytest.raises(MetastoreError, match=r"no session within 0\.5 s"):
                store.read()
            store.close()
            assert time.monotonic() - started < config.connect_timeout + 2

    def lose_lease(self, store: Metastore) -> None:
        # The standard way to expire a ZooKeeper session: attach a second client to
        # it and close that one; the store's own client then learns it was expired.
        client_id = store._session.client.client_id  # type: ignore[attr-defined]
        hosts = store._hosts  # type: ignore[attr-defined]
        thief = KazooClient(hosts=hosts, client_id=client_id, timeout=self.short_ttl)
        thief.start(timeout=5)
        thief.stop()
        thief.close()

    def test_lease_never_outlasts_the_granted_session(self, store_factory: StoreFactory) -> None:
        store = store_factory()
        store.setup()
        lease = store.acquire("c1", 60.0)
        # The harness servers grant at most 30 s (maxSessionTimeout).
        assert lease is not None and lease.ttl == 30.0
        assert store.renew(lease).ttl == 30.0

    def test_contenders_keep_one_znode_each(
        self, store_factory: StoreFactory, zookeeper: ZooKeeperCluster
    ) -> None:
        stores = [store_factory() for _ in range(3)]
        stores[0].setup()
        for _ in range(4):
            assert [s.acquire(f"c{i}", LONG_TTL) is not None for i, s in enumerate(stores)] == [
                True,
                False,
                False,
            ]
        client = KazooClient(hosts=zookeeper.hosts)
        client.start(timeout=5)
        try:
            assert len(client.get_children("/contract/lock")) == 3
        finally:
            client.stop()
            client.close()

    def test_lease_survives_the_loss_of_the_zookeeper_leader(
        self, zookeeper_ensemble: ZooKeeperCluster
    ) -> None:
        config = MetastoreConfig(
            type="zookeeper", hosts=(zookeeper_ensemble.hosts,), connect_timeout=2.0
        )
        store = open_metastore(config)
        try:
            store.setup()
            lease = store.acquire("c1", 10.0)
            assert lease is not None
            store.read(confirm_as="m9")
            leader = zookeeper_ensemble.members.index(zookeeper_ensemble.leader())
            zookeeper_ensemble.kill_member(leader)
            # While the ensemble elects a new leader the store may be unreachable,
            # but its session, and so the lease, must come through.
            renewed = _settled(lambda: store.renew(lease), bound=lease.remaining())
            assert renewed.epoch == lease.epoch
            store.write_placement(renewed, "m1")
            assert store.read().scheduler_node == "m1"
            # m9's confirmation carries the old leader's clock: left out of a record
            # whose server_time is the new leader's, shown by a read without one.
            record = store.read(confirm_as="m1")
            assert set(record.confirmations) == {"m1"}
            assert "m9" in store.read().confirmations
        finally:
            store.close()


class TestMemory(_Contract):
    short_ttl = 1.0  # long enough for a loaded machine between two calls of one test step

    @pytest.fixture
    def server(self) -> MemoryServer:
        return MemoryServer()

    @pytest.fixture
    def config(self) -> MetastoreConfig:
        return MetastoreConfig(type="memory", prefix="contract", connect_timeout=1.0)

    @pytest.fixture
    def store_factory(self, server: MemoryServer) -> Iterator[StoreFactory]:
        made: list[Metastore] = []

        def make() -> Metastore:
            store = server.connect()
            made.append(store)
            return store

        yield make
        for store in made:
            store.close()

    def unreachable_config(self) -> MetastoreConfig:
        return MetastoreConfig(type="memory", password=SECRET, connect_timeout=0.1)

    def open_unreachable(self) -> Metastore:
        server = MemoryServer()
        server.connect().setup()
        server.reachable = False
        return server.connect()

    def lose_lease(self, store: Metastore) -> None:
        pass  # not renewing is enough: the server's clock ends the lease

    def contender(
        self, config: MetastoreConfig, store_factory: StoreFactory, name: str, ttl: float, log: Path
    ) -> _Contender | _ThreadContender:
        return _ThreadContender(store_factory(), name, ttl)

    def test_one_client_cut_off_while_the_others_reach_the_server(
        self, store_factory: StoreFactory
    ) -> None:
        cut, other = store_factory(), store_factory()
        cut.setup()
        assert isinstance(cut, MemoryMetastore)
        cut.reachable = False
        with pytest.raises(MetastoreError, match="unreachable"):
            cut.read()
        assert other.read().holder is None
        cut.reachable = True
        assert cut.read().holder is None
