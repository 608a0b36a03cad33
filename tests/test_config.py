"""The config loader: validation messages, secrets, timing rules, sample file, migration."""

from __future__ import annotations

import copy
import dataclasses
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from ha_toolkit.config import (
    PASSWORD_ENV,
    SMTP_PASSWORD_ENV,
    Config,
    ConfigError,
    Timings,
    check_timings,
    config_from_airflow_cfg,
    known_keys,
    load_config,
    move_wait,
    write_sample_config,
)
from ha_toolkit.config import docs as config_docs
from ha_toolkit.config.schema import Section, entries, spec_of
from tests.harness.controllers import FAST_TIMINGS

REPO = Path(__file__).resolve().parent.parent
SECRET = "Sw0rdf1sh-NEVER-SHOWN"  # inline metastore password in BASE
ENV_SECRET = "3nv-S3cret-NEVER-SHOWN"
ENV = {PASSWORD_ENV: ENV_SECRET, SMTP_PASSWORD_ENV: ENV_SECRET}

BASE: dict[str, Any] = {
    "node_name": "node1",
    "metastore": {
        "type": "mysql",
        "dsn": "mysql://ha_toolkit@db1:3306/ha_toolkit",
        "password": SECRET,
    },
}


def write(tmp_path: Path, data: Any, name: str = "controller.yml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def load(tmp_path: Path, data: Any, env: dict[str, str] | None = None) -> Config:
    return load_config(write(tmp_path, data), env=ENV if env is None else env)


def error(tmp_path: Path, data: Any, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, data, env)
    message = str(info.value)
    assert "\n" not in message
    assert SECRET not in message and ENV_SECRET not in message
    return message


def merged(**changes: Any) -> dict[str, Any]:
    """BASE with dotted keys set (value DELETE removes the key)."""
    data = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        if value is DELETE:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return data


DELETE = object()
GOOD_TIMINGS = {
    "timings__poll_interval": 20,
    "timings__lease_ttl": 40,
    "timings__fence_after": 40,
    "timings__watchdog": 30,
}

# (expected dotted key, changes to BASE, a fragment of the message)
INVALID: list[tuple[str, dict[str, Any], str]] = [
    (
        "timings.poll_interval",
        {"timings__poll_interval": "fast"},
        "expected a number > 0, got 'fast'",
    ),
    ("timings.lease_ttl", {"timings__lease_ttl": True}, "expected a number > 0, got true"),
    ("timings.stop_timeout", {"timings__stop_timeout": 0}, "expected a number > 0, got 0"),
    ("timings.clock_drift", {"timings__clock_drift": 0.5}, "expected a number >= 0 and < 0.5"),
    (
        "timings.lease_ttl",
        {**GOOD_TIMINGS, "timings__lease_ttl": 30},
        "must be at least 2 × timings.poll_interval (30 < 2 × 20)",  # noqa: RUF001
    ),
    (
        "timings.fence_after",
        {**GOOD_TIMINGS, "timings__fence_after": 39},
        "must be at least 2 × timings.poll_interval (39 < 2 × 20)",  # noqa: RUF001
    ),
    (
        "timings.watchdog",
        {**GOOD_TIMINGS, "timings__watchdog": 40},
        "must be less than timings.fence_after (40 >= 40)",
    ),
    (
        "timings.start_timeout",
        {**GOOD_TIMINGS, "timings__start_timeout": 10},
        "must be at least timings.poll_interval (10 < 20)",
    ),
    ("timings", {"timings": [1, 2]}, "expected a mapping, got a list"),
    ("metastore.dsnn", {"metastore__dsnn": "x"}, "unknown key; did you mean metastore.dsn?"),
    ("poll_interval", {"poll_interval": 5}, "did you mean timings.poll_interval?"),
    ("metastore.passwd", {"metastore__passwd": SECRET}, "did you mean metastore.password"),
    ("metastore.type", {"metastore__type": "postgres"}, "expected one of mysql, zookeeper"),
    ("metastore.type", {"metastore__type": DELETE}, "required"),
    ("metastore.dsn", {"metastore__dsn": DELETE}, "required when metastore.type is mysql"),
    ("metastore.dsn", {"metastore__dsn": "postgres://u@db1/ha"}, "got scheme 'postgres'"),
    ("metastore.dsn", {"metastore__dsn": "mysql:///ha_toolkit"}, "no host"),
    ("metastore.dsn", {"metastore__dsn": "mysql://u@db1:3306"}, "no database name"),
    ("metastore.dsn", {"metastore__dsn": "mysql://u@db1:99999/ha"}, "bad host or port"),
    ("metastore.dsn", {"metastore__dsn": f"mysql://u:{SECRET}@db1/ha"}, "must not contain a pass"),
    ("metastore.user", {"metastore__dsn": "mysql://db1/ha"}, "required for mysql"),
    ("metastore.user", {"metastore__user": "other"}, "differs from the user in metastore.dsn"),
    (
        "metastore.hosts",
        {"metastore__type": "zookeeper", "metastore__dsn": DELETE},
        "required when metastore.type is zookeeper",
    ),
    (
        "metastore.hosts",
        {"metastore__type": "zookeeper", "metastore__dsn": DELETE, "metastore__hosts": ["zk1"]},
        "item 1: expected host:port",
    ),
    (
        "metastore.hosts",
        {"metastore__hosts": ["zk1:2181"]},
        "only for metastore.type zookeeper",
    ),
    ("metastore.password", {"metastore__password": 12345}, "got a number"),
    ("metastore.password", {"metastore__password_file": "/nonexistent"}, "not both"),
    (  # a password pasted as password_file is not echoed
        "metastore.password_file",
        {"metastore__password": DELETE, "metastore__password_file": SECRET},
        "does not exist",
    ),
    ("metastore.prefix", {"metastore__prefix": "ha-toolkit"}, "expected an identifier"),
    ("metastore.connect_timeout", {"metastore__connect_timeout": "5s"}, "got '5s'"),
    ("metastore.tls.key_file", {"metastore__tls": {"cert_file": "c.pem"}}, "required with"),
    ("metastore.tls.enabled", {"metastore__tls": {"enabled": "yes please"}}, "true or false"),
    ("service.health_url", {"service__health_url": "ftp://h/x"}, "got scheme 'ftp'"),
    ("service.unit", {"service__unit": "airflow scheduler"}, "a systemd unit name"),
    ("alerts.webhook_url", {"alerts__webhook_url": "hooks.example.com/T0K3N"}, "no scheme"),
    ("alerts.after_failed_polls", {"alerts__after_failed_polls": 0}, "an integer >= 1, got 0"),
    ("alerts.after_failed_polls", {"alerts__after_failed_polls": 2.5}, "an integer >= 1"),
    ("alerts.smtp.host", {"alerts__smtp": {"to": ["a@example.com"]}}, "required when"),
    ("alerts.smtp.to", {"alerts__smtp": {"host": "mail1"}}, "at least one address"),
    ("alerts.smtp.to", {"alerts__smtp": {"host": "mail1", "to": ["nobody"]}}, "item 1"),
    (
        "alerts.smtp.port",
        {"alerts__smtp": {"host": "mail1", "to": ["a@example.com"], "port": True}},
        "expected an integer 1-65535, got true",
    ),
    (
        "alerts.smtp.ssl",
        {"alerts__smtp": {"host": "m", "to": ["a@b.c"], "ssl": True, "starttls": True}},
        "not both",
    ),
    (
        "alerts.smtp.user",
        {"alerts__smtp": {"host": "m", "to": ["a@b.c"], "password": SECRET}},
        "required when a password is given",
    ),
    (
        "alerts.smtp.password",
        {"alerts__smtp": {"host": "m", "to": ["a@b.c"], "user": "u", "password": [SECRET]}},
        "got a list",
    ),
    ("logging.level", {"logging__level": "verbose"}, "expected one of DEBUG, INFO"),
    ("logging.json", {"logging__json": 1}, "expected true or false, got 1"),
    ("metrics.listen", {"metrics__listen": "9108"}, "expected host:port"),
    ("metrics.listen", {"metrics__listen": "::1:9108"}, "expected host:port"),
    ("node_name", {"node_name": "node 1"}, "expected a host name"),
    ("masters_group", {"masters_group": "my-masters"}, "an Ansible group name"),
]


@pytest.mark.parametrize(
    ("key", "changes", "fragment"),
    INVALID,
    ids=[f"{key}-{n}" for n, (key, _, _) in enumerate(INVALID)],
)
def test_invalid_config_names_the_key(
    tmp_path: Path, key: str, changes: dict[str, Any], fragment: str
) -> None:
    path = tmp_path / "controller.yml"
    message = error(tmp_path, merged(**changes))
    assert message.startswith(f"{path}: {key}: "), message
    assert fragment in message


def test_invalid_cases_are_distinct() -> None:
    assert len({key for key, _, _ in INVALID}) >= 12


def test_file_level_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yml"
    with pytest.raises(ConfigError, match=r"nope\.yml: file not found$"):
        load_config(missing)
    assert error(tmp_path, "metastore:\n  type: mysql\n dsn: x\n").startswith(
        f"{tmp_path / 'controller.yml'}: line 3, column 2: not valid YAML"
    )
    assert "got an empty file" in error(tmp_path, "")
    assert "top level, got a list" in error(tmp_path, "- a\n- b\n")
    # Anchors and merge keys still work; an explicit key overrides a merged one.
    merge = "metastore:\n  <<: {type: mysql, dsn: 'mysql://u@db1/ha', prefix: a}\n  prefix: b\n"
    assert load(tmp_path, merge).metastore.prefix == "b"
    dup = "metastore:\n  type: mysql\ntimings: {}\nmetastore: {}\n"
    assert "line 4, column 1: not valid YAML: duplicate key 'metastore'" in error(tmp_path, dup)


def test_minimal_mysql_config_takes_the_defaults(tmp_path: Path) -> None:
    data = {"metastore": {"type": "mysql", "dsn": "mysql://ha@db1/ha"}}
    config = load(tmp_path, data, env={})
    assert config.metastore.user == "ha"  # from the DSN
    assert config.metastore.password is None
    assert config.node_name == socket.gethostname()
    defaults = Config(path=config.path, metastore=config.metastore)
    assert config == defaults
    assert config.timings == Timings()
    assert config.alerts.smtp is None and config.metrics_listen is None
    assert config.service.health_url == "http://127.0.0.1:8974/health"


def test_minimal_zookeeper_config(tmp_path: Path) -> None:
    data = {"metastore": {"type": "zookeeper", "hosts": ["zk1:2181", "[::1]:2182"]}}
    config = load(tmp_path, data)
    assert config.metastore.hosts == ("zk1:2181", "[::1]:2182")
    assert config.metastore.dsn is None
    # No user: a stray password variable must not switch on digest auth.
    assert config.metastore.user is None and config.metastore.password is None


def test_values_are_converted(tmp_path: Path) -> None:
    data = merged(
        logging__level="debug",
        timings__poll_interval=2,
        service__health_url=None,
        metrics__listen="0.0.0.0:9108",
        inventory="inventory.yml",
        alerts__webhook_url="https://hooks.example.com/T0K3N",
    )
    config = load(tmp_path, data)
    assert config.logging.level == "DEBUG"
    assert config.timings.poll_interval == 2.0 and isinstance(config.timings.poll_interval, float)
    assert config.service.health_url is None
    assert config.metrics_listen == "0.0.0.0:9108"
    assert config.inventory == tmp_path / "inventory.yml"  # relative to the config file
    assert config.alerts.webhook_url == "https://hooks.example.com/T0K3N"


def test_empty_sections_mean_defaults_or_off(tmp_path: Path) -> None:
    text = (
        "metastore:\n  type: mysql\n  dsn: mysql://u@db1/ha\ntimings:\nalerts:\n  smtp:\nmetrics:\n"
    )
    config = load(tmp_path, text)
    assert config.timings == Timings()
    assert config.alerts.smtp is None and config.metrics_listen is None


def test_password_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "metastore.password"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o640)
    data = merged(metastore__password=DELETE, metastore__password_file="metastore.password")
    config = load(tmp_path, data)
    assert config.metastore.password == SECRET  # trailing newline stripped; file wins over env
    assert SECRET not in repr(config) and SECRET not in str(config)


