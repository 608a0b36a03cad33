"""A warm ansible-playbook: Ansible is imported once, and each run is a fork.

Why: one poll is one run of playbooks/scheduler.yml, and most of its CPU was
Python starting and importing Ansible (about 0.45 s of the 0.95 s a run cost on
a demo master; a forked run about 0.2 s, 0.4 s with ansible-runner and the
client around it). The playbook, the inventory,
the modules and the SSH connections stay exactly what they were.

How: the controller starts a server (``python -m ha_toolkit.warm_ansible serve
SOCKET``) as its own child. ansible-runner then starts this file as a script
instead of ansible-playbook (``binary``: the client, standard library only).
The client sends the server its command line, environment and working
directory, and passes its stdin, stdout and stderr (a pseudo-terminal of
ansible-runner). The server forks; the child takes the descriptors, the
environment and the directory, runs ansible-playbook's own entry point, and
sends the exit status back; the client exits with it.

Safety: nothing depends on the warm path, and its failures make no run
happen twice.
- Before the server has forked anything, any failure (no server, a refused
  connection, an environment the server did not import Ansible with) makes the
  client exec the real ansible-playbook itself: a cold run, as before.
- Ansible reads its configuration once, at import (ansible.constants). The
  server imports it with the environment and directory of the first request
  and answers COLD to any later request whose ANSIBLE_* variables, HOME or
  config file differ.
- Once the child exists, the client waits for it and never runs the playbook
  itself: a lost server or child ends the run as failed (exit 250).
- The child leads its own process group. When the client dies (ansible-runner
  kills it on a timeout or a cancel), the socket closes and the child kills
  its group: nothing of a run outlives the run.
- The server exits when its parent (the controller) is gone.

Plugins: the server also loads the plugins every run loads (connection, shell,
become, inventory, vars and cache plugins, and Ansible's own callbacks) once, and
with them the YAML of their documented configuration and of ansible.builtin's routing
(about 0.2 s of CPU a run on a demo master). ansible-runner's event callback is the
one plugin never loaded here: it binds, as it is imported, the artifact directory of
the run that loads it, so a server that loaded it once made every later run write
its events into the first run's (deleted) directory, and those runs failed.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import socket
import struct
import sys
import time
from typing import Any

COLD = -1000  # the server's answer: run ansible-playbook yourself
LOST = 250  # the client's exit status when a forked run ended without reporting
# What each run's own set-up of the collection loader warns, the server having done it.
_FINDER_CONFIGURED = "AnsibleCollectionFinder has already been configured"
_HEADER = struct.Struct("!I")
_STATUS = struct.Struct("!i")
# Environment variables that Ansible reads while it is imported, besides ANSIBLE_*.
_IMPORT_ENV = ("HOME",)
# What every run of playbooks/scheduler.yml imports (importing more saved nothing
# measurable; loading plugins is not safe, see the module docstring).
_WARM_MODULES = (
    "ansible.cli.playbook",
    "ansible.executor.playbook_executor",
    "ansible.executor.process.worker",
    "ansible.executor.task_queue_manager",
    "ansible.inventory.manager",
    "ansible.plugins.action.command",
    "ansible.plugins.callback.default",
    "ansible.plugins.connection.ssh",
    "ansible.plugins.shell.sh",
    "ansible.plugins.strategy.linear",
)


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("peer closed")
        data += chunk
    return data


# -- client (run by ansible-runner as `binary`; standard library only) ---------------------------
def client(socket_path: str, fallback: str, argv: list[str]) -> int:
    """Run `fallback argv` through the server at `socket_path`, or cold."""
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(socket_path)
        payload = json.dumps(
            {"argv": [fallback, *argv], "env": dict(os.environ), "cwd": os.getcwd()}
        ).encode()
        socket.send_fds(conn, [_HEADER.pack(len(payload))], [0, 1, 2])
        conn.sendall(payload)
        first = conn.recv(_STATUS.size)
    except OSError:
        first = b""
    if not first:
        # Nothing was forked for this request (no server, or it died before
        # answering): the cold run, exactly what ansible-runner would have started.
        os.execv(fallback, [fallback, *argv])
    try:
        status = int(_STATUS.unpack(first + _recv_exactly(conn, _STATUS.size - len(first)))[0])
    except (OSError, ConnectionError):
        return LOST
    if status == COLD:
        os.execv(fallback, [fallback, *argv])
    return status


# -- server (a child of the controller) -----------------------------------------------------------
def _import_signature(env: dict[str, str], cwd: str) -> tuple[Any, ...]:
    keys = sorted(k for k in env if k.startswith("ANSIBLE_") or k in _IMPORT_ENV)
    # A config file in the working directory would be read at import as well.
    local_cfg = os.path.exists(os.path.join(cwd, "ansible.cfg"))
    return (*((k, env[k]) for k in keys), ("./ansible.cfg", local_cfg))


def _warm_up(env: dict[str, str], cwd: str) -> None:
    """Import and load what every run of ansible-playbook does, configured by `env`
    and `cwd`."""
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    try:
        for module in _WARM_MODULES:
            importlib.import_module(module)
        _load_plugins()
    finally:
        os.chdir("/")


def _load_plugins() -> None:
    """Set up the collection loader as ansible-playbook does first (each run's own
    call then finds it set up), and load every plugin a run loads but the event
    callbacks that are not Ansible's own (see the module docstring)."""
    import warnings

    import ansible.plugins.callback
    from ansible.plugins import loader

    loader.init_plugin_loader([])
    warnings.filterwarnings("ignore", message=_FINDER_CONFIGURED)
    for plugins in (
        loader.connection_loader,
        loader.shell_loader,
        loader.become_loader,
        loader.inventory_loader,
        loader.vars_loader,
        loader.cache_loader,
    ):
        list(plugins.all(class_only=True))
    own = os.path.dirname(os.path.abspath(ansible.plugins.callback.__file__))
    for entry in sorted(os.listdir(own)):
        name, ext = os.path.splitext(entry)
        if ext != ".py" or name.startswith("_"):
            continue
        found = loader.callback_loader.find_plugin_with_context(name)
        # A callback of the same name elsewhere on the path (ansible-runner's) is not ours.
        if found.resolved and os.path.dirname(os.path.abspath(found.plugin_resolved_path)) == own:
            loader.callback_loader.get(name, class_only=True)


