"""Controller configuration: one YAML file, validated up front.

Every problem is reported as one line naming the file, the key and what was
expected (:class:`ConfigError`); the CLI exits 2 on it.

The keys are described once, in ``_SCHEMA``: how each value is checked, its
comment in the sample file and the value the sample shows. The reference with
the reasoning behind every rule is docs/configuration.md.

Secrets (passwords) never appear in an error message, a repr or a str.
"""

from __future__ import annotations

import configparser
import difflib
import ipaddress
import math
import os
import re
import socket
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

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
    fence_after: float = 30.0
    start_timeout: float = 60.0
    stop_timeout: float = 20.0
    watchdog: float = 5.0  # systemd WatchdogSec of the controller unit
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


# ---------------------------------------------------------------------------------------------
# Timing rules: the safety argument (docs/configuration.md, "Timing rules") rests on them.

# (key, relation, factor, other key): key must be >= / < factor x other.
_TIMING_RULES: tuple[tuple[str, str, float, str], ...] = (
    # The ACTIVE renews every poll: one missed renew must not lose the lease.
    ("lease_ttl", ">=", 2, "poll_interval"),
    # Every controller confirms its placement every poll: one missed read must not fence it.
    ("fence_after", ">=", 2, "poll_interval"),
    # A controller that hangs right after confirming its placement cannot fence itself:
    # systemd must kill it (and its scheduler with it) before it would have fenced itself.
    # No lower bound: the controller pings on its own timer (every watchdog/3), not per poll.
    ("watchdog", "<", 1, "fence_after"),
    # A scheduler's health is sampled once a poll: a shorter start timeout cannot be judged.
    ("start_timeout", ">=", 1, "poll_interval"),
)


def check_timings(t: Timings) -> list[str]:
    """Every broken timing rule, as '<timings.key>: <rule> (<the numbers>)'; empty if sound."""
    problems = [
        f"timings.{name}: must be > 0 (got {value:g})"
        for name, value in vars(t).items()
        if name != "clock_drift" and not value > 0
    ]
    if not 0 <= t.clock_drift < 0.5:
        problems.append(f"timings.clock_drift: must be >= 0 and < 0.5 (got {t.clock_drift:g})")
    if problems:
        return problems  # the ratios below mean nothing for non-positive values
    for name, relation, factor, other in _TIMING_RULES:
        value, bound = getattr(t, name), getattr(t, other)
        times = f"{factor:g} × " if factor != 1 else ""  # noqa: RUF001 (a multiplication sign)
        if relation == ">=" and not value >= factor * bound:
            problems.append(
                f"timings.{name}: must be at least {times}timings.{other} "
                f"({value:g} < {times}{bound:g})"
            )
        if relation == "<" and not value < factor * bound:
            problems.append(
                f"timings.{name}: must be less than {times}timings.{other} "
                f"({value:g} >= {times}{bound:g})"
            )
    # The controller stops feeding the watchdog once its node's placement has gone
    # unconfirmed for fence_after - watchdog (so a hung loop dies by fence_after); it
    # re-confirms once a poll, so that window must hold two polls or a healthy
    # controller would starve its own watchdog.
    if not problems and not t.fence_after - t.watchdog >= 2 * t.poll_interval:
        problems.append(
            "timings.fence_after: must be at least timings.watchdog + 2 × "  # noqa: RUF001
            f"timings.poll_interval ({t.fence_after:g} < {t.watchdog:g} + 2 × "  # noqa: RUF001
            f"{t.poll_interval:g})"
        )
    return problems


def move_wait(t: Timings) -> float:
    """Seconds the ACTIVE waits, after writing a new placement, before it starts the scheduler
    on the new node when the old node did not confirm its stop.

    The old node's last confirmation of its placement was read before the new placement was
    written; it stops trusting that confirmation ``fence_after`` later and then needs up to
    ``stop_timeout`` to stop the scheduler. Those seconds pass on the old node's clock, which
    may run slower than ours by ``clock_drift``. The old node notices its deadline only when
    its loop runs and its metastore read returns: one ``poll_interval`` of margin for that.
    (A hung old controller: see "Timing rules" in docs/configuration.md.)
    """
    return (t.fence_after + t.stop_timeout) * (1 + t.clock_drift) + t.poll_interval


