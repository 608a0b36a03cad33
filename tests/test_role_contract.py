"""The failover_controller role against ha_toolkit: the paths both must agree on, and the
controller's config keys, which the role passes on without repeating their defaults.

The role's files are compared with ha_toolkit's constants and config schema; its
controller.yml template is rendered by ansible-playbook on a local host (no container) and
loaded as the controller would. Nothing here imports ansible_runner.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from ha_toolkit import node_action
from ha_toolkit.config import (
    AlertsConfig,
    LoggingConfig,
    MetastoreConfig,
    MetricsConfig,
    ServiceConfig,
    SMTPConfig,
    Timings,
    known_keys,
    load_config,
)
from ha_toolkit.config.schema import entries

REPO = Path(__file__).resolve().parent.parent
ROLE = REPO / "roles" / "failover_controller"


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_fixed_paths_are_ha_toolkits() -> None:
    # ha_toolkit has these built in (local.py's self-fencing stop, the runtime playbook,
    # node-action's own default): the role's copy is in vars/, not an overridable default.
    fixed = load(ROLE / "vars" / "main.yml")
    assert fixed == {
        "failover_controller_node_action": node_action.INSTALL_PATH,
        "failover_controller_state_dir": node_action.STATE_DIR,
    }
    playbook = load(REPO / "playbooks" / "scheduler.yml")
    assert playbook[0]["vars"]["ha_node_action"] == node_action.INSTALL_PATH
    defaults = load(ROLE / "defaults" / "main.yml")
    options = load(ROLE / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    for name in fixed:
        assert name not in defaults, name
        assert name not in options, name


# -- controller.yml: the controller's own keys, its defaults left to it -------------------------
def render_controller_yml(tmp_path: Path, variables: dict[str, Any]) -> Path:
    """The role's templates/controller.yml.j2 rendered by ansible-playbook on a local host,
    with the role's defaults and `variables` (as the inventory would give them)."""
    out = tmp_path / "controller.yml"
    playbook = [
        {
            "hosts": "m1",
            "gather_facts": False,
            "tasks": [
                {
                    "ansible.builtin.template": {
                        "src": str(ROLE / "templates" / "controller.yml.j2"),
                        "dest": str(out),
                        "mode": "0600",
                    }
                }
            ],
        }
    ]
    inventory = {
        "all": {
            "hosts": {"m1": {"ansible_connection": "local", **variables}},
            # The role's defaults, below the host's variables as they are below the inventory's.
            "vars": {
                "ansible_python_interpreter": sys.executable,
                **load(ROLE / "defaults" / "main.yml"),
            },
        }
    }
    (tmp_path / "playbook.yml").write_text(yaml.safe_dump(playbook, sort_keys=False))
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
    env = os.environ | {
        "ANSIBLE_HOME": str(tmp_path / "ansible"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible" / "tmp"),
        "ANSIBLE_NOCOLOR": "1",
    }
    argv = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "inventory.yml"]
    result = subprocess.run(
        [*argv, "playbook.yml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def mysql_variables(tmp_path: Path) -> dict[str, Any]:
    # The role writes the password file into the config folder; the controller reads it.
    password = tmp_path / "metastore.password"
    password.write_text("s3cret")
    password.chmod(0o600)
    return {
        "failover_controller_config_dir": str(tmp_path),
        "failover_controller_mysql_host": "db1",
        "failover_controller_metastore_password": "s3cret",
    }


def test_controller_yml_leaves_the_controllers_defaults_to_it(tmp_path: Path) -> None:
    path = render_controller_yml(tmp_path, mysql_variables(tmp_path))
    written = load(path)
    # Only what the role knows and the controller cannot: no default written twice.
    assert set(written) == {"node_name", "inventory", "masters_group", "metastore"}
    assert set(written["metastore"]) == {"type", "dsn", "password_file"}
    config = load_config(path, env={})  # what the role's `validate:` (check-config) loads
    assert config.node_name == "m1"
    assert config.metastore.dsn == "mysql://ha_toolkit@db1:3306/ha_toolkit"
    assert config.metastore.password == "s3cret"
    assert config.metastore.prefix == MetastoreConfig.prefix
    assert (config.timings, config.service, config.alerts, config.logging, config.metrics) == (
        Timings(),
        ServiceConfig(),
        AlertsConfig(),
        LoggingConfig(),
        MetricsConfig(),
    )


def test_controller_yml_writes_what_is_set(tmp_path: Path) -> None:
    set_here = {
        "failover_controller_metastore_type": "zookeeper",
        "failover_controller_zookeeper_hosts": ["zk1:2181", "zk2:2181"],
        "failover_controller_metastore_prefix": "cluster_b",
        "failover_controller_service_unit": "my-scheduler",
        "failover_controller_health_url": "",  # empty: no health check
        "failover_controller_log_level": "DEBUG",
        "failover_controller_log_json": True,
        "failover_controller_metrics_listen": "127.0.0.1:9108",
        "failover_controller_timings": {"poll_interval": 2, "lease_ttl": 15},
        "failover_controller_alerts": {"after_failed_polls": 3},
    }
    path = render_controller_yml(
        tmp_path, {"failover_controller_config_dir": str(tmp_path)} | set_here
    )
    config = load_config(path, env={})
    assert config.metastore.type == "zookeeper"
    assert config.metastore.hosts == ("zk1:2181", "zk2:2181")
    assert config.metastore.prefix == "cluster_b"
    assert config.service == ServiceConfig(unit="my-scheduler", health_url=None)
    assert config.logging == LoggingConfig(level="DEBUG", json=True)
    assert config.metrics_listen == "127.0.0.1:9108"
    assert (config.timings.poll_interval, config.timings.lease_ttl) == (2.0, 15.0)
    assert config.alerts.after_failed_polls == 3


# Role variables that set one controller key each: no default in the role, so the
# controller's applies.
CONTROLLER_KEYS = {
    "failover_controller_metastore_prefix": "metastore.prefix",
    "failover_controller_service_unit": "service.unit",
    "failover_controller_health_url": "service.health_url",
    "failover_controller_log_level": "logging.level",
    "failover_controller_log_json": "logging.json",
    "failover_controller_metrics_listen": "metrics.listen",
}


def test_no_controller_default_is_repeated_in_the_role() -> None:
    defaults = load(ROLE / "defaults" / "main.yml")
    options = load(ROLE / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    for variable, key in CONTROLLER_KEYS.items():
        assert key in known_keys(), key
        assert variable not in defaults, variable
        assert "default" not in options[variable], variable
        assert "controller's default applies" in " ".join(options[variable]["description"].split())


def option_names(option: dict[str, Any]) -> set[str]:
    return set(option.get("options", {}))


def test_timings_and_alerts_options_are_the_controllers_keys() -> None:
    # The role passes these sections on as given: its argument_specs must not drift from
    # the controller's schema (a key missing there is refused at role start).
    options = load(ROLE / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    assert option_names(options["failover_controller_timings"]) == set(entries(Timings))
    alerts = options["failover_controller_alerts"]
    assert option_names(alerts) == set(entries(AlertsConfig))
    # An inline SMTP password is left out on purpose: the role documents password_file.
    assert option_names(alerts["options"]["smtp"]) == set(entries(SMTPConfig)) - {"password"}