def test_world_readable_password_file_is_refused(tmp_path: Path) -> None:
    secret_file = tmp_path / "metastore.password"
    secret_file.write_text(SECRET)
    secret_file.chmod(0o644)
    data = merged(metastore__password=DELETE, metastore__password_file=str(secret_file))
    message = error(tmp_path, data)
    assert message.startswith(f"{tmp_path / 'controller.yml'}: metastore.password_file: ")
    assert "must not be world-readable" in message and "0644" in message


def secret_file(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o600)


@pytest.mark.parametrize(
    ("setup", "fragment"),
    [
        (lambda p: None, "expected an existing file, but the file it names does not exist"),
        (lambda p: p.mkdir(), "expected a regular file"),
        (lambda p: secret_file(p, "\n"), "is empty"),
    ],
    ids=["missing", "directory", "empty"],
)
def test_bad_password_file(tmp_path: Path, setup: Any, fragment: str) -> None:
    secret_file = tmp_path / "pw"
    setup(secret_file)
    data = merged(metastore__password=DELETE, metastore__password_file=str(secret_file))
    message = error(tmp_path, data)
    assert message.startswith(f"{tmp_path / 'controller.yml'}: metastore.password_file: ")
    assert fragment in message


def test_password_from_environment(tmp_path: Path) -> None:
    config = load(tmp_path, merged(metastore__password=DELETE))
    assert config.metastore.password == ENV_SECRET
    assert load(tmp_path, merged(metastore__password=DELETE), env={}).metastore.password is None
    assert load(tmp_path, BASE).metastore.password == SECRET  # the file's own setting wins
    smtp = {"host": "mail1", "to": ["ops@example.com"], "user": "alerts"}
    config = load(tmp_path, merged(alerts__smtp=smtp))
    assert config.alerts.smtp is not None
    assert config.alerts.smtp.password == ENV_SECRET
    assert ENV_SECRET not in repr(config)


