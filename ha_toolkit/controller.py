"""The control loop: one :meth:`Controller.cycle` = read, fence, lease, observe, act.

Every controller, ACTIVE or STANDBY, runs the same cycle:

1. feed the systemd watchdog (a hung loop stops feeding it; systemd then kills
   the controller and, through BindsTo, its local scheduler);
2. note whether the local scheduler runs, then read the cluster record;
3. self-fence: stop the local scheduler if the record names another node, or
   if the record has not confirmed this node for ``fence_after`` seconds;
4. STANDBY: try to take the lease. ACTIVE: renew it, or step down at once;
5. ACTIVE and not paused: observe all masters in one playbook run, decide
   (decisions.py), act, each action bounded by what remains of the lease;
6. ACTIVE on the master that runs the healthy scheduler, with a live STANDBY on
   another master: release the lease at the end of the poll (anti-affinity), so
   that losing one host never costs a takeover and a move at once.

Guarantees and assumptions are in docs/design.md.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from ha_toolkit.alerts import Alerter, IncidentTracker
from ha_toolkit.config import Config, move_wait
from ha_toolkit.decisions import Decider, Plan
from ha_toolkit.local import sd_notify, watchdog_interval
from ha_toolkit.metastore import (
    ClusterRecord,
    Event,
    Lease,
    LeaseLost,
    Metastore,
    MetastoreAuthError,
    MetastoreError,
)
from ha_toolkit.metrics import Metrics
from ha_toolkit.models import NodeStatus

log = logging.getLogger("ha_toolkit.controller")


class Nodes(Protocol):
    """The masters' schedulers, observed and acted on in one run (nodes.SchedulerNodes)."""

    @property
    def masters(self) -> Sequence[str]:
        """The masters in failover order."""
        ...

    def run(
        self,
        actions: dict[str, str],
        epoch: int,
        timeout: float | None = None,
        hosts: list[str] | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> dict[str, NodeStatus]:
        """Act on the named hosts (status on the others); report every targeted host."""
        ...


class LocalService(Protocol):
    """The managed unit on this controller's own node (local.LocalScheduler)."""

    def running(self) -> bool:
        """Whether the unit is in a state that may run scheduler code."""
        ...

    def fence(self, reason: str, keepalive: Callable[[], None] | None = None) -> bool:
        """Stop the unit now; True once it is confirmed stopped."""
        ...


# Stop acting this long before the lease's local deadline: covers the time one
# metastore round trip or node action may overrun its own timeout.
LEASE_MARGIN = 1.0
# After handing the lease over (anti-affinity), do not hand it over again for this
# many lease TTLs: a handover nobody took (the STANDBY died within its last TTL)
# then costs at most one short gap without an ACTIVE per period, never a flap.
HANDOVER_BACKOFF_TTLS = 3


class SteppedDown(Exception):
    """Leadership was lost in the middle of a cycle."""


@dataclass
class Leadership:
    lease: Lease
    decider: Decider


# How soon after a cycle a deferred start may wake the loop at the earliest (seconds).
DUE_STEP = 0.01


class Controller:
    def __init__(
        self,
        config: Config,
        store: Metastore,
        nodes: Nodes,
        local: LocalService,
        alerter: Alerter | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.me = config.node_name
        # The lease holder is this process, not just this node: a restarted or
        # second controller on the same node must not inherit a live lease.
        self.identity = f"{config.node_name}#{secrets.token_hex(4)}"
        self.t = config.timings
        self.store = store
        self.nodes = nodes
        self.local = local
        self.alerter = alerter or Alerter(config.alerts)
        self.metrics = metrics or Metrics(None)
        self.clock = clock
        self.incidents = IncidentTracker(
            config.alerts.after_failed_polls, config.alerts.recovery_after
        )
        self.leader: Leadership | None = None
        self.confirmed_at: float | None = None  # last read naming this node (send time)
        self.read_sent: float | None = None  # send time of the last successful read
        self.local_seen_running = False  # the local scheduler, at the last look
        self.unreachable_count = 0  # consecutive failed metastore reads
        self.unreachable_refused = False  # the last of them: credentials refused
        self.acquire_after: float | None = None  # see _defer_acquire
        self.handed_over_at: float | None = None  # see _hand_over
        self.start_due_at: float | None = None  # a deferred move's start: see next_wakeup
        # Masters the last observation did not reach: skipped when a deferred start is due.
        self.unreached: set[str] = set()
        self.move_wait = move_wait(self.t)
        self.stopping = threading.Event()
        self.watchdog = watchdog_interval()
        # A node fences itself once its placement is unconfirmed for this long. With a
        # watchdog, the loop stops feeding it at the same moment, so a loop that hangs
        # instead of fencing is killed (its scheduler with it) by fence_after.
        self.fence_window = self.t.fence_after - (self.watchdog or 0.0)

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> None:
        log.info(
            "controller %s starting (poll %.1f s, lease %.1f s, fence after %.1f s)",
            self.me,
            self.t.poll_interval,
            self.t.lease_ttl,
            self.t.fence_after,
        )
        sd_notify("READY=1")
        try:
            while not self.stopping.is_set():
                started = self.clock()
                self.cycle()
                wake = self.next_wakeup(started)
                # Between cycles, keep feeding the watchdog (ping_watchdog decides
                # whether this node may still be fed).
                while not self.stopping.is_set() and (left := wake - self.clock()) > 0:
                    self.stopping.wait(min(left, self.watchdog / 3) if self.watchdog else left)
                    self.ping_watchdog()
        finally:
            self.shutdown()

    def stop(self) -> None:
        self.stopping.set()

    def next_wakeup(self, cycle_started: float) -> float:
        wake = cycle_started + self.t.poll_interval
        if self.confirmed_at is not None and self.local.running():
            # Wake exactly when this node's right to run the scheduler lapses.
            wake = min(wake, self.confirmed_at + self.fence_window)
        due = self.start_due_at
        if self.leader is not None and due is not None:
            # A move waits out move_wait: poll again when it ends, not up to a poll later
            # (the next cycle re-reads the record and re-observes before it starts). A
            # wait so short that it rounds to nothing still lets the clock move on first.
            wake = min(wake, max(due, cycle_started + DUE_STEP))
        return wake

    def shutdown(self) -> None:
        sd_notify("STOPPING=1")
        if self.leader is not None:
            try:
                self._metastore().release(self.leader.lease)
                log.info("released the lease (epoch %d) on shutdown", self.leader.lease.epoch)
            except MetastoreError as exc:
                log.warning("could not release the lease on shutdown: %s", exc)
            self.leader = None
        self.store.close()
        self.metrics.close()

    def ping_watchdog(self) -> None:
        """Feed systemd's watchdog, except while this node runs a scheduler whose
        placement has gone unconfirmed for longer than the fence window
        (fence_after - watchdog): a healthy loop fences itself at that moment; one
        that hangs instead is killed by systemd, and the scheduler with it through
        BindsTo, no later than fence_after after the last confirmation."""
        if not self.watchdog:
            return
        stale = (
            self.local_seen_running
            and self.confirmed_at is not None
            and self.clock() - self.confirmed_at > self.fence_window
        )
        if stale:
            return
        sd_notify("WATCHDOG=1")

    def _metastore(self) -> Metastore:
        """The metastore, with the watchdog fed first: each call then has the whole
        watchdog interval to itself, and gives up after metastore.connect_timeout,
        which the config keeps below it. Calls in a row (read, heartbeat,
        renew) would otherwise add up, and a slow metastore would get a healthy
        controller killed and restarted, again and again."""
        self.ping_watchdog()
        return self.store

    # -- one cycle ---------------------------------------------------------------------------
    def cycle(self) -> None:
        cycle_started = self.clock()
        # A deferred start is this cycle's to make (or to defer again): never a later one's.
        start_due, self.start_due_at = self.start_due_at, None
        self.ping_watchdog()
        record = self._read_and_fence()
        read_at = self.read_sent  # of this record (later reads during actions move it)
        self._hold_lease(record)
        if self.leader is not None and record is not None:
            if record.paused:
                self.metrics.set_paused(True)
                log.debug("paused: taking no node action")
                self._finish_poll(record, Plan("paused"))
            else:
                self.metrics.set_paused(False)
                try:
                    self._poll_active(record, read_at, start_due is not None)
                except SteppedDown as exc:
                    self._step_down(str(exc))
            self.metrics.observe_poll(self.clock() - cycle_started)

    def _read_and_fence(self) -> ClusterRecord | None:
        # Observe the unit BEFORE sending the read: a scheduler seen running then,
        # with a record read afterwards that names another node, was not started
        # for a placement the read might have missed.
        local_running = self.local_seen_running = self.local.running()
        record = self._read_record()
        if record is not None:
            try:
                self._metastore().heartbeat(self.identity)
            except MetastoreError as exc:
                log.debug("heartbeat not recorded: %s", exc)
        if local_running:
            if record is not None and record.scheduler_node != self.me:
                self._fence(f"the placement names {record.scheduler_node or 'no node'}")
            elif record is None and (
                self.confirmed_at is None or self.clock() - self.confirmed_at >= self.fence_window
            ):
                self._fence(f"placement not confirmed for {self.fence_window:g} s")
        return record

    def _read_record(self) -> ClusterRecord | None:
        """Read the record; one that names this node confirms its placement as of
        the moment the read was sent. The metastore records its own time for this
        node before it serves the read (confirm_as): the ACTIVE counts a move's wait
        from that, which is never earlier than `sent`."""
        sent = self.clock()
        try:
            record = self._metastore().read(confirm_as=self.me)
        except MetastoreError as exc:
            self._note_unreachable(exc)
            return None
        if self.unreachable_count:
            log.warning("metastore reachable again after %d failed reads", self.unreachable_count)
            self.unreachable_count = 0
            self.unreachable_refused = False
        self.read_sent = sent
        if record.scheduler_node == self.me:
            self.confirmed_at = sent
        return record

    def _renew(self, during: str = "") -> None:
        assert self.leader is not None
        try:
            self.leader.lease = self._metastore().renew(self.leader.lease)
        except MetastoreError as exc:
            self.metrics.count_renew_failure()
            self._step_down(f"lease renew failed{during}: {exc}")

    def _note_unreachable(self, exc: MetastoreError) -> None:
        # Keep trying every poll (fencing needs it) but log with backoff: the
        # 1st, 2nd, 4th, 8th ... failure, so an outage does not flood the journal.
        # A refusal of our credentials is retried the same way (the grant may be fixed
        # while we run) but named for what it is; a change of cause is logged at once.
        self.unreachable_count += 1
        n = self.unreachable_count
        refused = isinstance(exc, MetastoreAuthError)
        changed = refused != self.unreachable_refused
        self.unreachable_refused = refused
        if n & (n - 1) == 0 or changed:
            log.warning(
                "metastore %s (%d failed reads so far; retrying every %g s): %s",
                "refused our credentials" if refused else "unreachable",
                n,
                self.t.poll_interval,
                exc,
            )

    def _fence(self, reason: str) -> None:
        stopped = self.local.fence(reason, keepalive=self.ping_watchdog)
        self.local_seen_running = not stopped
        self._event("self-fence", self.me, f"{'stopped' if stopped else 'FAILED'}: {reason}")

    def _hold_lease(self, record: ClusterRecord | None) -> None:
        if self.leader is not None:
            self._renew()
            return
        if self._defer_acquire(record):
            return
        try:
            lease = self._metastore().acquire(self.identity, self.t.lease_ttl)
        except MetastoreError as exc:
            log.debug("cannot try the lease: %s", exc)
            return
        if lease is None:
            return
        decider = Decider(self.nodes.masters, self.t.start_timeout, self.move_wait, self.me)
        # Whatever the placement is, we have known it only since now: a node we
        # cannot observe gets the full move_wait to notice and fence itself.
        decider.placement_written(self.clock())
        decider.active_since = self.clock()
        self.leader = Leadership(lease, decider)
        self.incidents.reset()
        self.metrics.set_role(True)
        self.metrics.set_epoch(lease.epoch)
        log.info("became ACTIVE with epoch %d", lease.epoch)
        self._event("became-active", None, "ok")

    def _defer_acquire(self, record: ClusterRecord | None) -> bool:
        """On the scheduler's node, let one poll pass after the lease fell free before
        contending for it: another controller then wins if one is alive, so losing
        one node rarely takes the ACTIVE and the scheduler at once."""
        if not (self.local_seen_running and record is not None and record.holder is None):
            self.acquire_after = None
            return False
        if self.acquire_after is None:
            self.acquire_after = self.clock() + self.t.poll_interval
        return self.clock() < self.acquire_after

    def _step_down(self, reason: str) -> None:
        if self.leader is None:
            return
        log.warning("stepping down from ACTIVE (epoch %d): %s", self.leader.lease.epoch, reason)
        self.leader = None
        self.incidents.reset()
        self.metrics.set_role(False)

    # -- the ACTIVE's poll ---------------------------------------------------------------------
    def _budget(self) -> float:
        """Seconds the next action may take; raises SteppedDown when the lease is too short."""
        assert self.leader is not None
        remaining = self.leader.lease.remaining(self.clock()) - LEASE_MARGIN
        if remaining <= 0:
            raise SteppedDown("lease expired by our own clock")
        return remaining

    def _cancel_check(self) -> Callable[[], bool]:
        """Called by ansible-runner about every 0.25 s while a playbook runs: once a
        poll, renew the lease and re-confirm this node's placement (a long stop must
        not starve the watchdog or lose the lease); abort when leadership is gone."""
        last = self.clock()

        def cancel() -> bool:
            nonlocal last
            if self.clock() - last >= self.t.poll_interval:
                last = self.clock()
                self._refresh_during_action()
            self.ping_watchdog()
            return self.leader is None or self.leader.lease.remaining(self.clock()) < LEASE_MARGIN

        return cancel

    def _refresh_during_action(self) -> None:
        self._read_record()
        if self.leader is not None:
            self._renew(" during an action")

    def _run_nodes(
        self, actions: dict[str, str], hosts: list[str] | None = None
    ) -> dict[str, NodeStatus]:
        assert self.leader is not None
        self._budget()
        epoch = self.leader.lease.epoch
        # The cancel check aborts the run the moment the lease is lost; the run's own
        # timeout (what a stop may take) only bounds a runaway run.
        statuses = self.nodes.run(actions, epoch, hosts=hosts, cancel=self._cancel_check())
        if self.leader is None:
            raise SteppedDown("leadership lost while the playbook ran")
        for node, action in actions.items():
            st = statuses.get(node)
            result = "refused" if st and st.refused else ("ok" if st and st.reachable else "error")
            self.metrics.count_action(action, result)
            detail = st.error if st and st.error else (st.active_state if st else "no result")
            self._event(action, node, f"{result}: {detail}")
            if st and st.refused:
                log.error("%s on %s refused by the node: %s", action, node, st.error)
        return statuses

    def _poll_active(
        self, record: ClusterRecord, read_at: float | None, start_due: bool = False
    ) -> None:
        assert self.leader is not None
        decider = self.leader.decider
        # A deferred start is due: observe only the masters the last observation reached.
        # One that was not would hold the run for SSH's connect timeout and change
        # nothing: the decision treats an unobserved master as unreachable, and the
        # start's safety rests on the wait (start_wait), never on observing it.
        skip = self.unreached if start_due else set()
        obs = self._run_nodes({}, hosts=[m for m in self.nodes.masters if m not in skip] or None)
        self.unreached = {n for n, s in obs.items() if not s.reachable} | skip
        self.metrics.set_scheduler_up({n: s.serving for n, s in obs.items()})
        plan = decider.plan(record, obs, self.clock())
        if plan.acts:
            log.info("decision: %s", plan.reason)
        else:
            log.debug("decision: %s", plan.reason)

        if plan.place is not None:
            self._budget()
            try:
                self._metastore().write_placement(self.leader.lease, plan.place, plan.failed_nodes)
            except LeaseLost as exc:
                raise SteppedDown(f"placement write refused: {exc}") from exc
            if plan.place != record.scheduler_node:
                decider.placement_written(self.clock())
                self.metrics.count_failover()
                self._event("place", plan.place, f"ok: {plan.reason}")
                if plan.start:
                    # The confirmation rule needs a record read after the write: read it
                    # now, so a start it allows is not put off to the fallback's wait.
                    fresh = self._read_record()
                    if fresh is not None:
                        record, read_at = fresh, self.read_sent
            record = _with_placement(record, plan.place)

        actions = {node: "stop" for node in plan.stop}
        if plan.restart:
            actions[plan.restart] = "restart"
        if actions:
            obs = {**obs, **self._run_nodes(actions, hosts=list(actions))}
            if plan.restart:
                decider.started(
                    plan.restart, self.clock(), plan.repair, _restarts(obs, plan.restart)
                )

        if plan.start:
            wait = decider.start_wait(plan.start, obs, self.clock(), record, read_at)
            if wait <= 0:
                obs = {**obs, **self._run_nodes({plan.start: "start"}, hosts=[plan.start])}
                decider.started(plan.start, self.clock(), plan.repair, _restarts(obs, plan.start))
            else:
                # The wait was reckoned at the record's read: waking early is safe (the
                # next cycle re-reads and re-decides), waking late only costs time.
                self.start_due_at = (self.clock() if read_at is None else read_at) + wait
                log.info(
                    "not starting on %s yet: a master may still run a scheduler "
                    "(unreachable or not confirmed stopped); %.1f s of the move wait left",
                    plan.start,
                    wait,
                )
        if self.me in obs and obs[self.me].reachable:
            self.local_seen_running = obs[self.me].running
        self._finish_poll(record, plan, obs)
        self._hand_over(record, plan, obs)

    def _hand_over(self, record: ClusterRecord, plan: Plan, obs: dict[str, NodeStatus]) -> None:
        """Anti-affinity that lasts: when this master runs the healthy scheduler and a
        STANDBY on another master is alive, give the lease up at the end of the poll.
        That STANDBY takes it within a poll; this controller, on the scheduler's node,
        lets a poll pass before contending again (_defer_acquire). The scheduler is not
        touched: moving it would stop scheduling. Not during an incident: the ACTIVE
        that sent an alert keeps the lease until it has sent the recovery."""
        if self.leader is None or plan.acts or record.failover_to is not None:
            return  # stepped down, or in the middle of something
        if self.incidents.open:
            return  # the controller that alerted sends the recovery; hand over after it
        local = obs.get(self.me)
        if record.scheduler_node != self.me or local is None or not local.serving:
            return
        now = self.clock()
        backoff = HANDOVER_BACKOFF_TTLS * self.t.lease_ttl
        if self.handed_over_at is not None and now - self.handed_over_at < backoff:
            return
        elsewhere = [
            s
            for s in record.live_standbys
            if (node := s.split("#")[0]) != self.me and node in self.nodes.masters
        ]
        if not elsewhere:
            return
        lease = self.leader.lease
        self._event("handover", self.me, f"ok: the scheduler runs here; {elsewhere[0]} is alive")
        try:
            self._metastore().release(lease)
        except MetastoreError as exc:
            log.warning("could not hand the lease over: %s", exc)
            return
        log.info(
            "handed the lease (epoch %d) over: this master runs the scheduler and %s can take over",
            lease.epoch,
            ", ".join(elsewhere),
        )
        self.handed_over_at = now
        self.leader = None
        self.incidents.reset()
        self.metrics.set_role(False)

    def _finish_poll(
        self, record: ClusterRecord, plan: Plan, obs: dict[str, NodeStatus] | None = None
    ) -> None:
        assert self.leader is not None
        try:
            self._metastore().finish_poll(self.leader.lease, clear_failover=plan.clear_failover)
        except LeaseLost as exc:
            self._step_down(f"poll record refused: {exc}")
            return
        except MetastoreError as exc:
            log.warning("could not record the poll: %s", exc)
        if obs is None:
            return
        placed = record.scheduler_node
        healthy = placed is not None and placed in obs and obs[placed].serving
        notice = self.incidents.observe(bool(healthy), plan.reason, placed, self.clock())
        if notice is not None:
            log.warning("%s: %s", notice.subject, notice.body)
            self._event(f"alert-{notice.kind}", placed, notice.subject)
            # Delivery may block for the SMTP/webhook timeouts: never on the loop
            # that feeds the watchdog and renews the lease.
            threading.Thread(
                target=self._deliver, args=(notice.subject, notice.body), daemon=True, name="alert"
            ).start()

    def _deliver(self, subject: str, body: str) -> None:
        for error in self.alerter.send(subject, body):
            log.error("alert not delivered: %s", error)

    def _event(self, action: str, node: str | None, result: str) -> None:
        epoch = self.leader.lease.epoch if self.leader else 0
        try:
            self._metastore().append_event(Event(self.identity, epoch, action, node, result))
        except MetastoreError as exc:
            log.debug("event not recorded (%s): %s %s %s", exc, action, node, result)


def _with_placement(record: ClusterRecord, node: str) -> ClusterRecord:
    return replace(record, scheduler_node=node)


def _restarts(obs: dict[str, NodeStatus], node: str) -> int | None:
    st = obs.get(node)
    return st.restarts if st is not None and st.reachable else None
