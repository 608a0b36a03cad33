"""Where one poll's CPU goes, and what each lever saves (issue 10: profile first).

On the bench harness (three node containers, controllers installed from a wheel), on the
ACTIVE's master, as the controller runs it: one observation of every master, forked from
the warm ansible-playbook. Writes bench/results/poll_profile.json:

  cpu_split_s      per run, median over the trials, as shipped: the controller's process
                   (ansible-runner, its event handling, the client's pseudo-terminal) and
                   the warm server's forked run (Ansible, its workers, ssh)
  levers           CPU and wall per run, median, the variants interleaved in one loop:
                     before      node-action through ansible.builtin.command, a server
                                 that imports Ansible only (the code before the levers;
                                 the event files are the shipped ones throughout)
                     raw         ansible.builtin.raw instead (no module sent, no Python
                                 started on the node for it)
                     plugins     command, with the server loading the run's plugins once
                     shipped     raw and plugins
  event_files      a lever tried and dropped (no measurable gain): ansible-runner keeping
                   every event as a JSON file (as shipped) or none; CPU per run, median
  controller_top   the controller side's functions by own time (cProfile over the trials)

Not a test: nothing is asserted. Usage: .venv/bin/python bench/profile_poll.py [--trials N]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.failover import TIMING, controller_cluster  # noqa: E402

# Runs inside the ACTIVE's container with the controller's own interpreter.
SCRIPT = r"""
import cProfile, json, os, pstats, subprocess, sys, time
from ha_toolkit import nodes, warm_ansible
from ha_toolkit.nodes import SchedulerNodes
from ha_toolkit.warm_ansible import WarmAnsible

TRIALS = int(os.environ['TRIALS'])
COMMAND_PLAYBOOK = '/root/scheduler_command.yml'
text = open(os.path.join(os.path.dirname(nodes.__file__), 'playbooks', 'scheduler.yml')).read()
head, task = text.split('      ansible.builtin.raw: >-', 1)
expr, rest = task.split('| map(', 1)
rest = rest.split('      timeout:', 1)[1]
open(COMMAND_PLAYBOOK, 'w').write(
    head.replace('    ansible_ssh_use_tty: false\n', '')
    + '      ansible.builtin.command:\n        argv: >-\n          {{ '
    + expr.strip().lstrip('{').strip()[1:-1] + ' }}\n'
    + '      timeout:' + rest)

class ImportOnly(WarmAnsible):
    # The server as it was before the plugin lever: it imports Ansible, loads nothing.
    def start(self):
        code = ('import sys; from ha_toolkit import warm_ansible as w; '
                'w._load_plugins = lambda: None; w.serve(sys.argv[1])')
        self._proc = subprocess.Popen([sys.executable, '-c', code, self.socket_path],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True)
        end = time.monotonic() + 5
        while not os.path.exists(self.socket_path) and time.monotonic() < end:
            time.sleep(0.01)
        return self

def cpu(pid):
    f = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()
    return sum(int(x) for x in f[11:15]) / os.sysconf('SC_CLK_TCK')

def idle(pid):
    end = time.monotonic() + 10
    while open(f'/proc/{pid}/task/{pid}/children').read().strip():
        assert time.monotonic() < end, 'a forked run did not end'
        time.sleep(0.01)

keep_all = nodes._EventCollector.__call__  # as shipped: runner keeps every event

def keep_none(self, event):
    keep_all(self, event)
    return False  # ansible-runner writes no job_events file for it

def scheduler_nodes(warm):
    n = SchedulerNodes('/etc/ha-toolkit/inventory.yml', 'masters', 'airflow-scheduler',
                       'http://127.0.0.1:8974/health', 5, warm=warm)
    n.run({}, 0, 30)  # the server imports (and loads) Ansible
    return n

