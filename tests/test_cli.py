"""The `ha-toolkit` command as a user runs it: exit codes and one-line errors."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from ha_toolkit import __version__, cli
from ha_toolkit.config import ServiceConfig
from ha_toolkit.metastore import Lease
from ha_toolkit.metastore.memory import MemoryMetastore, MemoryServer
from tests.harness.mariadb import MariaDBServer
from tests.harness.procs import Process, free_port, wait_for

CLI = [str(Path(sys.executable).parent / "ha-toolkit")]
SECRET = "s3cret-Pa55word"


def run(*args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    argv = [*CLI, *(["--config", str(config)] if config else []), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def write_config(tmp_path: Path, **overrides: object) -> Path:
    inventory = tmp_path / "inventory.yml"
    if not inventory.exists():
        inventory.write_text(
            yaml.safe_dump(
                {
                    "all": {
                        "children": {"masters": {"hosts": {"node1": {"ansible_host": "127.0.0.1"}}}}
                    }
                }
            )
        )
    password = tmp_path / "password"
    password.write_text(SECRET)
    password.chmod(0o600)
    config: dict[str, object] = {
        "node_name": "node1",
        "inventory": str(inventory),
        "metastore": {
            "type": "mysql",
            "dsn": f"mysql://ha@127.0.0.1:{free_port()}/ha_toolkit",
            "password_file": str(password),
            "connect_timeout": 0.5,
        },
        "timings": {"poll_interval": 0.5, "lease_ttl": 2, "fence_after": 2.5, "watchdog": 1},
    }
    for dotted, value in overrides.items():
        node = config
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})  # type: ignore[assignment]
        node[leaf] = value  # type: ignore[index]
    path = tmp_path / "controller.yml"
    path.write_text(yaml.safe_dump(config))
    return path


BAD_CONFIGS = [
    ({"metastore__type": "etcd"}, "metastore.type"),
    ({"metastore__dsn": "postgres://ha@db/x"}, "metastore.dsn"),
    ({"timings__poll_interval": "fast"}, "timings.poll_interval"),
    ({"timings__lease_ttl": 0.6}, "timings.lease_ttl"),
    ({"timings__watchdog": 5}, "timings.watchdog"),
    ({"timings__fence_after": 1.5}, "timings.fence_after"),
    ({"polling": 3}, "polling"),
    ({"service__health_url": "ftp://x/health"}, "service.health_url"),
    ({"metrics__listen": "nowhere"}, "metrics.listen"),
    ({"logging__level": "CHATTY"}, "logging.level"),
    ({"alerts__after_failed_polls": True}, "alerts.after_failed_polls"),
    ({"alerts__smtp": {"host": "mail"}}, "alerts.smtp.to"),
    ({"metastore__password": "inline-too"}, "metastore.password"),
    # A call that may outlast the watchdog fed just before it.
    ({"metastore__connect_timeout": 1}, "metastore.connect_timeout"),
]


@pytest.mark.parametrize(("overrides", "key"), BAD_CONFIGS, ids=[k for _, k in BAD_CONFIGS])
def test_bad_config_is_one_line_naming_file_and_key_exit_2(
    tmp_path: Path, overrides: dict[str, object], key: str
) -> None:
    config = write_config(tmp_path, **overrides)
    result = run("status", config=config)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(config) in lines[0] and f"{key}:" in lines[0]
    assert SECRET not in result.stderr + result.stdout


def test_missing_config_file(tmp_path: Path) -> None:
    result = run("status", config=tmp_path / "nope.yml")
    assert result.returncode == 2 and "nope.yml" in result.stderr


def test_version_and_usage_errors() -> None:
    assert run("version").stdout.startswith("ha-toolkit ")
    assert run("no-such-command").returncode == 2


def test_node_not_in_masters_group_exit_2(tmp_path: Path) -> None:
    config = write_config(tmp_path, node_name="node9")
    result = run("controller", "run", config=config)
    assert result.returncode == 2
    assert "node9" in result.stderr and "masters" in result.stderr


def test_missing_inventory_exit_2(tmp_path: Path) -> None:
    config = write_config(tmp_path, inventory=str(tmp_path / "gone.yml"))
    result = run("controller", "run", config=config)
    assert result.returncode == 2
    assert "gone.yml" in result.stderr


def test_metastore_unreachable_at_start_retries_without_crashing(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    proc = Process([*CLI, "--config", str(config), "controller", "run"], tmp_path / "run.log")
    proc.start()
    try:
        wait_for(
            lambda: "metastore unreachable (4 failed reads" in proc.log.read_text(),
            30,
            "the controller to keep retrying the metastore",
        )
        assert proc.running()
        log = proc.log.read_text()
        assert "(3 failed reads" not in log  # logged with backoff: 1, 2, 4, ...
        assert SECRET not in log
    finally:
        proc.stop()
    assert proc.popen is not None and proc.popen.returncode == 0  # clean exit on SIGTERM


def test_init_writes_a_sample_config_once(tmp_path: Path) -> None:
    path = tmp_path / "new.yml"
    first = run("init", config=path)
    assert first.returncode == 0 and path.exists()
    assert path.stat().st_mode & 0o777 == 0o600
    second = run("init", config=path)
    assert second.returncode == 2  # the sample needs filling in: it is not a valid config yet


def test_init_creates_schema_and_status_reports(mariadb: MariaDBServer, tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        metastore__dsn=(f"mysql://{mariadb.user}@{mariadb.host}:{mariadb.port}/{mariadb.database}"),
    )
    (tmp_path / "password").write_text(mariadb.password)
    assert run("init", config=config).returncode == 0
    assert run("init", config=config).returncode == 0  # idempotent
    result = run("status", "--no-check", config=config)
    assert result.returncode == 0, result.stderr
    assert "active controller   none" in result.stdout
    assert run("get-current-host", config=config).returncode == 1  # nobody is ACTIVE
    assert run("pause", config=config).returncode == 0
    assert "paused              yes" in run("status", "--no-check", config=config).stdout
    assert run("clear-metadata", config=config).returncode == 0
    assert mariadb.password not in result.stdout + result.stderr


def test_test_connection_names_an_unknown_host(mariadb: MariaDBServer, tmp_path: Path) -> None:
    (tmp_path / "inventory.yml").write_text(
        yaml.safe_dump({"all": {"children": {"masters": {"hosts": {"ghost.invalid": {}}}}}})
    )
    config = write_config(
        tmp_path,
        node_name="ghost.invalid",
        metastore__dsn=(f"mysql://{mariadb.user}@{mariadb.host}:{mariadb.port}/{mariadb.database}"),
    )
    (tmp_path / "password").write_text(mariadb.password)
    assert run("init", config=config).returncode == 0
    result = run("test-connection", config=config)
    assert result.returncode == 1
    line = next(x for x in result.stdout.splitlines() if "ghost.invalid" in x)
    assert "FAILED" in line
    assert "metastore  mysql" in result.stdout and "ok" in result.stdout


# -- in-process: --json on every command, --log-level ------------------------------------------
COMMANDS_THAT_PRINT = [
    ["controller", "run"],
    ["init"],
    ["check-config"],
    ["test-connection"],
    ["is-scheduler-running"],
    ["status"],
    ["metadata"],
    ["clear-metadata"],
    ["failover"],
    ["pause"],
    ["resume"],
    ["send-test-alert"],
    ["get-current-host"],
    ["version"],
]


@pytest.mark.parametrize("command", COMMANDS_THAT_PRINT, ids=lambda c: " ".join(c))
def test_every_command_takes_json_before_or_after_it(command: list[str]) -> None:
    parser = cli.build_parser()
    assert parser.parse_args([*command]).json is False
    assert parser.parse_args(["--json", *command]).json is True
    assert parser.parse_args([*command, "--json"]).json is True


def main_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    """Run the CLI in this process; (exit code, the JSON on stdout, stderr)."""
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def test_version_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main_json(capsys, "version", "--json") == (0, {"version": __version__}, "")
    assert cli.main(["version"]) == 0
    assert capsys.readouterr().out == f"ha-toolkit {__version__}\n"


@pytest.mark.parametrize(
    "argv", [["--log-level", "chatty", "status"], ["version", "--log-level", "x"]]
)
def test_bad_log_level_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str]
) -> None:
    assert cli.main(["--config", str(write_config(tmp_path)), *argv]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("ha-toolkit: --log-level: expected one of")


def test_bad_log_level_from_the_command_line_has_no_traceback() -> None:
    result = run("--log-level", "chatty", "version")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "ha-toolkit: --log-level: expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL, "
        "got 'chatty'"
    ]


def test_log_level_is_case_insensitive(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--log-level", "debug", "version"]) == 0


def test_errors_with_json_are_json_too(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = write_config(tmp_path, metastore__type="etcd")
    code, data, err = main_json(capsys, "--config", str(config), "status", "--json")
    assert code == 2
    assert data == {"error": err.strip().removeprefix("ha-toolkit: ")}
    assert "metastore.type" in data["error"]


def test_init_json_writes_a_sample(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "new.yml"
    code, data, _ = main_json(capsys, "--config", str(path), "init", "--json")
    assert code == 0 and path.exists()
    assert data == {"wrote": str(path), "masters": [], "notes": []}


@dataclass
class Held:
    """An in-memory metastore whose lease node1's controller holds, placing the scheduler
    on node1; the CLI's commands reach it instead of a real server."""

    store: MemoryMetastore
    lease: Lease


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Held:
    server = MemoryServer()
    active = server.connect()
    active.setup()
    lease = active.acquire("node1#ab12", 600)
    assert lease is not None
    active.write_placement(lease, "node1")
    store = server.connect()
    monkeypatch.setattr(cli, "_open_store", lambda config: store)
    return Held(store, lease)