# ---------------------------------------------------------------------------------------------
# Value checks. Each takes the parsed YAML value and returns the converted one, or raises
# _Problem with "expected ..., got ..." (the caller adds file and key).


class _Problem(Exception):
    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.key = key

    def line(self, path: Path) -> str:
        return f"{path}: {self.key}: {self.message}" if self.key else f"{path}: {self.message}"


Check = Callable[[Any], Any]


def _kind(value: object) -> str:
    """What a value is, without showing it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def _show(value: object) -> str:
    """A value as the user wrote it, for "got ..." (never used for secrets)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, int | float):
        return repr(value)
    return _kind(value)


def _number(expected: str, ok: Callable[[float], bool]) -> Check:
    def check(value: Any) -> float:
        # bool is an int in Python, but `true` is never a sensible number of seconds.
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not ok(value)
        ):
            raise _Problem(f"expected {expected}, got {_show(value)}")
        return float(value)

    return check


def _integer(low: int, high: int | None = None) -> Check:
    expected = f"an integer >= {low}" if high is None else f"an integer {low}-{high}"

    def check(value: Any) -> int:
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < low
            or (high is not None and value > high)
        ):
            raise _Problem(f"expected {expected}, got {_show(value)}")
        return value

    return check


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Problem(f"expected true or false, got {_show(value)}")
    return value


def _string(expected: str, pattern: str = r".+") -> Check:
    regex = re.compile(pattern)

    def check(value: Any) -> str:
        if not isinstance(value, str) or not regex.fullmatch(value):
            raise _Problem(f"expected {expected}, got {_show(value)}")
        return value

    return check


def _enum(*choices: str, fold_case: bool = False) -> Check:
    def check(value: Any) -> str:
        found = value.upper() if fold_case and isinstance(value, str) else value
        if found not in choices:
            raise _Problem(f"expected one of {', '.join(choices)}, got {_show(value)}")
        return str(found)

    return check


def _secret(value: Any) -> str:
    # Never show the value: only its kind. YAML reads `password: 0123` as a number, so ask
    # for quotes rather than converting it (83 would be the wrong password).
    if not isinstance(value, str) or not value:
        raise _Problem(f"expected a non-empty string (quote it), got {_kind(value)}")
    return value


_HOSTNAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?")


def _valid_host(host: str) -> bool:
    if _HOSTNAME.fullmatch(host):
        return True
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


def _host_port(value: Any) -> str:
    expected = "host:port (IPv6 as [addr]:port)"
    if isinstance(value, str):
        host, sep, port = value.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
            ok = ":" in host and _valid_host(host)  # brackets are for IPv6 only
        else:
            ok = ":" not in host and _valid_host(host)
        if sep and ok and port.isdigit() and 1 <= int(port) <= 65535:
            return value
    raise _Problem(f"expected {expected}, got {_show(value)}")


def _http_url(value: Any) -> str:
    # Describe what is wrong without echoing the URL: webhook URLs often carry a token.
    expected = "an http:// or https:// URL with a host"
    if not isinstance(value, str):
        raise _Problem(f"expected {expected}, got {_kind(value)}")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise _Problem(f"expected {expected}, got one with a bad host or port") from None
    if parts.scheme not in ("http", "https"):
        got = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        raise _Problem(f"expected {expected}, got {got}")
    if not parts.hostname or not _valid_host(parts.hostname) or port == 0:
        raise _Problem(f"expected {expected}, got one with a bad host or port")
    return value


def _dsn(value: Any) -> str:
    # Never echoes the DSN: a password may have been put in it.
    expected = "expected mysql://user@host[:port]/database"
    if not isinstance(value, str):
        raise _Problem(f"{expected}, got {_kind(value)}")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise _Problem(f"{expected}, got a bad host or port") from None
    if parts.password is not None:
        raise _Problem(
            f"must not contain a password: put it in metastore.password_file or ${PASSWORD_ENV}"
        )
    if parts.scheme != "mysql":
        got = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        raise _Problem(f"{expected}, got {got}")
    if not parts.hostname or not _valid_host(parts.hostname) or port == 0:
        raise _Problem(f"{expected}, got no host or a bad host or port")
    if not re.fullmatch(r"/[^/]+", parts.path):
        raise _Problem(f"{expected}, got no database name")
    if parts.query or parts.fragment:
        raise _Problem(f"{expected}, got a query string or fragment")
    return value


