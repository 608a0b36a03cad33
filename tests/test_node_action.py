"""node-action's fencing token: the highest epoch a node has seen, kept on the node under an
exclusive lock (node_action.Fence), in a temporary state folder; its health check against
local sockets; its report, with `systemctl show` faked. Nothing here touches systemd."""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ha_toolkit import node_action
from ha_toolkit.node_action import (
    EPOCH_FILE,
    Fence,
    health,
    health_check,
    read_epoch,
    seen_healthy,
)


def admit(state_dir: Path, epoch: int) -> tuple[bool, int]:
    fence = Fence(str(state_dir))
    try:
        return fence.admit(epoch)
    finally:
        fence.close()


def test_epochs_are_admitted_in_order_and_a_lower_one_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"  # created by the first action
    assert read_epoch(str(state)) == 0
    assert admit(state, 3) == (True, 0)
    assert (state / EPOCH_FILE).read_text() == "3\n"
    assert admit(state, 3) == (True, 3)  # the same ACTIVE again
    assert admit(state, 5) == (True, 3)
    assert admit(state, 4) == (False, 5)  # a deposed ACTIVE
    assert read_epoch(str(state)) == 5  # a refusal records nothing
    assert sorted(p.name for p in state.iterdir()) == [EPOCH_FILE, "epoch.lock"]  # no temp file


def test_the_lock_is_held_for_the_whole_action(tmp_path: Path) -> None:
    first = Fence(str(tmp_path))
    assert first.admit(7) == (True, 0)
    second: list[tuple[bool, int]] = []
    waiting = threading.Thread(target=lambda: second.append(admit(tmp_path, 6)))
    waiting.start()
    waiting.join(0.3)
    # A second action (another process in real life) waits while the first one acts...
    assert waiting.is_alive() and not second
    first.close()
    waiting.join(5)
    # ...and then judges its epoch against what the first recorded.
    assert second == [(False, 7)]


# -- the health check and the "seen healthy" mark (issue 10) ------------------------------------
class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def answering() -> Iterator[Callable[[int], str]]:
    """`answering(status)`: the URL of a local server that answers with `status`."""
    servers: list[http.server.HTTPServer] = []

    def serve(status: int) -> str:
        handler = type("Handler", (_Health,), {"status": status})
        server = http.server.HTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/health"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def test_health_check_tells_starting_from_hung_from_unhealthy(
    answering: Callable[[int], str],
) -> None:
    assert health_check(answering(200)) == "ok" and health(answering(204)) is True
    assert health_check(answering(503)) == "failed" and health(answering(503)) is False
    assert health_check(None) is None and health(None) is None
    with socket.socket() as closed:  # a port nothing listens on: still starting
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    assert health_check(f"http://127.0.0.1:{port}/health", timeout=1) == "refused"
    # Listening (the kernel completes the connection) but never answering: a process
    # stopped with SIGSTOP, or one that accepts and then hangs.
    with socket.socket() as stopped:
        stopped.bind(("127.0.0.1", 0))
        stopped.listen(8)
        url = f"http://127.0.0.1:{stopped.getsockname()[1]}/health"
        started = time.monotonic()
        assert health_check(url, timeout=0.3) == "timeout"
        assert time.monotonic() - started < 2


def test_seen_healthy_is_kept_per_start_of_the_unit(tmp_path: Path) -> None:
    state = str(tmp_path / "state")  # created by the first mark
    assert not seen_healthy(state, "airflow-scheduler", "inv-1", healthy=False)
    assert seen_healthy(state, "airflow-scheduler", "inv-1", healthy=True)
    # A later run (another process, another ACTIVE) finds the mark for this start...
    assert seen_healthy(state, "airflow-scheduler", "inv-1", healthy=False)
    # ...but not for the next start, nor for another unit.
    assert not seen_healthy(state, "airflow-scheduler", "inv-2", healthy=False)
    assert not seen_healthy(state, "other", "inv-1", healthy=False)
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["healthy-airflow-scheduler"]


def test_status_reports_restarts_invocation_and_health(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    answering: Callable[[int], str],
) -> None:
    started_usec = int((time.monotonic() - 5.0) * 1e6)
    shown = (
        "ActiveState=active\nSubState=running\nMainPID=42\nLoadState=loaded\n"
        f"InactiveExitTimestampMonotonic={started_usec - 60_000_000}\n"
        f"ExecMainStartTimestampMonotonic={started_usec}\n"  # restarted by systemd since
        "NRestarts=3\nInvocationID=abc123\n"
    )

    def systemctl_show(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        assert argv[:2] == ["systemctl", "show"] and "NRestarts,InvocationID" in argv[-1]
        assert "ExecMainStartTimestampMonotonic" in argv[-1]
        return subprocess.CompletedProcess(argv, 0, shown, "")

    monkeypatch.setattr(node_action.subprocess, "run", systemctl_show)

    def status(url: str) -> dict[str, object]:
        argv = ["status", "--unit", "airflow-scheduler", "--health-url", url]
        assert node_action.main([*argv, "--state-dir", str(tmp_path)]) == 0
        return dict(json.loads(capsys.readouterr().out))

    first = status(answering(200))
    assert (first["n_restarts"], first["invocation_id"]) == (3, "abc123")
    assert 5.0 <= first["since_start"] < 15.0  # since the main process's last start
    assert (first["healthy"], first["health_check"], first["seen_healthy"]) == (True, "ok", True)
    later = status(answering(503))  # the same start, unhealthy now: warm-up is over
    assert (later["healthy"], later["health_check"], later["seen_healthy"]) == (
        False,
        "failed",
        True,
    )


def test_a_queued_job_counts_as_a_running_scheduler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # systemd 252 in the node image, a `start --no-block` waiting for a unit it is
    # ordered after: inactive, dead, and a job.
    shown = "ActiveState=inactive\nSubState=dead\nMainPID=0\nLoadState=loaded\nJob={job}\n"
    job = "121"

    def systemctl_show(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        assert argv[:2] == ["systemctl", "show"] and argv[-1].endswith(",Job")
        return subprocess.CompletedProcess(argv, 0, shown.format(job=job), "")

    monkeypatch.setattr(node_action.subprocess, "run", systemctl_show)

    def status() -> dict[str, object]:
        argv = ["status", "--unit", "airflow-scheduler", "--state-dir", str(tmp_path)]
        assert node_action.main(argv) == 0
        return dict(json.loads(capsys.readouterr().out))

    queued = status()
    assert (queued["running"], queued["pending_job"], queued["since_start"]) == (True, True, 0.0)
    job = ""
    assert (status()["running"], status()["pending_job"]) == (False, False)
