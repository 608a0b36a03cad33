"""How a config key is declared: once, on the dataclass field that holds its value.

``field(default=..., metadata=key(check, doc, ...))`` declares a key of the file, and
``field(..., metadata=section(Cls, doc))`` a section whose keys are the fields of
``Cls``. The dataclasses in model.py are the whole schema: the loader (load.py) checks a
file against it, the sample file (sample.py) and the key tables of docs/configuration.md
(docs.py) are written from it. A field without such metadata (``Config.path``) is not a
key of the file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ha_toolkit.config.checks import Check

_SPEC = "ha_toolkit.config"  # the metadata entry that holds a field's Key or Section


@dataclass(frozen=True)
class Key:
    check: Check
    doc: str  # the comment above the key in the sample, and its meaning in the docs
    name: str | None = None  # the key in the file, when not the field's name
    active: bool = True  # in the sample: written with its default; False: as a comment
    example: Any = None  # the sample's value for a key written as a comment (if not the default)
    nullable: bool = False  # null is allowed and means "unset"
    default_doc: str | None = None  # the docs' default column, when not the default itself


@dataclass(frozen=True)
class Section:
    cls: type
    doc: str
    name: str | None = None
    optional: bool = False  # null or omitted means "off" (None), not "all defaults"


def key(
    check: Check,
    doc: str,
    *,
    name: str | None = None,
    active: bool = True,
    example: Any = None,
    nullable: bool = False,
    default_doc: str | None = None,
) -> dict[str, Key]:
    """Field metadata that makes the field a key of the file."""
    return {_SPEC: Key(check, doc, name, active, example, nullable, default_doc)}


def section(
    cls: type, doc: str, *, name: str | None = None, optional: bool = False
) -> dict[str, Section]:
    """Field metadata that makes the field a section holding the keys of `cls`."""
    return {_SPEC: Section(cls, doc, name, optional)}


@dataclass(frozen=True)
class Entry:
    """One key or section of a section, in file order."""

    name: str  # as in the file
    field: dataclasses.Field[Any]
    spec: Key | Section

    def default(self) -> Any:
        """The field's default value (dataclasses.MISSING when it has none)."""
        if self.field.default is not dataclasses.MISSING:
            return self.field.default
        if self.field.default_factory is not dataclasses.MISSING:
            return self.field.default_factory()
        return dataclasses.MISSING


def spec_of(f: dataclasses.Field[Any]) -> Key | Section | None:
    """The declaration of a dataclass field, or None when it is not a key of the file."""
    spec = f.metadata.get(_SPEC)
    return spec if isinstance(spec, Key | Section) else None


def entries(cls: type) -> Mapping[str, Entry]:
    """The keys and sections of `cls`, by their name in the file, in file order."""
    out: dict[str, Entry] = {}
    for f in dataclasses.fields(cls):
        spec = spec_of(f)
        if spec is not None:
            out[spec.name or f.name] = Entry(spec.name or f.name, f, spec)
    return out


def dotted_keys(cls: type, prefix: str = "") -> list[str]:
    """Every key under `cls`, dotted (``metastore.tls.enabled``), in file order."""
    out: list[str] = []
    for name, entry in entries(cls).items():
        if isinstance(entry.spec, Section):
            out += dotted_keys(entry.spec.cls, f"{prefix}{name}.")
        else:
            out.append(f"{prefix}{name}")
    return out
