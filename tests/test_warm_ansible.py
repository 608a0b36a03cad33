"""The warm ansible-playbook (ha_toolkit.warm_ansible): real Ansible runs on this machine
(connection local), through the forked path and every way back to the cold one."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ha_toolkit import warm_ansible
from ha_toolkit.nodes import run_playbook
from ha_toolkit.warm_ansible import WarmAnsible

INVENTORY = {
    "all": {
        "hosts": {
            "here": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
        }
    }
}
# Reports the parent of the ansible-playbook process that ran it: the warm server
# when the run was forked, the test itself (through ansible-runner) when cold.
PLAYBOOK = """
- name: Report who ran this
  hosts: all
  gather_facts: false
  tasks:
    - name: A change
      ansible.builtin.command: "true"
      changed_when: true
    - name: Report the parent of ansible-playbook
      ansible.builtin.debug:
        msg:
          worker: "{{ lookup('pipe', 'echo $PPID') }}"
          playbook_parent: >-
            {{ lookup('pipe', "awk '{print $4}' /proc/$(awk '{print $4}' /proc/$PPID/stat)/stat") }}
"""
SLEEPER = """
- name: Hang
  hosts: all
  gather_facts: false
  tasks:
    - name: Record the pid of ansible-playbook
      ansible.builtin.debug:
        msg: >-
          {{ lookup('pipe', "awk '{print $4}' /proc/$PPID/stat > PIDFILE") }}
    - name: Sleep
      ansible.builtin.command:
        argv: [sleep, "SECONDS"]
"""


@pytest.fixture
def warm(tmp_path: Path) -> Iterator[WarmAnsible]:
    with WarmAnsible(str(tmp_path)) as server:
        yield server


def run(tmp_path: Path, text: str, **kwargs: object) -> tuple[str, str, int, dict[str, object]]:
    playbook = tmp_path / f"play-{secrets.token_hex(4)}.yml"
    playbook.write_text(text)
    result = run_playbook(playbook, INVENTORY, data_dir=tmp_path, **kwargs)  # type: ignore[arg-type]
    host = result.hosts.get("here")
    return (
        result.status,
        host.status if host else "none",
        host.changed if host else -1,
        host.report if host else {},
    )


def test_a_warm_run_is_forked_by_the_server_and_reports_like_a_cold_one(
    tmp_path: Path, warm: WarmAnsible
) -> None:
    cold = run(tmp_path, PLAYBOOK)
    first = run(tmp_path, PLAYBOOK, warm=warm)
    second = run(tmp_path, PLAYBOOK, warm=warm)
    assert cold[:3] == first[:3] == second[:3] == ("successful", "ok", 1)
    assert int(str(cold[3]["playbook_parent"])) == os.getpid()
    for forked in (first, second):
        assert int(str(forked[3]["playbook_parent"])) == warm.pid


def test_a_run_with_another_ansible_configuration_runs_cold(
    tmp_path: Path, warm: WarmAnsible, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert int(str(run(tmp_path, PLAYBOOK, warm=warm)[3]["playbook_parent"])) == warm.pid
    # Ansible read its configuration once, when the server imported it.
    monkeypatch.setenv("ANSIBLE_FORKS", "3")
    status = run(tmp_path, PLAYBOOK, warm=warm)
    assert status[:3] == ("successful", "ok", 1)
    assert int(str(status[3]["playbook_parent"])) != warm.pid


def test_without_a_server_the_client_runs_the_command_itself(tmp_path: Path) -> None:
    marker = secrets.token_hex(8)
    proc = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            warm_ansible.__file__,
            str(tmp_path / "no-server.sock"),
            "/bin/echo",
            marker,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (proc.returncode, proc.stdout.strip()) == (0, marker)


def test_a_dead_server_leaves_the_runs_cold(tmp_path: Path, warm: WarmAnsible) -> None:
    assert warm.pid is not None
    os.kill(warm.pid, 9)
    deadline = time.monotonic() + 10
    while warm.alive and time.monotonic() < deadline:
        time.sleep(0.05)
    status = run(tmp_path, PLAYBOOK, warm=warm)
    assert status[:3] == ("successful", "ok", 1)
    assert int(str(status[3]["playbook_parent"])) == os.getpid()


def _processes_with(argument: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and argument in (entry / "cmdline").read_text():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _group_alive(pgid: int) -> bool:
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def test_a_timed_out_warm_run_leaves_no_ansible_process_behind(
    tmp_path: Path, warm: WarmAnsible
) -> None:
    # A unique duration names this run's sleep among every process on the machine.
    seconds = f"300.{secrets.randbelow(10**6):06d}"
    pidfile = tmp_path / "ansible-playbook.pid"
    text = SLEEPER.replace("SECONDS", seconds).replace("PIDFILE", str(pidfile))
    try:
        status = run(tmp_path, text, warm=warm, timeout=5)
        assert status[0] == "timeout"
        playbook = int(pidfile.read_text())
        assert playbook != warm.pid
        # The forked ansible-playbook led its own group, and the group is gone.
        # (The sleep itself is not in it: a local connection starts each module in
        # a session of its own, cold or warm; over SSH it ends with the connection.)
        deadline = time.monotonic() + 15
        while _group_alive(playbook) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _group_alive(playbook)
        # The server outlives the run and serves the next one.
        assert int(str(run(tmp_path, PLAYBOOK, warm=warm)[3]["playbook_parent"])) == warm.pid
    finally:
        for pid in _processes_with(seconds):
            os.kill(pid, 9)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has exited; reaping it is its new parent's business


def test_the_server_exits_when_its_owner_dies(tmp_path: Path) -> None:
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from ha_toolkit.warm_ansible import WarmAnsible\n"
            f"w = WarmAnsible({str(tmp_path)!r}).start()\n"
            "print(w.pid, flush=True)\n"
            "time.sleep(600)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None
        server = int(owner.stdout.readline())
        owner.kill()
        owner.wait()
        deadline = time.monotonic() + 10
        while _alive(server) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(server)
    finally:
        owner.kill()


def test_the_server_loads_the_plugins_but_never_ansible_runners_callback(
    tmp_path: Path,
) -> None:
    # A run's plugins are loaded once, in the server; ansible-runner's event callback,
    # on the callback path as under runner, is left for each run to load.
    import ansible_runner.display_callback.callback as runner_callbacks

    probe = (
        "import os, sys\n"
        "from ha_toolkit import warm_ansible\n"
        "warm_ansible._warm_up(dict(os.environ), os.getcwd())\n"
        "from ansible import constants as C\n"
        "print(C.config.has_configuration_definition('connection', 'ssh'),\n"
        "      C.config.has_configuration_definition('callback', 'default'),\n"
        "      any('awx_display' in name for name in sys.modules))\n"
    )
    env = {
        **os.environ,
        "ANSIBLE_HOME": str(tmp_path / "ansible"),
        "ANSIBLE_CALLBACK_PLUGINS": os.path.dirname(runner_callbacks.__file__),
        "ANSIBLE_STDOUT_CALLBACK": "awx_display",
    }
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "False"]
