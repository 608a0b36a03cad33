"""What the ACTIVE controller should do this poll: a pure function of what it
observed, what the metastore says, and what it remembers.

No I/O and no clock of its own (``now`` is passed in), so every rule here is
unit-tested with a fake clock. The control loop (controller.py) executes the
resulting :class:`Plan` and reports back through :meth:`Decider.started`.

Rules, in order:

1. An operator's ``failover`` request moves the scheduler to the named master
   (or the next one) and is then cleared.
2. No placement recorded: adopt the one running scheduler; if several run,
   keep the first serving one in inventory order and stop the rest; if none
   runs, place it on the first reachable master.

Choosing a master (rules 2-4) skips unreachable ones, prefers ones not marked
failed and, among those, ones other than the ACTIVE's own node.
3. The placed node is unreachable: move to the next master (the node is not
   marked failed: being unreachable says nothing about its scheduler).
4. The placed node's scheduler is down or unhealthy: leave it alone while it
   is still starting (up to ``start_timeout``, and only while it has neither
   answered healthy since this start nor hung: a health port that accepts
   connections without answering), else (re)start it once there;
   if that does not bring it up within ``start_timeout``, or it fails again
   within ``FLAP_WINDOW_FACTOR`` start timeouts of that restart, move it.
   A crash loop that systemd keeps repairing (``Restart=on-failure``) counts
   too: systemd's restarts seen on two polls within that window (since the
   controller last started it there) move it as well. Either way the node is
   marked failed.
5. Any scheduler running anywhere but the placed node is stopped.

A start is only *safe* when no other master may still run a scheduler (docs/design.md,
A6). Either rule suffices:

* by this ACTIVE's clock, the placement has named the target for at least ``move_wait``
  (by then a node that could not be observed has read the new placement and stopped, or
  lost the metastore and fenced itself);
* every other master was observed stopped, or is *clear*: on the metastore's clock, at
  least ``move_wait`` has passed since its controller last began a confirming read (so
  it has fenced itself or read another placement, and stopped), in a record read after
  the placement was written; and, by this ACTIVE's clock, at least ``move_wait`` since
  this ACTIVE took the lease and since it last (re)started the scheduler there (a start
  on a node whose right had lapsed runs until that node's controller next looks). A
  master with no known confirmation is never clear this way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ha_toolkit.metastore import ClusterRecord
from ha_toolkit.models import NodeStatus

# A scheduler that needs the controller to (re)start it again within this many
# start_timeouts of the last (re)start is moved rather than restarted once more.
FLAP_WINDOW_FACTOR = 2


@dataclass(frozen=True)
class Plan:
    """One poll's intent. ``place`` is the placement to write first (fenced)."""

    reason: str
    place: str | None = None  # write this placement (None: keep the recorded one)
    failed_nodes: tuple[str, ...] = ()  # with the placement write
    stop: tuple[str, ...] = ()
    restart: str | None = None  # hung: stop and start in one fenced action
    start: str | None = None  # start only if safe_to_start() says so
    clear_failover: bool = False
    repair: bool = False  # the start/restart repairs the placed scheduler in place

    @property
    def acts(self) -> bool:
        return bool(self.place or self.stop or self.restart or self.start or self.clear_failover)


