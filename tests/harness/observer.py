"""An independent observer of where schedulers run: it samples, from the host,
the cgroup of the scheduler unit inside every watched node container. It reads
kernel state, never the controllers' view, so it can catch them lying.

Used in-process by the pytest fault tests and, as a command, by the Molecule
failover scenario:

    python -m tests.harness.observer --out result.json --pid-file obs.pid NAME...

runs until SIGTERM/SIGINT, `--max-seconds`, or until every watched container
is gone, then writes a JSON summary (samples, overlaps, per-node counts).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .procs import wait_for

UNIT = "airflow-scheduler"
# Node containers share the host's cgroup tree (cgroupns=host), so each one's
# systemd puts its units under the container's own docker scope.
CGROUP_ROOT = Path("/sys/fs/cgroup/systemd/docker")


def unit_cgroup_procs(container_id: str, unit: str = UNIT) -> Path:
    """The cgroup.procs file of `unit` inside a container, as the host sees it."""
    return CGROUP_ROOT / container_id / "system.slice" / f"{unit}.service" / "cgroup.procs"


@dataclass
class Observer:
    """Samples every `interval` seconds which containers (name -> id) run the unit."""

    containers: dict[str, str]
    unit: str = UNIT
    interval: float = 0.05
    samples: int = 0
    overlaps: list[tuple[float, list[str]]] = field(default_factory=list)
    running_samples: dict[str, int] = field(default_factory=dict)
    last: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def running(self) -> list[str]:
        names = []
        for name, cid in self.containers.items():
            try:
                if unit_cgroup_procs(cid, self.unit).read_text().strip():
                    names.append(name)
            except OSError:
                pass  # no cgroup: the unit is not running (or the node is down)
        return names

    def _loop(self) -> None:
        while not self._stop.is_set():
            now = time.time()
            names = self.running()
            self.samples += 1
            self.last = names
            for name in names:
                self.running_samples[name] = self.running_samples.get(name, 0) + 1
            if len(names) > 1:
                self.overlaps.append((now, names))
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True, name="observer")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)

    def wait_single(self, timeout: float, not_on: str | None = None) -> str:
        """Wait until exactly one node runs a scheduler (optionally not `not_on`)."""
        found: list[str] = []

        def single() -> bool:
            found[:] = self.running()
            return len(found) == 1 and found[0] != not_on

        wait_for(
            single,
            timeout,
            f"exactly one scheduler{f' off {not_on}' if not_on else ''}",
            interval=0.1,
        )
        return found[0]

    def summary(self) -> dict[str, object]:
        return {
            "unit": self.unit,
            "interval_s": self.interval,
            "samples": self.samples,
            "running_samples": self.running_samples,
            "overlap_samples": len(self.overlaps),
            "first_overlaps": [{"at": at, "nodes": names} for at, names in self.overlaps[:20]],
        }


def main(argv: list[str] | None = None) -> int:
    import docker  # the command needs the engine; in-process users pass ids

    parser = argparse.ArgumentParser(prog="python -m tests.harness.observer")
    parser.add_argument("names", nargs="+", help="node containers to watch")
    parser.add_argument("--out", type=Path, required=True, help="JSON summary written at exit")
    parser.add_argument("--pid-file", type=Path, help="this process's PID, for stopping it")
    parser.add_argument("--unit", default=UNIT)
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    args = parser.parse_args(argv)

    client = docker.from_env()
    containers = {name: client.containers.get(name).id for name in args.names}
    observer = Observer(containers, unit=args.unit, interval=args.interval)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    if args.pid_file:
        args.pid_file.write_text(f"{os.getpid()}\n")
    started = time.time()
    observer.start()
    try:
        deadline = started + args.max_seconds
        while not done.wait(2.0) and time.time() < deadline:
            # Never outlive what it watches (a scenario that died half-way).
            if not any((CGROUP_ROOT / cid).exists() for cid in containers.values()):
                live = [c.id for c in client.containers.list(all=True)]
                if not any(cid in live for cid in containers.values()):
                    break
    finally:
        observer.stop()
        result = observer.summary() | {"started": started, "stopped": time.time()}
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        tmp.replace(args.out)
        if args.pid_file:
            args.pid_file.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
