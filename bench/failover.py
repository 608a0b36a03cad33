"""Failover benchmark: how fast the controllers recover, and what they cost.

Runs on the test harness (node containers with systemd and sshd, controllers
installed from a wheel, real MariaDB / ZooKeeper on the test network) and
writes bench/results/failover.json with min/median/p95 per metric and backend:

  scheduler_restart_s      scheduler process SIGKILLed -> healthy again
  node_loss_s              scheduler node killed (docker kill) -> healthy elsewhere
  controller_takeover_s    ACTIVE controller SIGKILLed -> a STANDBY holds the lease
  takeover_with_hung_scheduler_s        the ACTIVE SIGKILLed and the scheduler SIGSTOPped
                           at once, long after its start -> a healthy scheduler again
  takeover_with_hung_young_scheduler_s  the same, the scheduler hung right after its first
                           healthy answer after a move (inside start_timeout)
  node_loss_default_s      node_loss_s at the shipped default timings
  node_loss_colocated_s    the scheduler moved onto the ACTIVE's master, that master killed
                           before the ACTIVE handed the lease over (takeover and move at
                           once: how long co-location lasted before issue 10, for ever)
  node_loss_after_handover_s  the same, killed once the ACTIVE handed the lease over
  poll_cycle_s             one observation of 3 masters (one playbook run), forked from
                           the warm ansible-playbook as the controller runs it
  poll_cycle_cold_s        the same from a fresh ansible-playbook (before warm_ansible)
  poll_cpu_s, poll_cpu_cold_s  CPU of one such run (the runner, its children and the
                           warm server), interleaved with each other
  controller_cpu_pct       ACTIVE controller + its Ansible children, % of one core,
                           at the default poll of 10 s (per-poll windows)
  controller_cpu_s_per_poll  CPU seconds per poll at the default poll
  controller_rss_mb        the controller process's RSS
  warm_server_rss_mb       the RSS of its warm ansible-playbook server (between runs)

Timing trials use poll 2 s / lease 6 s; the cost trials the default timings.
Not a test: nothing is asserted.
Usage: .venv/bin/python bench/failover.py [--trials N] [--default-trials N]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import docker  # noqa: E402

from bench.stats import summary  # noqa: E402
from ha_toolkit.config import MetastoreConfig, Timings, move_wait  # noqa: E402
from ha_toolkit.decisions import FLAP_WINDOW_FACTOR  # noqa: E402
from ha_toolkit.metastore import open_metastore  # noqa: E402
from tests.failover_support import (  # noqa: E402
    healthy_on,
    main_pid,
    make_controller_cluster,
    scheduler_node,
)
from tests.harness.cluster import Cluster, remove_stale  # noqa: E402
from tests.harness.controller_image import controller_image  # noqa: E402
from tests.harness.controllers import UNIT, ControllerCluster  # noqa: E402
from tests.harness.procs import wait_for  # noqa: E402

# poll 2 s and lease 6 s as the targets state; fence_after as small as the rule
# fence_after >= watchdog + 2 x poll allows with a 1.5 s watchdog; the stand-in
# scheduler stops in well under stop_timeout.
TIMING = {
    "poll_interval": 2.0,
    "lease_ttl": 6.0,
    "fence_after": 5.5,
    "watchdog": 1.5,
    "start_timeout": 10.0,
    "stop_timeout": 3.0,
    "clock_drift": 0.05,
}
DEFAULT = {k: float(v) for k, v in vars(Timings()).items()}
TARGETS = {
    "scheduler_restart_s": "p95 <= 5",
    "node_loss_s": "p95 <= 10",
    "controller_takeover_s": "p95 <= 8",
    # lease_ttl + poll + stop_timeout + about 1.5 s for the stand-in to restart
    "takeover_with_hung_scheduler_s": "p95 <= 12.5",
    "takeover_with_hung_young_scheduler_s": "p95 <= 12.5",
    "node_loss_default_s": "p95 <= 30",
    "node_loss_colocated_s": None,
    "node_loss_after_handover_s": None,
    "poll_cycle_s": "median <= 0.5",
    "poll_cycle_cold_s": None,
    "poll_cpu_s": "median <= 0.3",
    "poll_cpu_cold_s": None,
    "controller_cpu_pct": "median <= 3",
    "controller_cpu_s_per_poll": None,
    "controller_rss_mb": "max <= 100",
    "warm_server_rss_mb": None,
}


class Bench:
    def __init__(self, ha: ControllerCluster, kind: str) -> None:
        self.ha = ha
        self.kind = kind
        self.last_kill: float | None = None  # see scheduler_restart
        self.colocated_trials = 0
        meta = dict(ha.metastore)
        self.store = open_metastore(
            MetastoreConfig(
                type=meta["type"],
                dsn=meta.get("dsn"),
                hosts=tuple(meta.get("hosts", ())),
                user=meta["dsn"].split("//")[1].split("@")[0] if meta.get("dsn") else None,
                password=ha.password or None,
            )
        )

    def holder(self) -> tuple[str | None, int]:
        record = self.store.read()
        return record.holder, record.epoch

    def scheduler(self) -> str:
        """The scheduler node once the ACTIVE has seen it healthy for two polls: every
        trial starts from a settled cluster (and systemd's start rate limit has room)."""
        return scheduler_node(self.ha)

    def scheduler_restart(self) -> float:
        # systemd restarting the scheduler twice within FLAP_WINDOW_FACTOR x start_timeout
        # is a crash loop, which the ACTIVE answers by moving it (issue 10): space the
        # kills beyond that window so that each trial is one crash, not part of a loop.
        if self.last_kill is not None:
            quiet = FLAP_WINDOW_FACTOR * TIMING["start_timeout"] + 2 * TIMING["poll_interval"]
            time.sleep(max(0.0, self.last_kill + quiet - time.monotonic()))
        node = self.scheduler()
        old = main_pid(self.ha, node)
        start = self.last_kill = time.monotonic()
        self.ha.cluster.node(node).exec(f"systemctl kill -s KILL {UNIT}")
        wait_for(
            lambda: main_pid(self.ha, node) not in (0, old) and healthy_on(self.ha, node),
            60,
            "the scheduler healthy again",
            interval=0.05,
        )
        return time.monotonic() - start

    def node_loss(self) -> float:
        return self.kill_until_elsewhere(self.scheduler())

    def kill_until_elsewhere(self, node: str) -> float:
        """Kill `node`'s container; seconds until a healthy scheduler runs on another
        master. The node is then started again with its controller."""
        start = time.monotonic()
        self.ha.cluster.kill(node)

        def elsewhere() -> bool:
            running = self.ha.observer.running()
            return len(running) == 1 and running[0] != node and healthy_on(self.ha, running[0])

        wait_for(elsewhere, 120, "a healthy scheduler elsewhere", interval=0.1)
        elapsed = time.monotonic() - start
        self.ha.cluster.start(node)
        self.ha.start([node])
        return elapsed

    def colocated_node_loss(self) -> tuple[str, float]:
        """The scheduler moved onto the ACTIVE's master, which is then killed: at once,
        or once the ACTIVE has handed the lease over (every other trial). Returns the
        metric the state at the kill belongs to (a handover may beat the kill) and the
        seconds until a healthy scheduler runs elsewhere."""
        self.scheduler()
        holder, _ = self.holder()
        assert holder, "no ACTIVE controller"
        node = holder.split("#")[0]
        self.ha.ha(node, f"failover --to {node} --wait 60")
        wait_for(lambda: healthy_on(self.ha, node), 60, "the scheduler healthy there", 0.05)
        self.colocated_trials += 1
        if self.colocated_trials % 2 == 0:

            def handed_over() -> bool:
                now = self.holder()[0]
                return now is not None and now.split("#")[0] != node

            wait_for(handed_over, 60, "the lease handed over", interval=0.05)
        at_kill = self.holder()[0]
        colocated = at_kill is not None and at_kill.split("#")[0] == node
        elapsed = self.kill_until_elsewhere(node)
        return ("node_loss_colocated_s" if colocated else "node_loss_after_handover_s"), elapsed

    def controller_takeover(self) -> float:
        self.scheduler()
        holder, epoch = self.holder()
        assert holder, "no ACTIVE controller"
        start = time.monotonic()
        self.ha.signal_controller(holder.split("#")[0], "KILL")
        wait_for(
            lambda: self.holder()[1] > epoch and self.holder()[0] is not None,
            60,
            "a STANDBY to take the lease",
            interval=0.05,
        )
        return time.monotonic() - start

    def takeover_with_hung_scheduler(self, young: bool) -> float:
        """The ACTIVE controller SIGKILLed and the scheduler SIGSTOPped (its port still
        accepts connections) at the same moment; until a healthy scheduler runs again."""
        node = self.scheduler()
        holder, _ = self.holder()
        assert holder, "no ACTIVE controller"
        if young:
            # A fresh start by the controller (not by systemd, whose restarts count
            # towards the crash-loop rule): move it to the third master, and hang it
            # right after its first healthy answer there.
            node = next(
                n.name for n in self.ha.cluster.nodes if n.name not in (node, holder.split("#")[0])
            )
            self.ha.ha(node, f"failover --to {node} --wait 60")
            wait_for(lambda: healthy_on(self.ha, node), 60, "the moved scheduler healthy", 0.05)
        assert holder.split("#")[0] != node, "the ACTIVE runs the scheduler"
        hung = main_pid(self.ha, node)
        start = time.monotonic()
        self.ha.signal_controller(holder.split("#")[0], "KILL")
        self.ha.cluster.node(node).exec(f"kill -s STOP {hung}")

        def healthy_again() -> bool:
            running = self.ha.observer.running()
            return (
                len(running) == 1
                and main_pid(self.ha, running[0]) not in (0, hung)
                and healthy_on(self.ha, running[0])
            )

        wait_for(healthy_again, 120, "a healthy scheduler again", interval=0.1)
        return time.monotonic() - start

    def poll_cycles(self, trials: int) -> dict[str, list[float]]:
        """One observation of every master, as the ACTIVE runs it (forked from the warm
        ansible-playbook) and cold (a fresh ansible-playbook), interleaved: wall time
        and CPU (the runner's process, its children and the warm server's)."""
        holder, _ = self.holder()
        assert holder
        node = self.ha.cluster.node(holder.split("#")[0])
        script = (
            "import json, os, time\n"
            "from ha_toolkit.nodes import SchedulerNodes\n"
            "from ha_toolkit.warm_ansible import WarmAnsible\n"
            "def cpu(pid):\n"
            "    f = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()\n"
            "    return sum(int(x) for x in f[11:15]) / os.sysconf('SC_CLK_TCK')\n"
            "def idle(pid):\n"
            "    end = time.monotonic() + 10\n"
            "    while open(f'/proc/{pid}/task/{pid}/children').read().strip():\n"
            "        assert time.monotonic() < end, 'a forked run did not end'\n"
            "        time.sleep(0.01)\n"
            "out = {'warm_s': [], 'cold_s': [], 'warm_cpu': [], 'cold_cpu': []}\n"
            "with WarmAnsible() as warm:\n"
            "    nodes = {kind: SchedulerNodes('/etc/ha-toolkit/inventory.yml', 'masters',"
            " 'airflow-scheduler', 'http://127.0.0.1:8974/health', 5, warm=w)"
            " for kind, w in (('warm', warm), ('cold', None))}\n"
            "    nodes['warm'].run({}, 0, 30)  # the server imports Ansible\n"
            f"    for _ in range({trials}):\n"
            "        for kind, n in nodes.items():\n"
            "            idle(warm.pid)\n"
            "            c = cpu(os.getpid()) + cpu(warm.pid); t = time.monotonic()\n"
            "            n.run({}, 0, 30)\n"
            "            out[kind + '_s'].append(time.monotonic() - t)\n"
            "            idle(warm.pid)\n"
            "            out[kind + '_cpu'].append(cpu(os.getpid()) + cpu(warm.pid) - c)\n"
            "print(json.dumps(out))\n"
        )
        _, out = node.exec(
            f'ANSIBLE_HOME=/var/lib/ha-toolkit/ansible /opt/ha-toolkit/bin/python -c "{script}"'
        )
        data = json.loads(out.strip().splitlines()[-1])
        return {
            "poll_cycle_s": data["warm_s"],
            "poll_cycle_cold_s": data["cold_s"],
            "poll_cpu_s": data["warm_cpu"],
            "poll_cpu_cold_s": data["cold_cpu"],
        }

    def print_journals(self, lines: int = 80) -> None:
        """The controllers' last journal lines: what a failed trial leaves to read."""
        for node in self.ha.cluster.nodes:
            _, out = node.exec(
                f"journalctl -u ha-toolkit-controller -o short-precise --no-pager | tail -{lines}",
                check=False,
            )
            print(f"----- {node.name}\n{out}", flush=True)

    def controller_cost(self, polls: int, poll_interval: float) -> dict[str, list[float]]:
        holder, _ = self.holder()
        assert holder
        node = self.ha.cluster.node(holder.split("#")[0])

        def cpu_seconds() -> float:
            # utime + stime + cutime + cstime of the controller and of every process
            # under it (the warm ansible-playbook server, whose children time holds
            # the forked runs; a run in progress): every Ansible run it has waited
            # for. systemd's CPU accounting is not delegated in these containers.
            _, out = node.exec(
                'python3 -c "import os\n'
                "main = int(os.popen('systemctl show -p MainPID --value "
                "ha-toolkit-controller').read())\n"
                "procs = {}\n"
                "for p in filter(str.isdigit, os.listdir('/proc')):\n"
                "    try: f = open(f'/proc/{p}/stat').read().rsplit(')', 1)[1].split()\n"
                "    except OSError: continue\n"
                "    procs[int(p)] = (int(f[1]), sum(int(x) for x in f[11:15]))\n"
                "tree, todo = set(), [main]\n"
                "while todo:\n"
                "    p = todo.pop(); tree.add(p)\n"
                "    todo += [c for c, (pp, _) in procs.items() if pp == p and c not in tree]\n"
                "print(sum(procs[p][1] for p in tree if p in procs) / os.sysconf('SC_CLK_TCK'))\""
            )
            return float(out.strip().splitlines()[-1])

        pct, per_poll, rss, server_rss = [], [], [], []
        for _ in range(polls):
            t0, c0 = time.monotonic(), cpu_seconds()
            time.sleep(poll_interval)  # a measurement window, not synchronisation
            t1, c1 = time.monotonic(), cpu_seconds()
            cpu = c1 - c0
            pct.append(100 * cpu / (t1 - t0))
            per_poll.append(cpu * poll_interval / (t1 - t0))
            _, out = node.exec(
                "m=$(systemctl show -p MainPID --value ha-toolkit-controller); "
                "grep VmRSS /proc/$m/status; "
                "for c in $(cat /proc/$m/task/*/children); do "
                "grep -qa 'warm_ansible.serve' /proc/$c/cmdline 2>/dev/null "
                "&& grep VmRSS /proc/$c/status; done; true"
            )
            values = [int(line.split()[1]) / 1024 for line in out.strip().splitlines()]
            rss.append(values[0])
            server_rss.append(sum(values[1:]))
        return {
            "controller_cpu_pct": pct,
            "controller_cpu_s_per_poll": per_poll,
            "controller_rss_mb": rss,
            "warm_server_rss_mb": server_rss,
        }


@contextmanager
def controller_cluster(kind: str, timings: dict[str, float], tmp: Path) -> Iterator[Bench]:
    client = docker.from_env()
    remove_stale(client)
    base = (REPO / ".build" / "node-image").read_text().strip()
    image = controller_image(client, base, REPO / ".build")

    def factory(size: int) -> Cluster:
        return Cluster(
            image, tmp / f"cluster-{kind}-{time.monotonic_ns()}", size=size, client=client
        ).create()

    gen = make_controller_cluster(kind, factory, tmp, timings)
    ha = next(gen)
    try:
        ha.observer.start()
        yield Bench(ha, kind)
    finally:
        ha.observer.stop()
        for _ in gen:
            pass


def run_trials(
    fn: Callable[[], float], trials: int, label: str, bench: Bench | None = None
) -> list[float]:
    values = []
    for i in range(trials):
        try:
            values.append(fn())
        except Exception:
            if bench is not None:
                bench.print_journals()
            raise
        print(f"  {label} {i + 1}/{trials}: {values[-1]:.2f} s", flush=True)
    return values


def colocated_trials(bench: Bench, trials: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"node_loss_colocated_s": [], "node_loss_after_handover_s": []}
    for i in range(trials):
        metric, value = bench.colocated_node_loss()
        out[metric].append(value)
        print(f"  {metric} {i + 1}/{trials}: {value:.2f} s", flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument(
        "--default-trials", type=int, default=10, help="node losses at the default timings"
    )
    parser.add_argument("--backends", default="mysql,zookeeper")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "failover.json")
    args = parser.parse_args()
    results: dict[str, Any] = {
        "settings": {
            "trials": args.trials,
            "timing_trials": TIMING,
            "cost_trials": DEFAULT,
            "move_wait_s": round(move_wait(Timings(**TIMING)), 2),
            "machine": "2 cores, shared; one run, compare ratios not absolutes",
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    }
    for kind in args.backends.split(","):
        print(f"== {kind}", flush=True)
        values: dict[str, list[float]] = {}
        with tempfile.TemporaryDirectory(prefix="ha-bench-") as tmp:
            with controller_cluster(kind, TIMING, Path(tmp) / "timing") as bench:
                values["scheduler_restart_s"] = run_trials(
                    bench.scheduler_restart, args.trials, "scheduler restart", bench
                )
                values["controller_takeover_s"] = run_trials(
                    bench.controller_takeover, args.trials, "controller takeover", bench
                )
                values["node_loss_s"] = run_trials(bench.node_loss, args.trials, "node loss", bench)
                values.update(colocated_trials(bench, 2 * args.trials))
                for young, metric in (
                    (False, "takeover_with_hung_scheduler_s"),
                    (True, "takeover_with_hung_young_scheduler_s"),
                ):
                    values[metric] = run_trials(
                        lambda young=young: bench.takeover_with_hung_scheduler(young),
                        args.trials,
                        metric,
                        bench,
                    )
                values.update(bench.poll_cycles(args.trials))
            with controller_cluster(kind, DEFAULT, Path(tmp) / "cost") as bench:
                bench.scheduler()
                values.update(bench.controller_cost(args.trials, DEFAULT["poll_interval"]))
                values["node_loss_default_s"] = run_trials(
                    bench.node_loss, args.default_trials, "node loss at the defaults", bench
                )
        results[kind] = {m: summary(v, TARGETS[m]) for m, v in values.items() if v}
        print(json.dumps(results[kind], indent=2), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
