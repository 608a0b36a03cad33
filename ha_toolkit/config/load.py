"""Reading a config file: YAML, the schema (model.py), the rules between keys, and secrets.

Every problem is one line naming the file, the dotted key and what was expected
(:class:`ConfigError`); the CLI exits 2 on it. Secrets (passwords) never appear in an
error message: a wrong-typed one is described by its type, a missing password file is
not named (a password may have been pasted there), a DSN or URL is never echoed.

A key that is no longer used (:data:`DEPRECATED`) is ignored with a warning in
``Config.warnings``, so files written for an older version keep loading.
"""

from __future__ import annotations

import difflib
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

from ha_toolkit.config.checks import PASSWORD_ENV, SMTP_PASSWORD_ENV, Problem, kind_of, show
from ha_toolkit.config.model import (
    AlertsConfig,
    Config,
    LoggingConfig,
    MetastoreConfig,
    MetricsConfig,
    ServiceConfig,
    SMTPConfig,
    Timings,
    TLSConfig,
)
from ha_toolkit.config.schema import Section, dotted_keys, entries
from ha_toolkit.config.timing import check_timings

# Keys that were once part of the file: dotted key -> what to do about it.
DEPRECATED = {
    "state_dir": "ignored: it was never used (node-action keeps the fencing epoch in "
    "/var/lib/ha-toolkit); remove it",
}


class ConfigError(Exception):
    """One line: '<file>: <key>: <what was expected>'."""


def known_keys() -> list[str]:
    """Every key of the file, dotted (``metastore.tls.enabled``), in file order."""
    return dotted_keys(Config)


# -- the schema ---------------------------------------------------------------------------------
def _unknown_key(key: object, section: type, prefix: str) -> str:
    names = list(entries(section))
    close = difflib.get_close_matches(str(key), names, n=1)
    if close:
        return f"unknown key; did you mean {prefix}{close[0]}?"
    elsewhere = [k for k in known_keys() if k.endswith(f".{key}")]
    if elsewhere:
        return f"unknown key here; did you mean {elsewhere[0]}?"
    return f"unknown key; expected one of: {', '.join(names)}"


def walk(raw: Mapping[Any, Any], section: type, prefix: str, warnings: list[str]) -> dict[str, Any]:
    """Check every key against the dataclass `section`; return the converted values of the
    keys given, by their name in the file. Deprecated keys are left out, with a warning."""
    known = entries(section)
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"{prefix}{key if isinstance(key, str) else show(key)}"  # `yes:` is a bool key
        if name in DEPRECATED:
            warnings.append(f"{name}: {DEPRECATED[name]}")
            continue
        entry = known.get(key) if isinstance(key, str) else None
        if entry is None:
            raise Problem(_unknown_key(key, section, prefix), name)
        spec = entry.spec
        if isinstance(spec, Section):
            if value is None:  # `timings:` with everything under it commented out
                out[key] = None if spec.optional else {}
            elif isinstance(value, dict):
                out[key] = walk(value, spec.cls, f"{name}.", warnings)
            else:
                raise Problem(f"expected a mapping, got {show(value)}", name)
        elif value is None and spec.nullable:
            out[key] = None
        else:
            try:
                out[key] = spec.check(value)
            except Problem as p:
                raise Problem(p.message, name) from None
    return out


# -- files and secrets --------------------------------------------------------------------------
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
        raise Problem(f"expected an existing file, but {shown} does not exist", key) from None
    except OSError as exc:
        raise Problem(f"cannot read {path}: {exc.strerror}", key) from None
    if not stat.S_ISREG(st.st_mode):
        raise Problem(f"expected a regular file, got {path} which is not one", key)
    if secret and st.st_mode & 0o004:
        raise Problem(
            f"secrets must not be world-readable: {path} has mode "
            f"{stat.S_IMODE(st.st_mode):04o} (chmod o-rwx {path})",
            key,
        )
    if not os.access(path, os.R_OK):
        raise Problem(f"cannot read {path}: permission denied", key)


def _read_secret(path: Path, key: str) -> str:
    _check_file(path, key, secret=True)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise Problem(f"cannot read {path}: {exc.strerror}", key) from None
    except UnicodeDecodeError:
        raise Problem(f"{path} is not UTF-8 text", key) from None
    secret = text.rstrip("\r\n")  # `echo pw > file` and editors add a newline
    if not secret:
        raise Problem(f"{path} is empty", key)
    return secret


def _password(
    v: Mapping[str, Any],
    prefix: str,
    user: str | None,
    base: Path,
    env: Mapping[str, str],
    var: str,
) -> tuple[str | None, str | None]:
    """(password, password_file): password_file, else inline password, else the environment
    (only when there is a user: a stray variable must not turn on a login nobody configured)."""
    inline, file = v.get("password"), v.get("password_file")
    if inline is not None and file is not None:
        raise Problem("give either password or password_file, not both", f"{prefix}.password")
    if (inline is not None or file is not None) and not user:
        raise Problem("required when a password is given", f"{prefix}.user")
    if file is not None:
        path = _resolve(base, file)
        return _read_secret(path, f"{prefix}.password_file"), str(path)
    if inline is not None:
        return str(inline), None
    return ((env.get(var) or None) if user else None), None