def test_operator_commands_json(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, held: Held
) -> None:
    config = ["--config", str(write_config(tmp_path)), "--json"]
    assert main_json(capsys, *config, "pause") == (0, {"paused": True}, "")
    assert held.store.read().paused
    assert main_json(capsys, *config, "resume") == (0, {"paused": False}, "")
    code, data, _ = main_json(capsys, *config, "failover", "--wait", "0")
    assert code == 0 and held.store.read().failover_to == ""
    assert data == {
        "from": "node1",
        "to": None,
        "requested": True,
        "scheduler_node": "node1",
        "moved": False,
    }
    code, data, err = main_json(capsys, *config, "clear-metadata")
    assert code == 1 and data["cleared"] is False
    assert data["error"] == err.strip() and "holds the lease" in err
    assert main_json(capsys, *config, "clear-metadata", "--force") == (0, {"cleared": True}, "")
    code, data, err = main_json(capsys, *config, "failover", "--to", "node1")
    assert code == 1 and data["requested"] is False and "no ACTIVE controller" in data["error"]
    assert main_json(capsys, *config, "get-current-host") == (
        1,
        {"active": None, "controller": None, "scheduler": None},
        "",
    )


def test_failover_json_reports_the_move(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, held: Held
) -> None:
    def carried_out(node: str | None) -> None:  # an ACTIVE that moves at once
        assert node == "node2"
        held.store.write_placement(held.lease, node)

    held.store.request_failover = carried_out  # type: ignore[method-assign]
    inventory = yaml.safe_dump(
        {"all": {"children": {"masters": {"hosts": {"node1": {}, "node2": {}}}}}}
    )
    (tmp_path / "inventory.yml").write_text(inventory)
    config = write_config(tmp_path)
    code, data, _ = main_json(
        capsys, "--config", str(config), "failover", "--to", "node2", "--json"
    )
    assert (code, data["moved"], data["scheduler_node"]) == (0, True, "node2")