def test_tls_files_are_checked_when_enabled(tmp_path: Path) -> None:
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("x")
    (tmp_path / "client.key").chmod(0o600)
    tls = {
        "enabled": True,
        "ca_file": "ca.pem",
        "cert_file": "client.pem",
        "key_file": "client.key",
    }
    config = load(tmp_path, merged(metastore__tls=tls))
    assert config.metastore.tls.key_file == str(tmp_path / "client.key")
    (tmp_path / "client.key").chmod(0o604)
    assert "metastore.tls.key_file: secrets must not be world-readable" in error(
        tmp_path, merged(metastore__tls=tls)
    )
    tls["ca_file"] = "missing.pem"
    assert "metastore.tls.ca_file: " in error(tmp_path, merged(metastore__tls=tls))


def test_timing_rules_and_move_wait() -> None:
    assert check_timings(Timings()) == []
    bad = Timings(poll_interval=10, lease_ttl=15, fence_after=10, watchdog=16)
    assert check_timings(bad) == [
        "timings.lease_ttl: must be at least 2 × timings.poll_interval (15 < 2 × 10)",  # noqa: RUF001
        "timings.fence_after: must be at least 2 × timings.poll_interval (10 < 2 × 10)",  # noqa: RUF001
        "timings.watchdog: must be less than timings.fence_after (16 >= 10)",
    ]
    assert check_timings(Timings(poll_interval=-1)) == [
        "timings.poll_interval: must be > 0 (got -1)"
    ]
    # The integration harness's fast timings are valid.
    assert check_timings(Timings(**FAST_TIMINGS)) == []
    fast = Timings(1.0, lease_ttl=5.0, fence_after=4.0, start_timeout=6.0, stop_timeout=3.0)
    assert check_timings(dataclasses.replace(fast, watchdog=1.5)) == []
    assert check_timings(dataclasses.replace(fast, watchdog=2.5)) == [
        "timings.fence_after: must be at least timings.watchdog + 2 × "  # noqa: RUF001
        "timings.poll_interval (4 < 2.5 + 2 × 1)"  # noqa: RUF001
    ]
    assert move_wait(Timings()) == pytest.approx((11 + 3) * 1.05 + 3)


