"""Controller configuration: one YAML file, validated up front.

Every problem is reported as one line naming the file, the key and what was
expected (:class:`ConfigError`); the CLI exits 2 on it.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PATH = Path("/etc/ha-toolkit/controller.yml")
PASSWORD_ENV = "HA_TOOLKIT_METASTORE_PASSWORD"
SMTP_PASSWORD_ENV = "HA_TOOLKIT_SMTP_PASSWORD"


class ConfigError(Exception):
    """One line: '<file>: <key>: <what was expected>'."""


@dataclass(frozen=True)
class TLSConfig:
    enabled: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


@dataclass(frozen=True)
class MetastoreConfig:
    type: str = "mysql"  # mysql | zookeeper
    dsn: str | None = None  # mysql://user@host:port/database (no password in it)
    hosts: tuple[str, ...] = ()  # zookeeper: host:port, ...
    user: str | None = None
    password: str | None = field(default=None, repr=False)  # resolved from file/env
    prefix: str = "ha_toolkit"  # table prefix (mysql) or root znode (zookeeper)
    connect_timeout: float = 5.0
    tls: TLSConfig = TLSConfig()


@dataclass(frozen=True)
class Timings:
    poll_interval: float = 10.0
    lease_ttl: float = 30.0
    fence_after: float = 20.0
    start_timeout: float = 60.0
    stop_timeout: float = 30.0
    watchdog: float = 15.0  # systemd WatchdogSec of the controller unit
    clock_drift: float = 0.05  # bound on clock *rate* difference, as a fraction


@dataclass(frozen=True)
class ServiceConfig:
    unit: str = "airflow-scheduler"
    health_url: str | None = "http://127.0.0.1:8974/health"


@dataclass(frozen=True)
class SMTPConfig:
    host: str
    port: int = 25
    sender: str = "ha-toolkit@localhost"  # key `from` in the file
    to: tuple[str, ...] = ()
    starttls: bool = False
    ssl: bool = False
    user: str | None = None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class AlertsConfig:
    after_failed_polls: int = 5
    smtp: SMTPConfig | None = None
    webhook_url: str | None = None


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"
    json: bool = False


@dataclass(frozen=True)
class Config:
    path: Path
    metastore: MetastoreConfig
    node_name: str = field(default_factory=socket.gethostname)
    inventory: Path = Path("/etc/ha-toolkit/inventory.yml")
    masters_group: str = "masters"
    timings: Timings = Timings()
    service: ServiceConfig = ServiceConfig()
    alerts: AlertsConfig = AlertsConfig()
    logging: LoggingConfig = LoggingConfig()
    metrics_listen: str | None = None  # "host:port"
    state_dir: Path = Path("/var/lib/ha-toolkit")
