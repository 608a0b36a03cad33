"""The timing arithmetic: the rules between the timings, and how long a move waits.

The safety argument (docs/configuration.md, "Timing rules", and docs/design.md) rests on
these; the loader refuses a file that breaks a rule, naming both keys.
"""

from __future__ import annotations

from ha_toolkit.config.model import Timings

# (key, relation, factor, other key): key must be >= / < factor x other.
_TIMING_RULES: tuple[tuple[str, str, float, str], ...] = (
    # The ACTIVE renews every poll: one missed renew must not lose the lease.
    ("lease_ttl", ">=", 2, "poll_interval"),
    # Every controller confirms its placement every poll: one missed read must not fence it.
    ("fence_after", ">=", 2, "poll_interval"),
    # A controller that hangs right after confirming its placement cannot fence itself:
    # systemd must kill it (and its scheduler with it) before it would have fenced itself.
    # No lower bound: the controller pings on its own timer (every watchdog/3), not per poll.
    ("watchdog", "<", 1, "fence_after"),
    # A scheduler's health is sampled once a poll: a shorter start timeout cannot be judged.
    ("start_timeout", ">=", 1, "poll_interval"),
)


def check_timings(t: Timings) -> list[str]:
    """Every broken timing rule, as '<timings.key>: <rule> (<the numbers>)'; empty if sound."""
    problems = [
        f"timings.{name}: must be > 0 (got {value:g})"
        for name, value in vars(t).items()
        if name != "clock_drift" and not value > 0
    ]
    if not 0 <= t.clock_drift < 0.5:
        problems.append(f"timings.clock_drift: must be >= 0 and < 0.5 (got {t.clock_drift:g})")
    if problems:
        return problems  # the ratios below mean nothing for non-positive values
    for name, relation, factor, other in _TIMING_RULES:
        value, bound = getattr(t, name), getattr(t, other)
        times = f"{factor:g} × " if factor != 1 else ""  # noqa: RUF001 (a multiplication sign)
        if relation == ">=" and not value >= factor * bound:
            problems.append(
                f"timings.{name}: must be at least {times}timings.{other} "
                f"({value:g} < {times}{bound:g})"
            )
        if relation == "<" and not value < factor * bound:
            problems.append(
                f"timings.{name}: must be less than {times}timings.{other} "
                f"({value:g} >= {times}{bound:g})"
            )
    # The controller stops feeding the watchdog once its node's placement has gone
    # unconfirmed for fence_after - watchdog (so a hung loop dies by fence_after); it
    # re-confirms once a poll, so that window must hold two polls or a healthy
    # controller would starve its own watchdog.
    if not problems and not t.fence_after - t.watchdog >= 2 * t.poll_interval:
        problems.append(
            "timings.fence_after: must be at least timings.watchdog + 2 × "  # noqa: RUF001
            f"timings.poll_interval ({t.fence_after:g} < {t.watchdog:g} + 2 × "  # noqa: RUF001
            f"{t.poll_interval:g})"
        )
    return problems


def move_wait(t: Timings) -> float:
    """Seconds the ACTIVE waits before it starts the scheduler on the new node when the old
    node was not seen stopped: counted on the metastore's clock from the old node's last
    recorded confirmation, or (the fallback) on the ACTIVE's clock from the placement write
    (docs/design.md, A6). Below, the argument for the fallback; the other is the same with
    the confirmation, recorded no earlier than the old node sent it, in place of the write.

    The old node's last confirmation of its placement was read before the new placement was
    written; it stops trusting that confirmation ``fence_after`` later and then needs up to
    ``stop_timeout`` to stop the scheduler. Those seconds pass on the old node's clock, which
    may run slower than ours by ``clock_drift``. The old node notices its deadline only when
    its loop runs and its metastore read returns: one ``poll_interval`` of margin for that.
    (A hung old controller: see "Timing rules" in docs/configuration.md.)
    """
    return (t.fence_after + t.stop_timeout) * (1 + t.clock_drift) + t.poll_interval
