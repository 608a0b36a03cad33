"""Value checks for the config file: each takes the parsed YAML value and returns the converted
one, or raises :class:`Problem` with "expected ..., got ..." (the caller adds file and key).

A check also says, in a few words, what it accepts (``kind``): the type column of the key
tables in docs/configuration.md. Values are shown in messages only through :func:`show`,
never for secrets, DSNs or URLs (they may carry a password or token).
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

PASSWORD_ENV = "HA_TOOLKIT_METASTORE_PASSWORD"
SMTP_PASSWORD_ENV = "HA_TOOLKIT_SMTP_PASSWORD"


class Problem(Exception):
    """One thing wrong with the file: its message, and the dotted key when known."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.key = key

    def line(self, path: Path) -> str:
        return f"{path}: {self.key}: {self.message}" if self.key else f"{path}: {self.message}"


@dataclass(frozen=True)
class Check:
    """Converts one value or raises :class:`Problem`; `kind` is what it accepts, for people."""

    kind: str
    convert: Callable[[Any], Any]

    def __call__(self, value: Any) -> Any:
        return self.convert(value)


def kind_of(value: object) -> str:
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


def show(value: object) -> str:
    """A value as the user wrote it, for "got ..." (never used for secrets)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, int | float):
        return repr(value)
    return kind_of(value)


def number(expected: str, ok: Callable[[float], bool], kind: str) -> Check:
    def convert(value: Any) -> float:
        # bool is an int in Python, but `true` is never a sensible number of seconds.
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not ok(value)
        ):
            raise Problem(f"expected {expected}, got {show(value)}")
        return float(value)

    return Check(kind, convert)


def integer(low: int, high: int | None = None) -> Check:
    expected = f"an integer >= {low}" if high is None else f"an integer {low}-{high}"

    def convert(value: Any) -> int:
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < low
            or (high is not None and value > high)
        ):
            raise Problem(f"expected {expected}, got {show(value)}")
        return value

    return Check(f"integer ≥ {low}" if high is None else f"{low}-{high}", convert)


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Problem(f"expected true or false, got {show(value)}")
    return value


BOOLEAN = Check("bool", _boolean)


def string(expected: str, kind: str, pattern: str = r".+") -> Check:
    regex = re.compile(pattern)

    def convert(value: Any) -> str:
        if not isinstance(value, str) or not regex.fullmatch(value):
            raise Problem(f"expected {expected}, got {show(value)}")
        return value

    return Check(kind, convert)


def enum(*choices: str, fold_case: bool = False) -> Check:
    def convert(value: Any) -> str:
        found = value.upper() if fold_case and isinstance(value, str) else value
        if found not in choices:
            raise Problem(f"expected one of {', '.join(choices)}, got {show(value)}")
        return str(found)

    kind = " | ".join(f"`{c}`" for c in choices) + (" (any case)" if fold_case else "")
    return Check(kind, convert)


def _secret(value: Any) -> str:
    # Never show the value: only its kind. YAML reads `password: 0123` as a number, so ask
    # for quotes rather than converting it (83 would be the wrong password).
    if not isinstance(value, str) or not value:
        raise Problem(f"expected a non-empty string (quote it), got {kind_of(value)}")
    return value


SECRET = Check("string", _secret)

HOSTNAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?")


def valid_host(host: str) -> bool:
    if HOSTNAME.fullmatch(host):
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
            ok = ":" in host and valid_host(host)  # brackets are for IPv6 only
        else:
            ok = ":" not in host and valid_host(host)
        if sep and ok and port.isdigit() and 1 <= int(port) <= 65535:
            return value
    raise Problem(f"expected {expected}, got {show(value)}")


HOST_PORT = Check("`host:port` (`[v6addr]:port`)", _host_port)


def _http_url(value: Any) -> str:
    # Describe what is wrong without echoing the URL: webhook URLs often carry a token.
    expected = "an http:// or https:// URL with a host"
    if not isinstance(value, str):
        raise Problem(f"expected {expected}, got {kind_of(value)}")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise Problem(f"expected {expected}, got one with a bad host or port") from None
    if parts.scheme not in ("http", "https"):
        got = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        raise Problem(f"expected {expected}, got {got}")
    if not parts.hostname or not valid_host(parts.hostname) or port == 0:
        raise Problem(f"expected {expected}, got one with a bad host or port")
    return value


HTTP_URL = Check("http(s) URL", _http_url)


def _dsn(value: Any) -> str:
    # Never echoes the DSN: a password may have been put in it.
    expected = "expected mysql://user@host[:port]/database"
    if not isinstance(value, str):
        raise Problem(f"{expected}, got {kind_of(value)}")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise Problem(f"{expected}, got a bad host or port") from None
    if parts.password is not None:
        raise Problem(
            f"must not contain a password: put it in metastore.password_file or ${PASSWORD_ENV}"
        )
    if parts.scheme != "mysql":
        got = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        raise Problem(f"{expected}, got {got}")
    if not parts.hostname or not valid_host(parts.hostname) or port == 0:
        raise Problem(f"{expected}, got no host or a bad host or port")
    if not re.fullmatch(r"/[^/]+", parts.path):
        raise Problem(f"{expected}, got no database name")
    if parts.query or parts.fragment:
        raise Problem(f"{expected}, got a query string or fragment")
    return value


DSN = Check("`mysql://user@host[:port]/database`", _dsn)


def list_of(item: Check, expected: str, kind: str) -> Check:
    def convert(value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise Problem(f"expected a list of {expected}, got {show(value)}")
        out = []
        for n, element in enumerate(value, 1):
            try:
                out.append(item(element))
            except Problem as p:
                raise Problem(f"item {n}: {p.message}") from None
        return tuple(out)

    return Check(kind, convert)


POSITIVE = number("a number > 0", lambda x: x > 0, "number > 0")
PATH = string("a path", "path", r"[^\x00]+")
EMAIL = string("an email address", "address", r"[^@\s]+@[^@\s]+")