def measure(n, warm, playbook='scheduler.yml'):
    nodes.SCHEDULER_PLAYBOOK = playbook
    idle(warm.pid)
    c, t = cpu(os.getpid()) + cpu(warm.pid), time.monotonic()
    status = n.run({}, 0, 30)
    wall = time.monotonic() - t
    idle(warm.pid)
    nodes.SCHEDULER_PLAYBOOK = 'scheduler.yml'
    assert all(s.reachable and s.running is not None for s in status.values()), status
    return cpu(os.getpid()) + cpu(warm.pid) - c, wall

out = {'controller_s': [], 'ansible_s': [], 'keep_all_s': [], 'keep_none_s': []}
VARIANTS = (('before', False, COMMAND_PLAYBOOK), ('raw', False, 'scheduler.yml'),
            ('plugins', True, COMMAND_PLAYBOOK), ('shipped', True, 'scheduler.yml'))
for name, _, _ in VARIANTS:
    out[name + '_cpu_s'], out[name + '_wall_s'] = [], []
profile = cProfile.Profile()
with WarmAnsible() as warm, ImportOnly() as cold_plugins:
    loaded, bare = scheduler_nodes(warm), scheduler_nodes(cold_plugins)
    for _ in range(TRIALS):
        idle(warm.pid)
        me, server = cpu(os.getpid()), cpu(warm.pid)
        profile.enable()
        loaded.run({}, 0, 30)
        profile.disable()
        idle(warm.pid)
        out['controller_s'].append(cpu(os.getpid()) - me)
        out['ansible_s'].append(cpu(warm.pid) - server)
    for _ in range(TRIALS):
        for name, plugins, playbook in VARIANTS:
            n, server = (loaded, warm) if plugins else (bare, cold_plugins)
            c, w = measure(n, server, playbook)
            out[name + '_cpu_s'].append(c)
            out[name + '_wall_s'].append(w)
        for kind, handler in (('keep_all_s', keep_all), ('keep_none_s', keep_none)):
            nodes._EventCollector.__call__ = handler
            out[kind].append(measure(loaded, warm)[0])
        nodes._EventCollector.__call__ = keep_all
stats = pstats.Stats(profile)
top = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:15]
out['controller_top'] = [
    {'function': f'{os.path.basename(f)}:{line}({name})', 'calls': nc,
     'own_s_per_run': round(tt / TRIALS, 4), 'cumulative_s_per_run': round(ct / TRIALS, 4)}
    for (f, line, name), (cc, nc, tt, ct, _) in top
]
print(json.dumps(out))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument(
        "--out", type=Path, default=REPO / "bench" / "results" / "poll_profile.json"
    )
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="ha-profile-") as tmp,
        controller_cluster("mysql", TIMING, Path(tmp) / "profile") as bench,
    ):
        bench.scheduler()
        holder, _ = bench.holder()
        assert holder, "no ACTIVE controller"
        node = bench.ha.cluster.node(holder.split("#")[0])
        script = "/root/profile_poll.py"
        node.put_file(script, SCRIPT.encode())
        _, raw = node.exec(
            f"TRIALS={args.trials} ANSIBLE_HOME=/var/lib/ha-toolkit/ansible "
            f"/opt/ha-toolkit/bin/python {script}"
        )
    data = json.loads(raw.strip().splitlines()[-1])

    def median(key: str) -> float:
        return round(sorted(data[key])[len(data[key]) // 2], 3)

    result = {
        "settings": {
            "trials": args.trials,
            "masters": 3,
            "machine": "2 cores, shared; one run, compare ratios not absolutes",
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        "cpu_split_s": {
            "controller_process": median("controller_s"),
            "ansible_forked_run": median("ansible_s"),
        },
        "levers": {
            name: {"cpu_s": median(f"{name}_cpu_s"), "wall_s": median(f"{name}_wall_s")}
            for name in ("before", "raw", "plugins", "shipped")
        },
        "event_files": {
            "keep_all_s": median("keep_all_s"),
            "keep_none_s": median("keep_none_s"),
        },
        "controller_top": data["controller_top"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