def test_sample_config_round_trip(tmp_path: Path) -> None:
    sample = tmp_path / "sample.yml"
    write_sample_config(sample)
    assert stat.S_IMODE(sample.stat().st_mode) == 0o600
    text = sample.read_text()
    for key in known_keys():  # every key is in the sample, with a comment above it
        assert f"{key.rsplit('.', 1)[-1]}:" in text, key
    # Only the required DSN is missing.
    with pytest.raises(ConfigError, match=r"sample\.yml: metastore\.dsn: required"):
        load_config(sample, env={})

    filled = tmp_path / "filled.yml"
    write_sample_config(filled, {"metastore": {"dsn": "mysql://ha@db1:3306/ha"}})
    minimal = write(tmp_path, {"metastore": {"type": "mysql", "dsn": "mysql://ha@db1:3306/ha"}})
    expected = dataclasses.replace(load_config(minimal, env={}), path=filled)
    assert load_config(filled, env={}) == expected  # the sample shows the defaults

    with pytest.raises(ConfigError, match=r"filled\.yml: already exists"):
        write_sample_config(filled, {})
    with pytest.raises(ConfigError, match=r"metastore\.dsnn: unknown key"):
        write_sample_config(tmp_path / "x.yml", {"metastore": {"dsnn": "x"}})


