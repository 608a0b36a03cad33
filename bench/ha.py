"""Any-one-host-lost benchmark: what each fault of molecule/default's fault suite costs.

Converges the molecule/default cluster once, then runs its side_effect (every
fault in turn and the invariants, see molecule/default/side_effect.yml) `--rounds`
times, and writes bench/results/ha.json: per fault, over every trial of every
round, {n, min, median, p95, max} of

  api_back_s     the fault caused -> the API answers through the VIP (host clock)
  write_ok_s     -> a write commits through the VIP (database clock)
  new_run_ok_s   -> a scheduled probe run started after the fault has succeeded
  scheduler_ok_s -> exactly one scheduler runs (elsewhere if its host is lost)
  missed_runs    scheduled minutes with no run, from the fault to that run

plus `vip_host_stopped` and `primary_host_stopped`: the master_stopped trials
whose master held the VIP, or PostgreSQL's primary (the API's health endpoint
reads the database, so a lost primary shows in api_back_s too), and the
counts over the whole bench: duplicates (probe tries run twice),
overlap_samples (the observer's samples with two schedulers) and lost_runs
(finished runs or task instances lost or changed: each trial asserts none, so
a bench that finishes has 0).

Expects the node image and wheelhouses (`make bench-ha` builds them first).
Not a test: the targets are recorded, not asserted.
Usage: .venv/bin/python bench/ha.py [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.stats import summary  # noqa: E402

SCENARIO = "default"
RESULTS = REPO / ".build" / "molecule-default"
METRICS = ("api_back_s", "write_ok_s", "new_run_ok_s", "scheduler_ok_s", "missed_runs")
TARGETS = {
    ("vip_host_stopped", "api_back_s"): "VIP move: API back <= 5 s",
    ("postgresql_primary_killed", "write_ok_s"): "writes accepted again <= 30 s",
}
# master_stopped trials regrouped by what the stopped master held.
HELD_BY_STOPPED_HOST = {"vip_host_stopped": "vip_was_on", "primary_host_stopped": "primary_was_on"}
RUN_TARGET = "a new DAG run succeeds <= 90 s"
MISSED_TARGET = "at most 1 missed scheduled run"


def molecule(step: str) -> None:
    subprocess.run(
        [str(REPO / ".venv/bin/molecule"), step.replace("_", "-"), "-s", SCENARIO],
        cwd=REPO,
        check=True,
    )


def probe_counts(worker: str) -> dict[str, int]:
    """The probe's executions and duplicated tries, read through the VIP."""
    script = (REPO / "molecule/default/files/probe_db.py").read_bytes()
    out = subprocess.run(
        ["docker", "exec", "-i", worker, "/opt/airflow/bin/python", "-", "counts"],
        input=script,
        capture_output=True,
        check=True,
    )
    counts: dict[str, int] = json.loads(out.stdout)
    return counts


def aggregate(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    trials: dict[str, list[dict[str, Any]]] = {}
    for faults in rounds:
        for fault, runs in faults["faults"].items():
            trials.setdefault(fault, []).extend(runs)
            if fault == "master_stopped":
                for group, key in HELD_BY_STOPPED_HOST.items():
                    held = [run for run in runs if run.get(key) == run["node"]]
                    trials.setdefault(group, []).extend(held)
    result: dict[str, Any] = {}
    for fault, runs in trials.items():
        if not runs:
            continue
        result[fault] = {}
        for metric in METRICS:
            target = TARGETS.get((fault, metric))
            if metric == "new_run_ok_s":
                target = RUN_TARGET
            elif metric == "missed_runs":
                target = MISSED_TARGET
            result[fault][metric] = summary([float(run[metric]) for run in runs], target)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "ha.json")
    args = parser.parse_args()
    if not os.environ.get("MOLECULE_NODE_IMAGE"):
        print("bench/ha.py: MOLECULE_NODE_IMAGE is not set (run `make bench-ha`)")
        return 2
    started = time.monotonic()
    rounds: list[dict[str, Any]] = []
    overlaps = 0
    try:
        for step in ("destroy", "create", "converge"):
            molecule(step)
        for _ in range(args.rounds):
            molecule("side_effect")
            rounds.append(json.loads((RESULTS / "faults.json").read_text()))
            overlaps += int(json.loads((RESULTS / "observer.json").read_text())["overlap_samples"])
        counts = probe_counts("hat-w2")
    finally:
        molecule("destroy")
    results = {
        "settings": {
            "rounds": args.rounds,
            "scenario": "molecule/default's fault suite (3 all-in-one masters, 2 workers)",
            "bounds_s": rounds[0]["bounds_s"],
            "machine": "2 cores, shared; one run, compare ratios not absolutes",
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "wall_s": round(time.monotonic() - started, 1),
        },
        **aggregate(rounds),
        "duplicates": counts["duplicates"],
        "probe_executions": counts["executions"],
        "overlap_samples": overlaps,
        "lost_runs": sum(
            int(run.get("lost", 0))
            for faults in rounds
            for runs in faults["faults"].values()
            for run in runs
        ),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
