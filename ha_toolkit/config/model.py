"""The controller's configuration: every key of the file, declared once.

Each field below is a key (or a section) of the YAML file: how its value is checked, its
default, and the text that explains it, in the sample file written by ``ha-toolkit init``
and in the key tables of docs/configuration.md (both generated from here). The rules
between keys, and the secrets, are in load.py; the timing rules in timing.py.

Secrets (passwords) never appear in a repr or a str.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

from ha_toolkit.config.checks import (
    BOOLEAN,
    DSN,
    EMAIL,
    HOST_PORT,
    HOSTNAME,
    HTTP_URL,
    PASSWORD_ENV,
    PATH,
    POSITIVE,
    SECRET,
    SMTP_PASSWORD_ENV,
    enum,
    integer,
    list_of,
    number,
    string,
)
from ha_toolkit.config.schema import key, section

DEFAULT_PATH = Path("/etc/ha-toolkit/controller.yml")

_HOST_NAME = string("a host name", "host name", HOSTNAME.pattern)
_USER = string("a user name", "string")


@dataclass(frozen=True)
class TLSConfig:
    enabled: bool = field(default=False, metadata=key(BOOLEAN, "Use TLS to the metastore."))
    ca_file: str | None = field(
        default=None,
        metadata=key(
            PATH,
            "CA bundle to verify the server.",
            active=False,
            example="/etc/ssl/ca.pem",
            nullable=True,
            default_doc="system CAs",
        ),
    )
    cert_file: str | None = field(
        default=None,
        metadata=key(
            PATH,
            "Client certificate; needs key_file.",
            active=False,
            example="/etc/ha-toolkit/client.pem",
            nullable=True,
        ),
    )
    key_file: str | None = field(
        default=None,
        metadata=key(
            PATH,
            "Client key; needs cert_file; must not be world-readable.",
            active=False,
            example="/etc/ha-toolkit/client.key",
            nullable=True,
        ),
    )


@dataclass(frozen=True)
class MetastoreConfig:
    type: str = field(
        default="mysql",
        metadata=key(
            enum("mysql", "zookeeper"), "Backend: mysql or zookeeper.", default_doc="**required**"
        ),
    )
    dsn: str | None = field(
        default=None,
        metadata=key(
            DSN,
            "mysql only: the MySQL/MariaDB server; no password, query string or other scheme.",
            active=False,
            example="mysql://ha_toolkit@db1:3306/ha_toolkit",
            nullable=True,
            default_doc="**required for mysql**",
        ),
    )
    hosts: tuple[str, ...] = field(
        default=(),
        metadata=key(
            list_of(HOST_PORT, "host:port", "list of `host:port` (`[v6addr]:port`)"),
            "zookeeper only: the ensemble.",
            active=False,
            example=["zk1:2181", "zk2:2181", "zk3:2181"],
            nullable=True,
            default_doc="**required for zookeeper**",
        ),
    )
    user: str | None = field(
        default=None,
        metadata=key(
            _USER,
            "mysql: in the DSN or here (both must agree); zookeeper: digest auth user, "
            "none if unset.",
            active=False,
            example="ha_toolkit",
            nullable=True,
            default_doc="user of the DSN",
        ),
    )
    password_file: str | None = field(
        default=None,
        metadata=key(
            PATH,
            f"File holding the password; must not be world-readable. Or set ${PASSWORD_ENV}.",
            active=False,
            example="/etc/ha-toolkit/metastore.password",
            nullable=True,
        ),
    )
    # The password itself, from password_file, this key or the environment (load.py).
    password: str | None = field(
        default=None,
        repr=False,
        metadata=key(
            SECRET,
            "Inline password: discouraged, use password_file.",
            active=False,
            example="secret",
            nullable=True,
        ),
    )
    prefix: str = field(
        default="ha_toolkit",
        metadata=key(
            string(
                "an identifier of up to 32 characters",
                "identifier, ≤ 32 chars",
                r"[A-Za-z_][A-Za-z0-9_]{0,31}",
            ),
            "Table prefix (mysql) or root znode (zookeeper).",
        ),
    )
    connect_timeout: float = field(
        default=3.0,
        metadata=key(
            POSITIVE,
            "Seconds one metastore call may wait for a connection and its answers before "
            "it fails; < timings.watchdog (the controller feeds the watchdog between calls).",
        ),
    )
    tls: TLSConfig = field(
        default_factory=TLSConfig, metadata=section(TLSConfig, "TLS to the metastore.")
    )


@dataclass(frozen=True)
class Timings:
    poll_interval: float = field(
        default=3.0,
        metadata=key(
            POSITIVE,
            "Seconds between polls: the ACTIVE renews its lease, every controller re-reads "
            "(confirms) its placement, the ACTIVE acts.",
        ),
    )
    lease_ttl: float = field(
        default=10.0,
        metadata=key(
            POSITIVE,
            "How long the ACTIVE's lease lasts without a renew; >= 2 x poll_interval.",
        ),
    )
    fence_after: float = field(
        default=11.0,
        metadata=key(
            POSITIVE,
            "A node's scheduler is stopped at the latest this long after its placement was "
            "last confirmed (the controller fences itself at fence_after - watchdog; systemd's "
            "watchdog covers a hung controller); >= watchdog + 2 x poll_interval.",
        ),
    )
    start_timeout: float = field(
        default=60.0,
        metadata=key(
            POSITIVE,
            "Time a scheduler may take to become healthy before it counts as failed; "
            ">= poll_interval.",
        ),
    )
    stop_timeout: float = field(
        default=3.0,
        metadata=key(POSITIVE, "Time a scheduler may take to stop gracefully (then SIGKILL)."),
    )
    watchdog: float = field(
        default=5.0,
        metadata=key(POSITIVE, "systemd WatchdogSec of the controller unit; < fence_after."),
    )
    clock_drift: float = field(
        default=0.05,
        metadata=key(
            number("a number >= 0 and < 0.5", lambda x: 0 <= x < 0.5, "number in [0, 0.5)"),
            "Bound on how much faster or slower one node's clock runs than another's, "
            "as a fraction.",
        ),
    )


@dataclass(frozen=True)
class ServiceConfig:
    unit: str = field(
        default="airflow-scheduler",
        metadata=key(
            string("a systemd unit name", "systemd unit name", r"[A-Za-z0-9:_.@\\-]+"),
            "systemd unit of the Airflow scheduler on the masters.",
        ),
    )
    health_url: str | None = field(
        default="http://127.0.0.1:8974/health",
        metadata=key(
            HTTP_URL,
            "Scheduler health check, fetched on the node; null disables it.",
            nullable=True,
        ),
    )


@dataclass(frozen=True)
class SMTPConfig:
    host: str = field(
        metadata=key(
            _HOST_NAME,
            "Mail server.",
            active=False,
            example="mail1",
            default_doc="**required with smtp**",
        )
    )
    port: int = field(
        default=25,
        metadata=key(integer(1, 65535), "Port: 25, 587 with starttls, 465 with ssl.", active=False),
    )
    sender: str = field(
        default="ha-toolkit@localhost",
        metadata=key(
            EMAIL, "Sender address.", name="from", active=False, example="ha-toolkit@example.com"
        ),
    )
    to: tuple[str, ...] = field(
        default=(),
        metadata=key(
            list_of(EMAIL, "email addresses", "list of addresses"),
            "Recipients, at least one.",
            active=False,
            example=["ops@example.com"],
            default_doc="**at least one**",
        ),
    )
    starttls: bool = field(
        default=False,
        metadata=key(BOOLEAN, "Upgrade the connection with STARTTLS.", active=False),
    )
    ssl: bool = field(
        default=False,
        metadata=key(BOOLEAN, "Connect with TLS from the start (not with starttls).", active=False),
    )
    user: str | None = field(
        default=None,
        metadata=key(_USER, "Login user; no login without it.", active=False, example="alerts"),
    )
    password_file: str | None = field(
        default=None,
        metadata=key(
            PATH,
            "File holding the login password; must not be world-readable. "
            f"Or set ${SMTP_PASSWORD_ENV}.",
            active=False,
            example="/etc/ha-toolkit/smtp.password",
            nullable=True,
        ),
    )
    # The password itself, from password_file, this key or the environment (load.py).
    password: str | None = field(
        default=None,
        repr=False,
        metadata=key(
            SECRET,
            "Inline password: discouraged, use password_file.",
            active=False,
            example="secret",
            nullable=True,
        ),
    )


@dataclass(frozen=True)
class AlertsConfig:
    after_failed_polls: int = field(
        default=5,
        metadata=key(
            integer(1), "Alert after this many polls in a row without a healthy scheduler."
        ),
    )
    recovery_after: float = field(
        default=60.0,
        metadata=key(
            number("a number >= 0", lambda x: x >= 0, "number ≥ 0"),
            "Seconds a scheduler must stay healthy after an alert before the recovery notice "
            "goes out; a failure before then is the same incident (no second alert). "
            "0: recover at the first healthy poll.",
        ),
    )
    smtp: SMTPConfig | None = field(
        default=None,
        metadata=section(SMTPConfig, "Mail alerts; leave commented out for none.", optional=True),
    )
    webhook_url: str | None = field(
        default=None,
        metadata=key(
            HTTP_URL,
            "POST a JSON alert here.",
            active=False,
            example="https://hooks.example.com/ha-toolkit",
            nullable=True,
        ),
    )


@dataclass(frozen=True)
class LoggingConfig:
    level: str = field(
        default="INFO",
        metadata=key(
            enum("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", fold_case=True),
            "Log level: DEBUG, INFO, WARNING, ERROR or CRITICAL.",
        ),
    )
    json: bool = field(
        default=False, metadata=key(BOOLEAN, "One JSON object per line instead of text.")
    )


@dataclass(frozen=True)
class MetricsConfig:
    listen: str | None = field(
        default=None,
        metadata=key(
            HOST_PORT,
            "Prometheus endpoint address.",
            active=False,
            example="127.0.0.1:9108",
            nullable=True,
            default_doc="unset: no endpoint",
        ),
    )


@dataclass(frozen=True)
class Config:
    path: Path  # the file it was read from (not a key)
    metastore: MetastoreConfig = field(
        metadata=section(
            MetastoreConfig, "Where the lease, its fencing epoch and the placement live."
        )
    )
    node_name: str = field(
        default_factory=socket.gethostname,
        metadata=key(
            _HOST_NAME,
            "This node's name in the inventory.",
            active=False,
            example="node1",
            default_doc="this machine's hostname",
        ),
    )
    inventory: Path = field(
        default=Path("/etc/ha-toolkit/inventory.yml"),
        metadata=key(
            PATH,
            "Ansible inventory listing the masters (may not exist yet: init creates it).",
        ),
    )
    masters_group: str = field(
        default="masters",
        metadata=key(
            string("an Ansible group name", "Ansible group name", r"[A-Za-z_][A-Za-z0-9_]*"),
            "Inventory group of the masters; its order is the failover order.",
        ),
    )
    timings: Timings = field(
        default_factory=Timings,
        metadata=section(
            Timings, "Seconds; the rules between them are checked (docs/configuration.md)."
        ),
    )
    service: ServiceConfig = field(
        default_factory=ServiceConfig, metadata=section(ServiceConfig, "The scheduler service.")
    )
    alerts: AlertsConfig = field(
        default_factory=AlertsConfig,
        metadata=section(AlertsConfig, "Alerts when no healthy scheduler runs."),
    )
    logging: LoggingConfig = field(
        default_factory=LoggingConfig,
        metadata=section(LoggingConfig, "Controller logs (to stderr: the journal)."),
    )
    metrics: MetricsConfig = field(
        default_factory=MetricsConfig,
        metadata=section(MetricsConfig, "Prometheus metrics; leave commented out for none."),
    )
    # What the file has that is no longer used (a deprecated key), to be logged; not a key.
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def metrics_listen(self) -> str | None:
        """The Prometheus endpoint's host:port, if any."""
        return self.metrics.listen