def _list_of(item: Check, expected: str) -> Check:
    def check(value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise _Problem(f"expected a list of {expected}, got {_show(value)}")
        out = []
        for n, element in enumerate(value, 1):
            try:
                out.append(item(element))
            except _Problem as p:
                raise _Problem(f"item {n}: {p.message}") from None
        return tuple(out)

    return check


def _tidy(x: float) -> float:
    """10.0 -> 10, for files people read."""
    return int(x) if float(x).is_integer() else x


_POSITIVE = _number("a number > 0", lambda x: x > 0)
_PATH = _string("a path", r"[^\x00]+")
_EMAIL = _string("an email address", r"[^@\s]+@[^@\s]+")


# ---------------------------------------------------------------------------------------------
# The schema: one table for validation and the sample file.


@dataclass(frozen=True)
class _Key:
    check: Check
    doc: str  # the comment above the key in the sample file
    example: Any  # shown in the sample; for `active` keys it must equal the default
    active: bool = True  # False: written commented out unless a value is given
    nullable: bool = False  # null is allowed and means "unset"


@dataclass(frozen=True)
class _Section:
    keys: Mapping[str, _Key | _Section]
    doc: str
    optional: bool = False  # null or omitted means "off" (None), not "all defaults"


_SMTP = _Section(
    {
        "host": _Key(_string("a host name", _HOSTNAME.pattern), "Mail server.", "mail1", False),
        "port": _Key(_integer(1, 65535), "Port: 25, 587 with starttls, 465 with ssl.", 25, False),
        "from": _Key(_EMAIL, "Sender address.", "ha-toolkit@example.com", False),
        "to": _Key(
            _list_of(_EMAIL, "email addresses"),
            "Recipients, at least one.",
            ["ops@example.com"],
            False,
        ),
        "starttls": _Key(_boolean, "Upgrade the connection with STARTTLS.", False, False),
        "ssl": _Key(_boolean, "Connect with TLS from the start (not with starttls).", False, False),
        "user": _Key(_string("a user name"), "Login user; no login without it.", "alerts", False),
        "password_file": _Key(
            _PATH,
            f"File holding the login password (not world-readable), or set ${SMTP_PASSWORD_ENV}.",
            "/etc/ha-toolkit/smtp.password",
            False,
            nullable=True,
        ),
        "password": _Key(
            _secret, "Inline password: discouraged, use password_file.", "secret", False, True
        ),
    },
    "Mail alerts; leave commented out for none.",
    optional=True,
)

_TLS = _Section(
    {
        "enabled": _Key(_boolean, "Use TLS to the metastore.", False),
        "ca_file": _Key(_PATH, "CA bundle; default: the system's.", "/etc/ssl/ca.pem", False, True),
        "cert_file": _Key(
            _PATH, "Client certificate (with key_file).", "/etc/ha-toolkit/client.pem", False, True
        ),
        "key_file": _Key(
            _PATH, "Client key; not world-readable.", "/etc/ha-toolkit/client.key", False, True
        ),
    },
    "TLS to the metastore.",
)

_TIMING_DOCS = {
    "poll_interval": "Seconds between polls: renew the lease, confirm the placement, act.",
    "lease_ttl": "Seconds the ACTIVE's lease lasts; >= 2 x poll_interval.",
    "fence_after": "A node stops its scheduler when its placement is unconfirmed this long; "
    ">= 2 x poll_interval.",
    "start_timeout": "Seconds a scheduler may take to become healthy; >= poll_interval.",
    "stop_timeout": "Seconds a scheduler may take to stop.",
    "watchdog": "systemd WatchdogSec of the controller; < fence_after.",
}

_SCHEMA = _Section(
    {
        "node_name": _Key(
            _string("a host name", _HOSTNAME.pattern),
            "This node's name in the inventory. Default: this machine's hostname.",
            "node1",
            False,
        ),
        "inventory": _Key(
            _PATH,
            "Ansible inventory listing the masters (may not exist yet: init creates it).",
            "/etc/ha-toolkit/inventory.yml",
        ),
        "masters_group": _Key(
            _string("an Ansible group name", r"[A-Za-z_][A-Za-z0-9_]*"),
            "Inventory group of the master nodes, in failover order.",
            "masters",
        ),
        "state_dir": _Key(
            _PATH, "Directory for the controller's local state.", "/var/lib/ha-toolkit"
        ),
        "metastore": _Section(
            {
                "type": _Key(_enum("mysql", "zookeeper"), "mysql | zookeeper (required).", "mysql"),
                "dsn": _Key(
                    _dsn,
                    "mysql only (required): mysql://user@host:port/database, no password.",
                    "mysql://ha_toolkit@db1:3306/ha_toolkit",
                    False,
                    nullable=True,
                ),
                "hosts": _Key(
                    _list_of(_host_port, "host:port"),
                    "zookeeper only (required): the ensemble.",
                    ["zk1:2181", "zk2:2181", "zk3:2181"],
                    False,
                    nullable=True,
                ),
                "user": _Key(
                    _string("a user name"),
                    "User: zookeeper digest auth; for mysql, if not in the DSN.",
                    "ha_toolkit",
                    False,
                    nullable=True,
                ),
                "password_file": _Key(
                    _PATH,
                    f"File holding the password (not world-readable), or set ${PASSWORD_ENV}.",
                    "/etc/ha-toolkit/metastore.password",
                    False,
                    nullable=True,
                ),
                "password": _Key(
                    _secret,
                    "Inline password: discouraged, use password_file.",
                    "secret",
                    False,
                    nullable=True,
                ),
                "prefix": _Key(
                    _string("an identifier of up to 32 characters", r"[A-Za-z_][A-Za-z0-9_]{0,31}"),
                    "Table prefix (mysql) or root znode (zookeeper).",
                    "ha_toolkit",
                ),
                "connect_timeout": _Key(
                    _POSITIVE, "Seconds to wait for a connection or an answer.", 5
                ),
                "tls": _TLS,
            },
            "Where the lease, its fencing epoch and the placement live.",
        ),
        "timings": _Section(
            {
                name: _Key(_POSITIVE, doc, _tidy(getattr(Timings(), name)))
                for name, doc in _TIMING_DOCS.items()
            }
            | {
                "clock_drift": _Key(
                    _number("a number >= 0 and < 0.5", lambda x: 0 <= x < 0.5),
                    "Bound on how much faster or slower any clock runs, as a fraction.",
                    0.05,
                )
            },
            "Seconds; the rules between them are checked (docs/configuration.md).",
        ),
        "service": _Section(
            {
                "unit": _Key(
                    _string("a systemd unit name", r"[A-Za-z0-9:_.@\\-]+"),
                    "systemd unit of the Airflow scheduler on the masters.",
                    "airflow-scheduler",
                ),
                "health_url": _Key(
                    _http_url,
                    "Scheduler health check, fetched on the node; null disables it.",
                    "http://127.0.0.1:8974/health",
                    nullable=True,
                ),
            },
            "The scheduler service.",
        ),
        "alerts": _Section(
            {
                "after_failed_polls": _Key(
                    _integer(1), "Alert after this many polls in a row without a scheduler.", 5
                ),
                "smtp": _SMTP,
                "webhook_url": _Key(
                    _http_url,
                    "POST a JSON alert here.",
                    "https://hooks.example.com/ha-toolkit",
                    False,
                    nullable=True,
                ),
            },
            "Alerts when no scheduler runs.",
        ),
        "logging": _Section(
            {
                "level": _Key(
                    _enum("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", fold_case=True),
                    "DEBUG | INFO | WARNING | ERROR | CRITICAL.",
                    "INFO",
                ),
                "json": _Key(_boolean, "One JSON object per line instead of text.", False),
            },
            "Controller logs (to stderr: the journal).",
        ),
        "metrics": _Section(
            {
                "listen": _Key(
                    _host_port, "Prometheus endpoint address.", "127.0.0.1:9108", False, True
                )
            },
            "Prometheus metrics; leave commented out for none.",
            optional=True,
        ),
    },
    "",
)


def known_keys() -> list[str]:
    """Every key of the file, dotted (``metastore.tls.enabled``), in file order."""

    def walk(section: _Section, prefix: str) -> list[str]:
        out = []
        for name, spec in section.keys.items():
            if isinstance(spec, _Section):
                out += walk(spec, f"{prefix}{name}.")
            else:
                out.append(f"{prefix}{name}")
        return out

    return walk(_SCHEMA, "")


def _unknown_key(key: object, section: _Section, prefix: str) -> str:
    close = difflib.get_close_matches(str(key), list(section.keys), n=1)
    if close:
        return f"unknown key; did you mean {prefix}{close[0]}?"
    elsewhere = [k for k in known_keys() if k.endswith(f".{key}")]
    if elsewhere:
        return f"unknown key here; did you mean {elsewhere[0]}?"
    return f"unknown key; expected one of: {', '.join(section.keys)}"


def _walk(raw: Mapping[Any, Any], section: _Section, prefix: str) -> dict[str, Any]:
    """Check every key against `section`; return the converted values of the keys given."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"{prefix}{key if isinstance(key, str) else _show(key)}"  # `yes:` is a bool key
        spec = section.keys.get(key) if isinstance(key, str) else None
        if spec is None:
            raise _Problem(_unknown_key(key, section, prefix), name)
        if isinstance(spec, _Section):
            if value is None:  # `timings:` with everything under it commented out
                out[key] = None if spec.optional else {}
            elif isinstance(value, dict):
                out[key] = _walk(value, spec, f"{name}.")
            else:
                raise _Problem(f"expected a mapping, got {_show(value)}", name)
        elif value is None and spec.nullable:
            out[key] = None
        else:
            try:
                out[key] = spec.check(value)
            except _Problem as p:
                raise _Problem(p.message, name) from None
    return out


# ---------------------------------------------------------------------------------------------
# Building the dataclasses: cross-key rules, files and secrets.


def _resolve(base: Path, value: str) -> Path:
    # Relative paths are relative to the config file, not to the (systemd: /) working dir.
    return base / value


def _check_file(path: Path, key: str, secret: bool) -> None:
    try:
        st = path.stat()
    except FileNotFoundError:
        # A file that exists is a real path and may be shown; a missing one may be a password
        # pasted in the wrong place.
        shown = "the file it names" if secret else str(path)
        raise _Problem(f"expected an existing file, but {shown} does not exist", key) from None
    except OSError as exc:
        raise _Problem(f"cannot read {path}: {exc.strerror}", key) from None
    if not stat.S_ISREG(st.st_mode):
        raise _Problem(f"expected a regular file, got {path} which is not one", key)
    if secret and st.st_mode & 0o004:
        raise _Problem(
            f"secrets must not be world-readable: {path} has mode "
            f"{stat.S_IMODE(st.st_mode):04o} (chmod o-rwx {path})",
            key,
        )
    if not os.access(path, os.R_OK):
        raise _Problem(f"cannot read {path}: permission denied", key)


def _read_secret(path: Path, key: str) -> str:
    _check_file(path, key, secret=True)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise _Problem(f"cannot read {path}: {exc.strerror}", key) from None
    except UnicodeDecodeError:
        raise _Problem(f"{path} is not UTF-8 text", key) from None
    secret = text.rstrip("\r\n")  # `echo pw > file` and editors add a newline
    if not secret:
        raise _Problem(f"{path} is empty", key)
    return secret


def _password(
    v: Mapping[str, Any],
    prefix: str,
    user: str | None,
    base: Path,
    env: Mapping[str, str],
    var: str,
) -> str | None:
    """password_file, else inline password, else the environment (only when there is a user:
    a stray variable must not turn on a login nobody configured)."""
    inline, file = v.get("password"), v.get("password_file")
    if inline is not None and file is not None:
        raise _Problem("give either password or password_file, not both", f"{prefix}.password")
    if (inline is not None or file is not None) and not user:
        raise _Problem("required when a password is given", f"{prefix}.user")
    if file is not None:
        return _read_secret(_resolve(base, file), f"{prefix}.password_file")
    if inline is not None:
        return str(inline)
    return (env.get(var) or None) if user else None


def _tls(v: Mapping[str, Any], base: Path) -> TLSConfig:
    files = {k: _resolve(base, v[k]) for k in ("ca_file", "cert_file", "key_file") if v.get(k)}
    if ("cert_file" in files) != ("key_file" in files):
        missing = "key_file" if "cert_file" in files else "cert_file"
        other = "cert_file" if missing == "key_file" else "key_file"
        raise _Problem(f"required with metastore.tls.{other}", f"metastore.tls.{missing}")
    enabled = bool(v.get("enabled", False))
    if enabled:  # the first connection needs them: say so now rather than at 3 a.m.
        for k, p in files.items():
            _check_file(p, f"metastore.tls.{k}", secret=k == "key_file")
    return TLSConfig(enabled=enabled, **{k: str(p) for k, p in files.items()})


def _metastore(v: Mapping[str, Any], base: Path, env: Mapping[str, str]) -> MetastoreConfig:
    kind = v.get("type")
    if kind is None:
        raise _Problem("required: mysql or zookeeper", "metastore.type")
    user: str | None = v.get("user")
    dsn, hosts = v.get("dsn"), v.get("hosts")
    if kind == "mysql":
        if dsn is None:
            raise _Problem(
                "required when metastore.type is mysql: mysql://user@host:port/database",
                "metastore.dsn",
            )
        if hosts is not None:
            raise _Problem("only for metastore.type zookeeper; mysql uses dsn", "metastore.hosts")
        in_dsn = urlsplit(dsn).username
        dsn_user = unquote(in_dsn) if in_dsn else None
        if user and dsn_user and user != dsn_user:
            raise _Problem("differs from the user in metastore.dsn", "metastore.user")
        user = user or dsn_user
        if not user:
            raise _Problem(
                "required for mysql: in metastore.dsn (mysql://user@host/...) or here",
                "metastore.user",
            )
    else:
        if not hosts:
            raise _Problem(
                "required when metastore.type is zookeeper: a list of at least one host:port",
                "metastore.hosts",
            )
        if dsn is not None:
            raise _Problem("only for metastore.type mysql; zookeeper uses hosts", "metastore.dsn")
    extra = {k: v[k] for k in ("prefix", "connect_timeout") if k in v}
    return MetastoreConfig(
        type=kind,
        dsn=dsn,
        hosts=tuple(hosts or ()),
        user=user,
        password=_password(v, "metastore", user, base, env, PASSWORD_ENV),
        tls=_tls(v.get("tls") or {}, base),
        **extra,
    )


def _smtp(v: Mapping[str, Any], base: Path, env: Mapping[str, str]) -> SMTPConfig:
    if v.get("host") is None:
        raise _Problem("required when alerts.smtp is given", "alerts.smtp.host")
    if not v.get("to"):
        raise _Problem("required when alerts.smtp is given: at least one address", "alerts.smtp.to")
    if v.get("starttls") and v.get("ssl"):
        raise _Problem("choose starttls or ssl, not both", "alerts.smtp.ssl")
    extra = {k: v[k] for k in ("port", "starttls", "ssl") if k in v}
    if "from" in v:
        extra["sender"] = v["from"]
    return SMTPConfig(
        host=v["host"],
        to=v["to"],
        user=v.get("user"),
        password=_password(v, "alerts.smtp", v.get("user"), base, env, SMTP_PASSWORD_ENV),
        **extra,
    )


def _build(raw: Mapping[Any, Any], path: Path, env: Mapping[str, str]) -> Config:
    v = _walk(raw, _SCHEMA, "")
    base = path.absolute().parent
    timings = Timings(**(v.get("timings") or {}))
    problems = check_timings(timings)
    if problems:
        raise _Problem(problems[0])  # names its keys already
    alerts = v.get("alerts") or {}
    smtp = alerts.get("smtp")
    metrics = v.get("metrics")
    top: dict[str, Any] = {k: v[k] for k in ("node_name", "masters_group") if k in v}
    top |= {k: _resolve(base, v[k]) for k in ("inventory", "state_dir") if k in v}
    return Config(
        path=path,
        metastore=_metastore(v.get("metastore") or {}, base, env),
        timings=timings,
        service=ServiceConfig(**(v.get("service") or {})),
        alerts=AlertsConfig(
            smtp=_smtp(smtp, base, env) if smtp is not None else None,
            **{k: alerts[k] for k in ("after_failed_polls", "webhook_url") if k in alerts},
        ),
        logging=LoggingConfig(**(v.get("logging") or {})),
        metrics_listen=metrics.get("listen") if metrics else None,
        **top,
    )


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (plain YAML silently keeps the last one)."""


def _no_duplicates(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: explicit keys override it
            continue
        key = loader.construct_object(key_node)
        try:
            duplicate = key in seen
        except TypeError:  # an unhashable key; construct_mapping reports it
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def _parse_yaml(text: str, path: Path) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = " ".join(str(exc.problem or exc.context).split())
        raise ConfigError(f"{path}: {where}not valid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None


def load_config(path: Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate one config file; raise :class:`ConfigError` (one line) if it is bad.

    `env` supplies the password variables (default: ``os.environ``).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    raw = _parse_yaml(text, path)
    if not isinstance(raw, dict):
        got = "an empty file" if raw is None else _kind(raw)
        raise ConfigError(f"{path}: expected a mapping of settings at the top level, got {got}")
    try:
        return _build(raw, path, os.environ if env is None else env)
    except _Problem as p:
        raise ConfigError(p.line(path)) from None


# ---------------------------------------------------------------------------------------------
# The sample file written by `ha-toolkit init`.

_SAMPLE_HEADER = """\
# ha-toolkit controller configuration; reference: docs/configuration.md
# A key written as a comment is unset or takes the default shown; uncomment it to change it.
# Relative paths are resolved against the directory of this file.
# Secrets: use a password_file (not world-readable) or the environment, not inline passwords.
"""


def _inline(value: Any) -> str:
    """One YAML value on one line, quoted where YAML needs it."""
    if isinstance(value, tuple):
        value = list(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _render(section: _Section, values: Mapping[str, Any], indent: str) -> tuple[list[str], bool]:
    """The lines for `section`, and whether any key in it is active (not commented out)."""
    lines: list[str] = []
    any_active = False
    for name, spec in section.keys.items():
        if not indent:
            lines.append("")
        lines += [f"{indent}# {line}" for line in spec.doc.splitlines()]
        if isinstance(spec, _Section):
            body, active = _render(spec, values.get(name) or {}, indent + "  ")
            # A section with nothing active is written as a comment too: `smtp:` alone would
            # mean "no smtp", but `metastore:` alone would be an error, and that is confusing.
            lines.append(f"{indent}{name}:" if active else f"{indent}# {name}:")
            lines += body
        else:
            active = name in values or spec.active
            line = f"{name}: {_inline(values.get(name, spec.example))}"
            lines.append(f"{indent}{line}" if active else f"{indent}# {line}")
        any_active = any_active or active
    return lines, any_active


def write_sample_config(path: Path, values: Mapping[str, Any] | None = None) -> None:
    """Write a commented sample config to `path` (mode 0600), with `values` (the file's layout,
    nested) filled in. Refuses to overwrite a file. The result loads once the required
    values (metastore.dsn or metastore.hosts) are given."""
    values = dict(values or {})
    try:
        _walk(values, _SCHEMA, "")  # unknown keys and bad types fail here, not at first load
    except _Problem as p:
        raise ConfigError(p.line(path)) from None
    lines, _ = _render(_SCHEMA, values, "")
    text = _SAMPLE_HEADER + "\n".join(lines) + "\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # O_EXCL: no overwrite
    except FileExistsError:
        raise ConfigError(f"{path}: already exists; not overwriting it") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        os.fchmod(fd, 0o600)  # exactly 0600 whatever the umask: it may hold a password
        out.write(text)


# ---------------------------------------------------------------------------------------------
# Migration from the 2017 airflow-scheduler-failover-controller ([scheduler_failover]).


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
    return _tidy(value)


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
    return {k: _tidy(v) for k, v in changed.items()}


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
            metastore["hosts"] = list(_list_of(_host_port, "host:port")(hosts))
        except _Problem as p:
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
