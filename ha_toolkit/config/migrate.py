"""Migration from the 2017 airflow-scheduler-failover-controller: the [scheduler_failover]
section of an old airflow.cfg, read into values for a new config file.

Passwords are never carried over (a warning says where to put them), and every setting
that has no counterpart is listed in the warnings.
"""

from __future__ import annotations

import configparser
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ha_toolkit.config.checks import (
    HOST_PORT,
    PASSWORD_ENV,
    SMTP_PASSWORD_ENV,
    Problem,
    list_of,
)
from ha_toolkit.config.load import ConfigError
from ha_toolkit.config.model import Timings
from ha_toolkit.config.sample import tidy
from ha_toolkit.config.timing import check_timings


@dataclass(frozen=True)
class Migration:
    values: dict[str, Any]  # for write_sample_config
    masters: list[str]  # for the inventory's masters group, in failover order
    warnings: list[str]  # what was not carried over, and what to do about it


_OLD = "scheduler_failover"
_NO_COMMANDS = "ignored: the scheduler is the systemd unit service.unit"
_NO_LOG_FILES = "ignored: the controller logs to the journal"
_NO_SSH_PASSWORD = "ignored: nodes are reached by Ansible over SSH with keys"
_OLD_DROPPED = {
    "airflow_home_dir": _NO_COMMANDS,
    "airflow_scheduler_start_command": _NO_COMMANDS,
    "airflow_scheduler_stop_command": _NO_COMMANDS,
    "logging_dir": _NO_LOG_FILES,
    "logging_file_name": _NO_LOG_FILES,
    "logs_rotate_when": _NO_LOG_FILES,
    "logs_rotate_backup_count": _NO_LOG_FILES,
    "alert_email_subject": "ignored: alert subjects are fixed",
    "zookeeper_session_timeout_ms": "ignored: timings.lease_ttl bounds how long a lease lasts",
    "is_authenticate": _NO_SSH_PASSWORD,
    "is_encrypted": _NO_SSH_PASSWORD,
    "pass_word": _NO_SSH_PASSWORD,
    "crypt_key": _NO_SSH_PASSWORD,
}
_OLD_USED = {
    "scheduler_nodes_in_cluster",
    "metadata_service_type",
    "metadata_service_zookeeper_nodes",
    "zookeeper_nodes",
    "poll_frequency",
    "alert_to_email",
    "retry_count_before_alerting",
    "logging_level",
}


def _comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _dsn_from_sqlalchemy(conn: str, where: str, warnings: list[str]) -> str | None:
    """mysql://user@host:port/db from a SQLAlchemy URL, leaving out the password."""
    try:
        parts = urlsplit(conn)
        port = parts.port
    except ValueError:
        parts, port = None, None
    if parts is None or parts.scheme.split("+")[0] not in ("mysql", "mariadb"):
        warnings.append(
            f"{where}: not a MySQL/MariaDB URL; set metastore.dsn by hand "
            "(the SQL metastore needs MySQL or MariaDB)"
        )
        return None
    if not parts.hostname:
        warnings.append(f"{where}: no host (a socket?); set metastore.dsn by hand")
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    user = f"{parts.username}@" if parts.username else ""
    dsn = f"mysql://{user}{host}{f':{port}' if port else ''}{parts.path}"
    if parts.password:
        warnings.append(
            f"{where}: its password was not copied; put it in a file (mode 0600) named by "
            f"metastore.password_file, or in ${PASSWORD_ENV}"
        )
    if parts.query:
        warnings.append(f"{where}: its query options were dropped; see metastore.tls")
    return dsn


def _old_number(old: configparser.SectionProxy, key: str, path: Path) -> float | None:
    text = old.get(key)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{path}: {_OLD}.{key}: expected a number > 0, got {text!r}")
    tidied: float = tidy(value)  # 60.0 -> 60, as the new file will show it
    return tidied


def _migrate_timings(poll: float, warnings: list[str]) -> dict[str, float]:
    """poll_interval, and the timings the rules then require to be larger than the defaults."""
    default = Timings()
    t = replace(
        default,
        poll_interval=poll,
        lease_ttl=max(default.lease_ttl, 2 * poll),
        fence_after=max(default.fence_after, default.watchdog + 2 * poll),
        start_timeout=max(default.start_timeout, poll),
    )
    assert not check_timings(t), check_timings(t)
    changed = {k: v for k, v in vars(t).items() if v != getattr(default, k)}
    raised = [f"{k}={v:g}" for k, v in changed.items() if k != "poll_interval"]
    if raised:
        warnings.append(
            f"{_OLD}.poll_frequency: timings raised to follow the timing rules: {', '.join(raised)}"
        )
    return {k: tidy(v) for k, v in changed.items()}