def test_sample_config_with_every_value(tmp_path: Path) -> None:
    (tmp_path / "smtp.password").write_text("mail-pw\n")
    (tmp_path / "smtp.password").chmod(0o600)
    values = {
        "node_name": "master2",
        "inventory": "/srv/inventory.yml",
        "masters_group": "schedulers",
        "metastore": {
            "type": "zookeeper",
            "hosts": ["zk1:2181", "zk2:2181"],
            "user": "ha",
            "password": "yes",  # YAML would read an unquoted yes as true
            "prefix": "ha_prod",
            "tls": {"enabled": False, "ca_file": "/etc/ssl/ca.pem"},
        },
        "timings": {"poll_interval": 5, "lease_ttl": 10, "fence_after": 20, "watchdog": 7.5},
        "service": {"unit": "airflow-scheduler.service", "health_url": None},
        "alerts": {
            "after_failed_polls": 2,
            "smtp": {
                "host": "mail1",
                "port": 587,
                "from": "ha@example.com",
                "to": ["a@example.com", "b@example.com"],
                "starttls": True,
                "user": "alerts",
                "password_file": "smtp.password",
            },
            "webhook_url": "https://hooks.example.com/x",
        },
        "logging": {"level": "DEBUG", "json": True},
        "metrics": {"listen": "[::1]:9108"},
    }
    path = tmp_path / "controller.yml"
    write_sample_config(path, values)
    config = load_config(path, env={})
    assert config.node_name == "master2" and config.masters_group == "schedulers"
    assert config.metastore.password == "yes" and config.metastore.prefix == "ha_prod"
    assert config.metastore.tls.ca_file == "/etc/ssl/ca.pem"
    assert config.timings.watchdog == 7.5 and config.service.health_url is None
    smtp = config.alerts.smtp
    assert smtp is not None and smtp.sender == "ha@example.com" and smtp.port == 587
    assert smtp.to == ("a@example.com", "b@example.com") and smtp.password == "mail-pw"
    assert config.logging.json and config.metrics_listen == "[::1]:9108"