@dataclass
class Decider:
    """The ACTIVE's memory between polls; reset whenever leadership changes."""

    masters: Sequence[str]
    start_timeout: float
    move_wait: float
    me: str | None = None  # the ACTIVE's own node
    placement_since: float = 0.0  # since when the placement has been what it is
    active_since: float = 0.0  # when this ACTIVE took the lease
    last_started: dict[str, float] = field(default_factory=dict)  # node -> our last (re)start
    attempts: dict[str, float] = field(default_factory=dict)  # node -> when we (re)started it
    restarts: dict[str, list[float]] = field(default_factory=dict)  # node -> recent (re)starts
    # systemd's own restarts (NRestarts): the count at the last poll, and the polls
    # that saw it grow.
    restarts_seen: dict[str, int] = field(default_factory=dict)
    crashes: dict[str, list[float]] = field(default_factory=dict)

    def placement_written(self, now: float) -> None:
        self.placement_since = now

    def started(
        self, node: str, now: float, repair: bool = False, restarts: int | None = None
    ) -> None:
        """The controller (re)started the scheduler on `node`; a repair, unlike a
        first start or a move, counts towards flapping. `restarts` is systemd's
        restart count as the start left it (a start from outside resets it), and
        systemd's crash count starts over with it."""
        self.attempts[node] = now
        self.last_started[node] = now
        if repair:
            self.restarts.setdefault(node, []).append(now)
        if restarts is not None:
            self.restarts_seen[node] = restarts
        self.crashes.pop(node, None)

    def _note_crashes(self, obs: Mapping[str, NodeStatus], now: float) -> set[str]:
        """The nodes where systemd restarted the scheduler since the last poll (its
        restart count grew); a first sight, or a count reset, is only a baseline."""
        crashed: set[str] = set()
        for node in self.masters:
            st = obs.get(node)
            if st is None or not st.reachable or st.restarts is None:
                continue
            before = self.restarts_seen.get(node)
            self.restarts_seen[node] = st.restarts
            if before is not None and st.restarts > before:
                crashed.add(node)
                self.crashes.setdefault(node, []).append(now)
        return crashed

    def _crash_loop(self, node: str, now: float) -> bool:
        """systemd restarted the scheduler here on two polls within the flap window:
        it keeps crashing. (A single crash is what systemd is there for: the
        controller leaves it alone.)"""
        window = FLAP_WINDOW_FACTOR * self.start_timeout
        crashes = [t for t in self.crashes.get(node, []) if now - t < window]
        self.crashes[node] = crashes
        return len(crashes) >= 2

    def _flapping(self, node: str, now: float) -> bool:
        """The controller already had to repair the scheduler here within the flap
        window: it came up and went down again (a crash loop, or a node whose
        controller keeps fencing it because it cannot reach the metastore)."""
        window = FLAP_WINDOW_FACTOR * self.start_timeout
        recent = [t for t in self.restarts.get(node, []) if now - t < window]
        self.restarts[node] = recent
        return bool(recent)

    # -- the decision ------------------------------------------------------------------------
    def plan(self, record: ClusterRecord, obs: Mapping[str, NodeStatus], now: float) -> Plan:
        crashed = self._note_crashes(obs, now)
        running = [m for m in self.masters if _st(obs, m).running]
        placed = record.scheduler_node if record.scheduler_node in self.masters else None
        failed = tuple(n for n in record.failed_nodes if n in self.masters)

        if record.failover_to is not None:
            return self._failover(record.failover_to, placed, failed, obs, running)

        if placed is None:
            return self._place_fresh(obs, running, failed)

        status = _st(obs, placed)
        strays = tuple(m for m in running if m != placed)
        if not status.reachable:
            # Not marked failed: an unreachable node says nothing about whether the
            # scheduler can run there once it is back.
            return self._move(placed, failed, obs, running, f"{placed} is unreachable")
        if placed in crashed and self._crash_loop(placed, now):
            # Even if it is healthy this very moment: it will crash again.
            marked = tuple(dict.fromkeys((*failed, placed)))
            why = f"scheduler on {placed} keeps crashing (systemd restarted it again)"
            return self._move(placed, marked, obs, running, why)
        if status.serving and status.healthy is not False:
            self.attempts.pop(placed, None)
            healed = tuple(n for n in failed if n != placed)
            if strays or healed != failed:
                return Plan(
                    f"scheduler healthy on {placed}",
                    place=placed if healed != failed else None,
                    failed_nodes=healed,
                    stop=strays,
                )
            return Plan(f"scheduler healthy on {placed}")

        attempted = self.attempts.get(placed)
        # start_timeout bounds only a start that has not come up yet: one that was
        # healthy since it started, or hangs, is past its warm-up (issue 10).
        warmed_up = status.warmed_up
        if attempted is None:
            if status.running and status.sub_state == "auto-restart":
                # Crashed, and systemd restarts it in a moment: its business (a loop of
                # this is caught above, when its restart count grows).
                return Plan(f"systemd is restarting the scheduler on {placed}", stop=strays)
            young = (status.since_start or 0.0) < self.start_timeout
            starting = status.running and young and not warmed_up
            if starting:
                return Plan(f"scheduler on {placed} is starting", stop=strays)
            if self._flapping(placed, now):
                marked = tuple(dict.fromkeys((*failed, placed)))
                why = f"scheduler on {placed} failed again soon after a restart"
                return self._move(placed, marked, obs, running, why)
            if status.running:
                hung = " (hung)" if status.health_check == "timeout" else ""
                return Plan(
                    f"scheduler on {placed} is unhealthy{hung}: restart",
                    restart=placed,
                    stop=strays,
                    repair=True,
                )
            return Plan(
                f"scheduler on {placed} is down: start it", start=placed, stop=strays, repair=True
            )
        if status.running and now - attempted < self.start_timeout and not warmed_up:
            return Plan(f"scheduler on {placed} is starting after a restart", stop=strays)
        if not status.running:
            why = "did not start"
        elif warmed_up:
            why = "failed again soon after a restart"
        else:
            why = "did not become healthy"
        marked = tuple(dict.fromkeys((*failed, placed)))
        return self._move(placed, marked, obs, running, f"scheduler on {placed} {why}")

    def safe_to_start(
        self,
        target: str,
        obs: Mapping[str, NodeStatus],
        now: float,
        record: ClusterRecord | None = None,
        read_at: float | None = None,
    ) -> bool:
        """Whether no master but `target` may still run a scheduler (see the module
        docstring). `record` was read by a call sent at `read_at` (this clock)."""
        return self.start_wait(target, obs, now, record, read_at) <= 0

    def start_wait(
        self,
        target: str,
        obs: Mapping[str, NodeStatus],
        now: float,
        record: ClusterRecord | None = None,
        read_at: float | None = None,
    ) -> float:
        """Seconds until a start on `target` is safe (<= 0: now); the shorter of the two
        rules. Seconds of the metastore's clock are counted as this clock's: only the
        sign is exact."""
        by_placement = self.placement_since + self.move_wait - now
        others = [m for m in self.masters if m != target]
        by_confirmation = max(
            (self._clear_in(m, obs, now, record, read_at) for m in others), default=0.0
        )
        return min(by_placement, by_confirmation)

    def _clear_in(
        self,
        node: str,
        obs: Mapping[str, NodeStatus],
        now: float,
        record: ClusterRecord | None,
        read_at: float | None,
    ) -> float:
        """Seconds until `node` can run no scheduler (<= 0: already): observed stopped,
        or its last confirmation long enough ago; inf when that cannot be known."""
        st = _st(obs, node)
        if st.reachable and not st.running:
            return -math.inf
        if record is None or record.server_time is None or read_at is None:
            return math.inf
        confirmed = record.confirmations.get(node)
        # Read before the placement was written (or before we took the lease): a
        # confirmation recorded after this read may still be counted by the node.
        if confirmed is None or read_at < self.placement_since:
            return math.inf
        by_metastore = self.move_wait - (record.server_time - confirmed).total_seconds()
        started = max(self.active_since, self.last_started.get(node, -math.inf))
        return max(by_metastore, started + self.move_wait - now)

    # -- helpers -----------------------------------------------------------------------------
    def _next_master(
        self, after: str | None, failed: Sequence[str], obs: Mapping[str, NodeStatus]
    ) -> str | None:
        """The next reachable master after `after` in inventory order, preferring
        ones not marked failed, and then ones other than the ACTIVE's own node (so
        losing one node never takes the ACTIVE and the scheduler at once)."""
        start = self.masters.index(after) + 1 if after in self.masters else 0
        order = [self.masters[(start + i) % len(self.masters)] for i in range(len(self.masters))]
        candidates = [m for m in order if m != after and _st(obs, m).reachable]
        fresh = [m for m in candidates if m not in failed]
        for tier in ([m for m in fresh if m != self.me], fresh, candidates):
            if tier:
                return tier[0]
        return None

    def _place_fresh(
        self, obs: Mapping[str, NodeStatus], running: list[str], failed: tuple[str, ...]
    ) -> Plan:
        if running:
            serving = [m for m in running if _st(obs, m).serving]
            keep = (serving or running)[0]
            others = tuple(m for m in running if m != keep)
            return Plan(
                f"no placement recorded: adopt the scheduler on {keep}",
                place=keep,
                failed_nodes=failed,
                stop=others,
            )
        target = self._next_master(None, failed, obs)
        if target is None:
            return Plan("no placement recorded and no master reachable")
        return Plan(
            f"no placement recorded: start on {target}",
            place=target,
            failed_nodes=failed,
            start=target,
        )

    def _move(
        self,
        source: str,
        failed: tuple[str, ...],
        obs: Mapping[str, NodeStatus],
        running: list[str],
        why: str,
    ) -> Plan:
        target = self._next_master(source, failed, obs)
        if target is None:
            return Plan(
                f"{why}; no other master reachable: keep waiting",
                stop=tuple(m for m in running if m != source),
            )
        self.attempts.pop(target, None)
        return Plan(
            f"{why}: move to {target}",
            place=target,
            failed_nodes=failed,
            stop=tuple(m for m in running if m != target),
            start=target,
        )

    def _failover(
        self,
        requested: str,
        placed: str | None,
        failed: tuple[str, ...],
        obs: Mapping[str, NodeStatus],
        running: list[str],
    ) -> Plan:
        if requested and requested not in self.masters:
            return Plan(f"failover to {requested} refused: not a master", clear_failover=True)
        target = requested or self._next_master(placed, failed, obs)
        if target is None or not _st(obs, target).reachable:
            return Plan(f"failover to {target} refused: unreachable", clear_failover=True)
        self.attempts.pop(target, None)
        stops = tuple(m for m in running if m != target)
        if target == placed:
            return Plan(
                f"failover: scheduler already placed on {target}",
                stop=stops,
                start=None if _st(obs, target).running else target,
                clear_failover=True,
            )
        return Plan(
            f"failover requested: move from {placed} to {target}",
            place=target,
            failed_nodes=tuple(n for n in failed if n != target),
            stop=stops,
            start=target,
            clear_failover=True,
        )


def _st(obs: Mapping[str, NodeStatus], node: str) -> NodeStatus:
    return obs.get(node) or NodeStatus(node, reachable=False, error="not observed")