def _run_child(conn: socket.socket, fds: list[int], request: dict[str, Any]) -> None:
    """In the forked child: become the ansible-playbook run of `request`; never returns."""
    import atexit
    import signal
    import threading

    os.setpgid(0, 0)
    # The server's handlers are not the run's: its SIGTERM handler would turn a
    # terminated run into a successful one, its SIGCHLD handler would reap
    # Ansible's own workers.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    # The server's exit handlers (its Ansible temporary directory, shared by every
    # run) are not this run's to call.
    atexit._clear()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = list(request["argv"])
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(line_buffering=os.isatty(stream.fileno()))
    finished = threading.Event()

    def kill_run_when_client_goes() -> None:
        try:
            while conn.recv(1):
                pass
        except OSError:
            pass
        if not finished.is_set():
            os.killpg(0, signal.SIGKILL)

    threading.Thread(target=kill_run_when_client_goes, daemon=True).start()
    status = 1
    try:
        from ansible.cli.playbook import PlaybookCLI

        PlaybookCLI.cli_executor(sys.argv)
        status = 0
    except SystemExit as done:
        status = done.code if isinstance(done.code, int) else 1
    except BaseException:  # any escape is a failed run, reported as one
        import traceback

        traceback.print_exc()
        status = 1
    finally:
        try:
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            finished.set()
            try:
                conn.sendall(_STATUS.pack(status))
            finally:
                os._exit(status & 0xFF)


def _reap() -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def serve(socket_path: str) -> None:
    """Accept requests on `socket_path` until the parent process is gone."""
    import signal

    parent = os.getppid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(16)
    listener.settimeout(1.0)
    # Reaped at once: a run's CPU time then counts in this process's children
    # time as soon as the run has ended.
    signal.signal(signal.SIGCHLD, lambda *_: _reap())
    signature: tuple[Any, ...] | None = None
    while os.getppid() == parent:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        fds: list[int] = []
        try:
            conn.settimeout(5.0)
            header, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
            if not header or len(fds) != 3:
                continue
            header += _recv_exactly(conn, _HEADER.size - len(header))
            request = json.loads(_recv_exactly(conn, _HEADER.unpack(header)[0]))
            wanted = _import_signature(request["env"], request["cwd"])
            if signature is None:
                _warm_up(request["env"], request["cwd"])
                signature = wanted
            if wanted != signature:
                conn.sendall(_STATUS.pack(COLD))
                continue
            conn.settimeout(None)
            if os.fork() == 0:
                listener.close()
                _run_child(conn, fds, request)
        except (OSError, ValueError, KeyError, ConnectionError):
            continue  # the client sees the connection close before a fork: it runs cold
        finally:
            for fd in fds:
                os.close(fd)
            conn.close()


class WarmAnsible:
    """The server, owned by the process that runs playbooks (the controller).

    A context manager: the server is this process's child, stopped by its
    recorded PID on exit, and it also exits by itself when this process dies.
    """

    def __init__(self, data_dir: str | None = None) -> None:
        import tempfile

        self._dir = tempfile.mkdtemp(prefix="htk-warm-", dir=data_dir)
        self.socket_path = os.path.join(self._dir, "sock")
        self.fallback = _ansible_playbook()
        self._proc: Any = None

    def start(self) -> WarmAnsible:
        import subprocess

        self._proc = subprocess.Popen(
            [sys.executable, "-m", "ha_toolkit.warm_ansible", "serve", self.socket_path],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own group: a Ctrl-C at the controller's terminal is the controller's to handle.
            start_new_session=True,
        )
        # Until it listens, runs go cold; waiting here (about 50 ms) makes the
        # first poll warm already.
        deadline = time.monotonic() + 5
        while not os.path.exists(self.socket_path) and self.alive and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def runner_command(self, playbook: str) -> tuple[str, list[str]]:
        """ansible-runner's `binary` and the arguments before its own (-i, -e, ...)."""
        client_file = os.path.abspath(__file__)
        return sys.executable, ["-I", "-S", client_file, self.socket_path, self.fallback, playbook]

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else int(self._proc.pid)

    def close(self) -> None:
        import shutil
        import subprocess

        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> WarmAnsible:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ansible_playbook() -> str:
    import shutil

    beside = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    return beside if os.path.exists(beside) else (shutil.which("ansible-playbook") or beside)


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"] and len(argv) == 2:
        import signal

        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        serve(argv[1])
        return 0
    if len(argv) >= 2:
        return client(argv[0], argv[1], argv[2:])
    print(
        "usage: warm_ansible.py SOCKET ANSIBLE_PLAYBOOK [ARGS...] | serve SOCKET", file=sys.stderr
    )
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