def test_every_key_is_documented() -> None:
    docs = (REPO / "docs/configuration.md").read_text()
    missing = [key for key in known_keys() if f"`{key}`" not in docs]
    assert not missing


AIRFLOW_CFG = """\
[core]
dags_folder = /srv/dags
sql_alchemy_conn = mysql+pymysql://old:old@db0/airflow

[database]
sql_alchemy_conn = mysql+mysqldb://airflow:{pw}@db1:3306/airflow?charset=utf8

[smtp]
smtp_host = mail1
smtp_starttls = True
smtp_ssl = False
smtp_user = airflow
smtp_password = {pw}
smtp_port = 587
smtp_mail_from = airflow@example.com

[scheduler_failover]
scheduler_nodes_in_cluster = master1, master2,master3
metadata_service_type = SQLMetadataService
metadata_service_zookeeper_nodes = localhost:2181
poll_frequency = 60
airflow_scheduler_start_command = export AIRFLOW_HOME=/srv;;nohup airflow scheduler &
logging_level = WARN
retry_count_before_alerting = 3
alert_to_email = ops@example.com, oncall@example.com
alert_email_subject = "Scheduler down (100%)"
pass_word = {pw}
frobnicate = 1
"""


def test_airflow_cfg_migration(tmp_path: Path) -> None:
    cfg = tmp_path / "airflow.cfg"
    cfg.write_text(AIRFLOW_CFG.format(pw=SECRET))
    migration = config_from_airflow_cfg(cfg)
    assert SECRET not in repr(migration)
    assert migration.masters == ["master1", "master2", "master3"]
    values = migration.values
    assert values["metastore"] == {"type": "mysql", "dsn": "mysql://airflow@db1:3306/airflow"}
    assert values["timings"] == {
        "poll_interval": 60,
        "lease_ttl": 120,
        "fence_after": 125,
    }
    assert values["alerts"] == {
        "after_failed_polls": 3,
        "smtp": {
            "to": ["ops@example.com", "oncall@example.com"],
            "host": "mail1",
            "port": 587,
            "starttls": True,
            "ssl": False,
            "from": "airflow@example.com",
            "user": "airflow",
        },
    }
    assert values["logging"] == {"level": "WARNING"}
    notes = "\n".join(migration.warnings)
    for fragment in (
        "database.sql_alchemy_conn: its password was not copied",
        "database.sql_alchemy_conn: its query options were dropped",
        "smtp.smtp_password: not copied",
        "scheduler_failover.poll_frequency: timings raised",
        "scheduler_failover.airflow_scheduler_start_command: ignored",
        "scheduler_failover.alert_email_subject: ignored",
        "scheduler_failover.pass_word: ignored",
        "scheduler_failover.frobnicate: unknown key, ignored",
    ):
        assert fragment in notes

    # The values make a config that loads (with the passwords supplied separately).
    path = tmp_path / "controller.yml"
    write_sample_config(path, values)
    config = load_config(path, env={SMTP_PASSWORD_ENV: "pw"})
    assert check_timings(config.timings) == []
    assert config.metastore.user == "airflow" and config.metastore.password is None


def test_airflow_cfg_migration_zookeeper(tmp_path: Path) -> None:
    cfg = tmp_path / "airflow.cfg"
    cfg.write_text(
        "[scheduler_failover]\n"
        "scheduler_nodes_in_cluster = m1,m2\n"
        "metadata_service_type = ZookeeperMetadataService\n"
        "metadata_service_zookeeper_nodes = zk1,zk2:2182\n"
        "zookeeper_session_timeout_ms = 30000\n"
    )
    migration = config_from_airflow_cfg(cfg)
    assert migration.values == {
        "metastore": {"type": "zookeeper", "hosts": ["zk1:2181", "zk2:2182"]},
    }
    assert any("zookeeper_session_timeout_ms: ignored" in w for w in migration.warnings)
    path = tmp_path / "controller.yml"
    write_sample_config(path, migration.values)
    assert load_config(path, env={}).metastore.hosts == ("zk1:2181", "zk2:2182")


