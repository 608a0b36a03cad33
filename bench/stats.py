"""min / median / p95 / max of one metric's trials, as every bench reports them."""

from __future__ import annotations

import statistics
from typing import Any


def summary(values: list[float], target: str | None) -> dict[str, Any]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered) + 0.5) - 1))]
    return {
        "n": len(values),
        "min": round(ordered[0], 3),
        "median": round(statistics.median(ordered), 3),
        "p95": round(p95, 3),
        "max": round(ordered[-1], 3),
        "target": target,
    }
