"""The commented sample file written by ``ha-toolkit init``, from the schema (model.py)."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ha_toolkit.config.checks import Problem
from ha_toolkit.config.load import ConfigError, walk
from ha_toolkit.config.model import Config
from ha_toolkit.config.schema import Entry, Key, Section, entries

_HEADER = """\
# ha-toolkit controller configuration; reference: docs/configuration.md
# A key written as a comment is unset or takes the default shown; uncomment it to change it.
# Relative paths are resolved against the directory of this file.
# Secrets: use a password_file (not world-readable) or the environment, not inline passwords.
"""
_WIDTH = 92  # comment lines, with their indent


def tidy(value: Any) -> Any:
    """A value as a person writes it in YAML: 10.0 -> 10, a tuple or a path as it reads."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, tuple):
        return [tidy(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def inline(value: Any) -> str:
    """One YAML value on one line, quoted where YAML needs it."""
    text = yaml.safe_dump(tidy(value), default_flow_style=True, width=10_000, sort_keys=False)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def sample_value(entry: Entry) -> Any:
    """What the sample shows for a key: its default when written as is, else its example."""
    assert isinstance(entry.spec, Key)
    if entry.spec.active or entry.spec.example is None:
        return entry.default()
    return entry.spec.example


def _comment(doc: str, indent: str) -> list[str]:
    width = max(40, _WIDTH - len(indent) - 2)
    return [f"{indent}# {line}" for line in textwrap.wrap(doc, width)]


def _render(section: type, values: Mapping[str, Any], indent: str) -> tuple[list[str], bool]:
    """The lines for `section`, and whether any key in it is active (not commented out)."""
    lines: list[str] = []
    any_active = False
    for name, entry in entries(section).items():
        if not indent:
            lines.append("")
        lines += _comment(entry.spec.doc, indent)
        if isinstance(entry.spec, Section):
            body, active = _render(entry.spec.cls, values.get(name) or {}, indent + "  ")
            # A section with nothing active is written as a comment too: `smtp:` alone would
            # mean "no smtp", but `metastore:` alone would be an error, and that is confusing.
            lines.append(f"{indent}{name}:" if active else f"{indent}# {name}:")
            lines += body
        else:
            active = name in values or entry.spec.active
            line = f"{name}: {inline(values[name] if name in values else sample_value(entry))}"
            lines.append(f"{indent}{line}" if active else f"{indent}# {line}")
        any_active = any_active or active
    return lines, any_active


def sample_text(values: Mapping[str, Any] | None = None) -> str:
    """The sample file's text, with `values` (the file's layout, nested) filled in."""
    lines, _ = _render(Config, values or {}, "")
    return _HEADER + "\n".join(lines) + "\n"


def write_sample_config(path: Path, values: Mapping[str, Any] | None = None) -> None:
    """Write a commented sample config to `path` (mode 0600), with `values` (the file's layout,
    nested) filled in. Refuses to overwrite a file. The result loads once the required
    values (metastore.dsn or metastore.hosts) are given."""
    values = dict(values or {})
    try:
        walk(values, Config, "", [])  # unknown keys and bad types fail here, not at first load
    except Problem as p:
        raise ConfigError(p.line(path)) from None
    text = sample_text(values)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # O_EXCL: no overwrite
    except FileExistsError:
        raise ConfigError(f"{path}: already exists; not overwriting it") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        os.fchmod(fd, 0o600)  # exactly 0600 whatever the umask: it may hold a password
        out.write(text)
