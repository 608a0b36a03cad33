"""Molecule benchmark: how long the scenarios take on this machine.

Runs a scenario step by step (each step a `molecule <step>` command, timed)
and writes bench/results/molecule.json with min/median/p95 per step:

  default:  create (with prepare), converge (cold: a fresh cluster), idempotence
            (the re-converge of a converged cluster), check, verify, side_effect
            (the fault suite), destroy; total (the whole `molecule test`
            sequence), cluster_total (total without the fault suite: what the
            scenario took before the faults joined it), and the fault timings
            the suite records (.build/molecule-default/faults.json)

Expects the node image and wheelhouses to be built (`make bench-molecule`
does that first). Not a test: nothing is asserted.
Usage: .venv/bin/python bench/molecule.py [--trials N] [--scenarios default]
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

# `molecule create` runs the prepare playbook too: "create" is create + prepare.
STEPS = {
    "default": ["syntax", "create", "converge", "idempotence", "check", "verify", "side_effect"],
}
TARGETS = {
    ("default", "cluster_total"): "cold molecule test (without the fault suite) <= 600 s",
    ("default", "idempotence"): "re-converge <= 90 s",
    ("default", "check"): "site.yml --check on a converged cluster <= 90 s",
}
# Fault timings of the fault suite (faults.json: each fault's trials in order;
# the first master stopped is the scheduler's). bench/ha.py has them all.
FAULT_METRICS = {
    "node_stopped_s": ("master_stopped", "scheduler_ok_s"),
    "node_cut_off_s": ("scheduler_node_cut_off", "scheduler_ok_s"),
}


def molecule(step: str, scenario: str) -> float:
    # `molecule check` alone runs its own destroy/create/.../destroy sequence;
    # the check step of `molecule test` is the converge playbook in check mode.
    # Steps are named as in the scenario's test_sequence; the CLI spells side_effect with a dash.
    argv = [step.replace("_", "-"), "-s", scenario]
    if step == "check":
        argv = ["converge", "-s", scenario, "--", "--check"]
    started = time.monotonic()
    subprocess.run([str(REPO / ".venv/bin/molecule"), *argv], cwd=REPO, check=True)
    return time.monotonic() - started


def trial(scenario: str) -> dict[str, float]:
    times = {"destroy_before": molecule("destroy", scenario)}
    try:
        for step in STEPS[scenario]:
            times[step] = molecule(step, scenario)
    finally:
        times["destroy"] = molecule("destroy", scenario)
    times["total"] = sum(times.values())
    if "side_effect" in times:
        times["cluster_total"] = times["total"] - times["side_effect"]
        faults = json.loads((REPO / f".build/molecule-{scenario}/faults.json").read_text())
        for metric, (fault, key) in FAULT_METRICS.items():
            times[metric] = float(faults["faults"][fault][0][key])
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--scenarios", default="default")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "molecule.json")
    args = parser.parse_args()
    if not os.environ.get("MOLECULE_NODE_IMAGE"):
        print("bench/molecule.py: MOLECULE_NODE_IMAGE is not set (run `make bench-molecule`)")
        return 2
    results: dict[str, Any] = {
        "settings": {
            "trials": args.trials,
            "machine": "2 cores, shared; one run, compare ratios not absolutes",
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    }
    for scenario in args.scenarios.split(","):
        runs = [trial(scenario) for _ in range(args.trials)]
        results[scenario] = {
            metric: summary([run[metric] for run in runs], TARGETS.get((scenario, metric)))
            for metric in runs[0]
        }
        print(json.dumps({scenario: results[scenario]}, indent=2), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