def _migrate_smtp(
    parser: configparser.ConfigParser, to: list[str], path: Path, warnings: list[str]
) -> dict[str, Any]:
    smtp: dict[str, Any] = {"to": to}
    section = parser["smtp"] if parser.has_section("smtp") else None
    host = section.get("smtp_host", "").strip() if section else ""
    if not host:
        warnings.append("smtp.smtp_host: not set; alerts.smtp.host set to localhost")
    smtp["host"] = host or "localhost"
    if section is None:
        return smtp
    for old, new, convert in (
        ("smtp_port", "port", section.getint),
        ("smtp_starttls", "starttls", section.getboolean),
        ("smtp_ssl", "ssl", section.getboolean),
    ):
        if section.get(old, "").strip():
            try:
                smtp[new] = convert(old)
            except ValueError:
                expected = "a port number" if new == "port" else "True or False"
                raise ConfigError(
                    f"{path}: smtp.{old}: expected {expected}, got {section[old]!r}"
                ) from None
    if smtp.get("starttls") and smtp.get("ssl"):
        smtp["starttls"] = False
        warnings.append("smtp.smtp_starttls: dropped: smtp_ssl is also on and wins")
    if section.get("smtp_mail_from", "").strip():
        smtp["from"] = section["smtp_mail_from"].strip()
    if section.get("smtp_user", "").strip():
        smtp["user"] = section["smtp_user"].strip()
        if section.get("smtp_password", "").strip():
            warnings.append(
                "smtp.smtp_password: not copied; put it in a file (mode 0600) named by "
                f"alerts.smtp.password_file, or in ${SMTP_PASSWORD_ENV}"
            )
    return smtp


def config_from_airflow_cfg(path: Path) -> Migration:
    """Read the [scheduler_failover] section of an old airflow.cfg (and the SQL connection and
    [smtp] settings it used) into values for :func:`write_sample_config` and a masters list."""
    # No interpolation: airflow.cfg values contain '%'. A default section name that cannot
    # occur keeps a [DEFAULT] section from leaking its keys into every other section.
    parser = configparser.ConfigParser(interpolation=None, default_section="\0")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    try:
        parser.read_string(text, source=str(path))
    except configparser.ParsingError as exc:
        # Only the line number: the offending line might hold a secret.
        raise ConfigError(f"{path}: line {exc.errors[0][0]}: not an ini line") from None
    except configparser.Error as exc:
        raise ConfigError(f"{path}: not a valid airflow.cfg: {exc.message}") from None
    if not parser.has_section(_OLD):
        raise ConfigError(f"{path}: [{_OLD}]: section missing; nothing to migrate")
    old = parser[_OLD]
    warnings: list[str] = []
    values: dict[str, Any] = {}

    masters = _comma_list(old.get("scheduler_nodes_in_cluster", ""))
    if not masters:
        warnings.append(f"{_OLD}.scheduler_nodes_in_cluster: empty; list the masters yourself")
    if any(m in ("localhost", "127.0.0.1") for m in masters):
        warnings.append(
            f"{_OLD}.scheduler_nodes_in_cluster: localhost cannot name a master in an "
            "inventory shared by all nodes; use each master's name"
        )

    kind = old.get("metadata_service_type", "SQLMetadataService").strip()
    if kind == "SQLMetadataService":
        metastore: dict[str, Any] = {"type": "mysql"}
        for name in ("database", "core"):  # Airflow >= 2.3 reads [database] first
            conn = parser.get(name, "sql_alchemy_conn", fallback="").strip()
            if conn:
                dsn = _dsn_from_sqlalchemy(conn, f"{name}.sql_alchemy_conn", warnings)
                if dsn:
                    metastore["dsn"] = dsn
                break
        else:
            warnings.append(
                "sql_alchemy_conn: not found in [database] or [core]; set metastore.dsn"
            )
    elif kind == "ZookeeperMetadataService":
        metastore = {"type": "zookeeper"}
        key = "zookeeper_nodes" if "zookeeper_nodes" in old else "metadata_service_zookeeper_nodes"
        hosts = [h if ":" in h else f"{h}:2181" for h in _comma_list(old.get(key, ""))]
        try:
            metastore["hosts"] = list(list_of(HOST_PORT, "host:port", "")(hosts))
        except Problem as p:
            raise ConfigError(f"{path}: {_OLD}.{key}: {p.message}") from None
        if not hosts:
            warnings.append(f"{_OLD}.{key}: empty; set metastore.hosts")
    else:
        raise ConfigError(
            f"{path}: {_OLD}.metadata_service_type: expected SQLMetadataService or "
            f"ZookeeperMetadataService, got {kind!r}"
        )
    values["metastore"] = metastore

    poll = _old_number(old, "poll_frequency", path)
    timings = _migrate_timings(poll, warnings) if poll is not None else {}
    if timings:
        values["timings"] = timings

    alerts: dict[str, Any] = {}
    retries = _old_number(old, "retry_count_before_alerting", path)
    if retries is not None:
        alerts["after_failed_polls"] = max(1, round(retries))
    to = _comma_list(old.get("alert_to_email", ""))
    if to:
        alerts["smtp"] = _migrate_smtp(parser, to, path, warnings)
    if alerts:
        values["alerts"] = alerts

    level = old.get("logging_level", "").strip().upper()
    level = {"WARN": "WARNING", "FATAL": "CRITICAL"}.get(level, level)
    if level in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        values["logging"] = {"level": level}
    elif level:
        warnings.append(f"{_OLD}.logging_level: {level!r} has no counterpart; INFO is used")

    for key in old:
        if key in _OLD_DROPPED:
            warnings.append(f"{_OLD}.{key}: {_OLD_DROPPED[key]}")
        elif key not in _OLD_USED:
            warnings.append(f"{_OLD}.{key}: unknown key, ignored")
    return Migration(values, masters, warnings)