# -- the rules between keys ---------------------------------------------------------------------
def _tls(v: Mapping[str, Any], base: Path) -> TLSConfig:
    files = {k: _resolve(base, v[k]) for k in ("ca_file", "cert_file", "key_file") if v.get(k)}
    if ("cert_file" in files) != ("key_file" in files):
        missing = "key_file" if "cert_file" in files else "cert_file"
        other = "cert_file" if missing == "key_file" else "key_file"
        raise Problem(f"required with metastore.tls.{other}", f"metastore.tls.{missing}")
    enabled = bool(v.get("enabled", False))
    if enabled:  # the first connection needs them: say so now rather than at 3 a.m.
        for k, p in files.items():
            _check_file(p, f"metastore.tls.{k}", secret=k == "key_file")
    return TLSConfig(enabled=enabled, **{k: str(p) for k, p in files.items()})


def _metastore(v: Mapping[str, Any], base: Path, env: Mapping[str, str]) -> MetastoreConfig:
    kind = v.get("type")
    if kind is None:
        raise Problem("required: mysql or zookeeper", "metastore.type")
    user: str | None = v.get("user")
    dsn, hosts = v.get("dsn"), v.get("hosts")
    if kind == "mysql":
        if dsn is None:
            raise Problem(
                "required when metastore.type is mysql: mysql://user@host:port/database",
                "metastore.dsn",
            )
        if hosts is not None:
            raise Problem("only for metastore.type zookeeper; mysql uses dsn", "metastore.hosts")
        in_dsn = urlsplit(dsn).username
        dsn_user = unquote(in_dsn) if in_dsn else None
        if user and dsn_user and user != dsn_user:
            raise Problem("differs from the user in metastore.dsn", "metastore.user")
        user = user or dsn_user
        if not user:
            raise Problem(
                "required for mysql: in metastore.dsn (mysql://user@host/...) or here",
                "metastore.user",
            )
    else:
        if not hosts:
            raise Problem(
                "required when metastore.type is zookeeper: a list of at least one host:port",
                "metastore.hosts",
            )
        if dsn is not None:
            raise Problem("only for metastore.type mysql; zookeeper uses hosts", "metastore.dsn")
    password, password_file = _password(v, "metastore", user, base, env, PASSWORD_ENV)
    extra = {k: v[k] for k in ("prefix", "connect_timeout") if k in v}
    return MetastoreConfig(
        type=kind,
        dsn=dsn,
        hosts=tuple(hosts or ()),
        user=user,
        password_file=password_file,
        password=password,
        tls=_tls(v.get("tls") or {}, base),
        **extra,
    )


def _smtp(v: Mapping[str, Any], base: Path, env: Mapping[str, str]) -> SMTPConfig:
    if v.get("host") is None:
        raise Problem("required when alerts.smtp is given", "alerts.smtp.host")
    if not v.get("to"):
        raise Problem("required when alerts.smtp is given: at least one address", "alerts.smtp.to")
    if v.get("starttls") and v.get("ssl"):
        raise Problem("choose starttls or ssl, not both", "alerts.smtp.ssl")
    extra = {k: v[k] for k in ("port", "starttls", "ssl") if k in v}
    if "from" in v:
        extra["sender"] = v["from"]
    password, password_file = _password(
        v, "alerts.smtp", v.get("user"), base, env, SMTP_PASSWORD_ENV
    )
    return SMTPConfig(
        host=v["host"],
        to=v["to"],
        user=v.get("user"),
        password_file=password_file,
        password=password,
        **extra,
    )


def _build(raw: Mapping[Any, Any], path: Path, env: Mapping[str, str]) -> Config:
    warnings: list[str] = []
    v = walk(raw, Config, "", warnings)
    base = path.absolute().parent
    timings = Timings(**(v.get("timings") or {}))
    problems = check_timings(timings)
    if problems:
        raise Problem(problems[0])  # names its keys already
    alerts = v.get("alerts") or {}
    smtp = alerts.get("smtp")
    top: dict[str, Any] = {k: v[k] for k in ("node_name", "masters_group") if k in v}
    if "inventory" in v:
        top["inventory"] = _resolve(base, v["inventory"])
    metastore = _metastore(v.get("metastore") or {}, base, env)
    if not metastore.connect_timeout < timings.watchdog:
        # A call that waits out its timeout must end before the watchdog that was fed
        # just before it fires, or a slow metastore restarts a healthy controller.
        raise Problem(
            f"must be less than timings.watchdog ({metastore.connect_timeout:g} >= "
            f"{timings.watchdog:g})",
            "metastore.connect_timeout",
        )
    return Config(
        path=path,
        metastore=metastore,
        timings=timings,
        service=ServiceConfig(**(v.get("service") or {})),
        alerts=AlertsConfig(
            smtp=_smtp(smtp, base, env) if smtp is not None else None,
            **{
                k: alerts[k]
                for k in ("after_failed_polls", "recovery_after", "webhook_url")
                if k in alerts
            },
        ),
        logging=LoggingConfig(**(v.get("logging") or {})),
        metrics=MetricsConfig(**(v.get("metrics") or {})),
        warnings=tuple(f"{path}: {w}" for w in warnings),
        **top,
    )


# -- YAML ---------------------------------------------------------------------------------------
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
        got = "an empty file" if raw is None else kind_of(raw)
        raise ConfigError(f"{path}: expected a mapping of settings at the top level, got {got}")
    try:
        return _build(raw, path, os.environ if env is None else env)
    except Problem as p:
        raise ConfigError(p.line(path)) from None