def test_airflow_cfg_migration_errors(tmp_path: Path) -> None:
    cfg = tmp_path / "airflow.cfg"
    cfg.write_text("[core]\nsql_alchemy_conn = sqlite:////tmp/a.db\n")
    with pytest.raises(ConfigError, match=r"airflow\.cfg: \[scheduler_failover\]: section miss"):
        config_from_airflow_cfg(cfg)
    cfg.write_text("[scheduler_failover]\nmetadata_service_type = Redis\n")
    with pytest.raises(ConfigError, match=r"scheduler_failover\.metadata_service_type: expected"):
        config_from_airflow_cfg(cfg)
    cfg.write_text("[scheduler_failover]\npoll_frequency = often\n")
    with pytest.raises(ConfigError, match=r"scheduler_failover\.poll_frequency: expected a num"):
        config_from_airflow_cfg(cfg)
    cfg.write_text(f"[scheduler_failover]\nno equals sign {SECRET}\n")
    with pytest.raises(ConfigError, match=r"line 2: not an ini line$"):
        config_from_airflow_cfg(cfg)
    with pytest.raises(ConfigError, match=r"nope\.cfg: cannot read"):
        config_from_airflow_cfg(tmp_path / "nope.cfg")
    # A non-MySQL Airflow database: no DSN, and a note saying so.
    cfg.write_text("[core]\nsql_alchemy_conn = postgresql://a:b@db/af\n[scheduler_failover]\n")
    migration = config_from_airflow_cfg(cfg)
    assert migration.values["metastore"] == {"type": "mysql"}
    assert any("not a MySQL/MariaDB URL" in w for w in migration.warnings)


# -- one declaration per key: the docs tables, deprecated keys ----------------------------------
def test_docs_key_tables_are_up_to_date() -> None:
    text = (REPO / "docs/configuration.md").read_text()
    sections = [name for name, e in entries(Config).items() if isinstance(e.spec, Section)]
    assert sorted(config_docs.blocks(text)) == sorted(["top", *sections])  # every key has a row
    assert config_docs.update(text) == text, "run: python -m ha_toolkit.config.docs"


def test_docs_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = tmp_path / "configuration.md"
    text = (REPO / "docs/configuration.md").read_text()
    docs.write_text(text.replace("| `timings.poll_interval` | number > 0 | `3` |", "| x |"))
    assert config_docs.main([str(docs), "--check"]) == 1
    assert config_docs.main([str(docs)]) == 0
    assert docs.read_text() == text
    assert config_docs.main([str(docs), "--check"]) == 0


def test_every_field_is_a_declared_key_or_section() -> None:
    # A new field without its declaration would be neither checked nor documented.
    def undeclared(cls: type) -> list[str]:
        missing = []
        for field in dataclasses.fields(cls):
            if field.name in ("path", "warnings") and cls is Config:
                continue  # not keys of the file
            spec = spec_of(field)
            if spec is None:
                missing.append(f"{cls.__name__}.{field.name}")
            elif isinstance(spec, Section):
                missing += undeclared(spec.cls)
        return missing

    assert undeclared(Config) == []


def test_deprecated_state_dir_is_ignored_with_a_warning(tmp_path: Path) -> None:
    config = load(tmp_path, merged(state_dir="/var/lib/ha-toolkit"))
    assert config == load(tmp_path, BASE)
    (warning,) = config.warnings
    assert warning.startswith(f"{tmp_path / 'controller.yml'}: state_dir: ignored")
    assert "state_dir" not in known_keys() and not load(tmp_path, BASE).warnings
    assert not hasattr(config, "state_dir")