# -- check-config: what the role's `validate:` runs ---------------------------------------------
def test_check_config_ok(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = write_config(tmp_path)
    assert cli.main(["check-config", "--config", str(config)]) == 0
    assert capsys.readouterr().out == f"{config}: ok\n"
    code, data, err = main_json(capsys, "check-config", "--config", str(config), "--json")
    assert (code, err) == (0, "")
    timings = data.pop("timings")
    service = data.pop("service")
    assert data == {"valid": True, "path": str(config), "warnings": []}
    # Every timing, defaults applied: the role reads WatchdogSec and TimeoutStopSec from here.
    assert {"poll_interval", "lease_ttl", "fence_after", "watchdog", "stop_timeout"} <= set(timings)
    assert all(isinstance(value, float) for value in timings.values())
    # The service, defaults applied: the role binds this unit to the controller's.
    assert service == dataclasses.asdict(ServiceConfig())


def test_check_config_bad_file_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = write_config(tmp_path, timings__lease_ttl=0.6)
    assert cli.main(["check-config", "--config", str(config)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith(f"ha-toolkit: {config}: timings.lease_ttl: must be at least")
    code, data, _ = main_json(capsys, "--json", "check-config", "--config", str(config))
    assert code == 2 and data["valid"] is False and "timings.lease_ttl" in data["error"]
    assert SECRET not in data["error"]


def test_check_config_names_a_deprecated_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = write_config(tmp_path, state_dir="/var/lib/ha-toolkit")
    assert cli.main(["check-config", "--config", str(config)]) == 0
    out, err = capsys.readouterr()
    assert out == f"{config}: ok\n"
    assert err.startswith(f"note: {config}: state_dir: ignored")


def test_check_config_as_a_command() -> None:
    # As the role's template task runs it: `validate: ha-toolkit check-config --config %s`.
    result = run("check-config", "--config", "/nonexistent/controller.yml")
    assert result.returncode == 2
    assert result.stderr == "ha-toolkit: /nonexistent/controller.yml: file not found\n"


def test_test_connection_refuses_a_node_not_in_the_masters_group(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # The check `controller run` makes; before any metastore or SSH connection.
    config = write_config(tmp_path, node_name="node9")
    assert cli.main(["--config", str(config), "test-connection"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith("ha-toolkit: ") and "node_name 'node9' is not in group 'masters'" in err
    code, data, _ = main_json(capsys, "--config", str(config), "test-connection", "--json")
    assert code == 2 and "node9" in data["error"]
