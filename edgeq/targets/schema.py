"""The target file schema: every key, its type and choices, and the checks of one file."""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import InternalError, TargetFileError
from ..types import IOType, QuantMode
from .model import _ARCH_ALIASES, _NAME_RE, _VERSION_RE, ARCHES, AUTO, DELEGATES, RUNTIMES, TRANSPORTS, UNKNOWN

# --------------------------------------------------------------------------- the schema


@dataclasses.dataclass(frozen=True)
class _Field:
    kind: str  # "str" | "int" | "number" | "bool" | "list" | "table" | "versions" (a table of runtime name -> version)
    required: bool = True
    choices: tuple[str, ...] = ()  # for "str" values and "list" items
    special: tuple[str, ...] = ()  # sentinel strings accepted instead of the value: AUTO, UNKNOWN
    minimum: int | None = None  # "number": the value must be greater than this
    maximum: int | None = None
    non_empty: bool = False  # lists
    inherited: bool = True  # merged from the parent by `extends`
    what: str = "value"  # noun for choice errors: "runtime", "delegate", ...


_QUANT_MODES = tuple(m.value for m in QuantMode)
_IO_TYPES = tuple(t.value for t in IOType)

_SCHEMA: dict[str, _Field] = {
    "name": _Field("str", inherited=False),
    "description": _Field("str", inherited=False),
    "extends": _Field("str", required=False, inherited=False),
    "arch": _Field("str", choices=ARCHES, special=(AUTO,), what="architecture"),
    "memory_mb": _Field("int", minimum=1, special=(AUTO, UNKNOWN)),
    "power_w": _Field("number", required=False, minimum=0, maximum=10_000),
    "os": _Field("str", special=(AUTO,)),
    "python": _Field("str", special=(AUTO,)),
    "runtimes": _Field("list", choices=RUNTIMES, non_empty=True, what="runtime"),
    "runtime_versions": _Field("versions", required=False, choices=RUNTIMES, what="runtime"),
    "default_threads": _Field("int", minimum=1, maximum=1024, special=(AUTO,)),
    "delegates": _Field("list", choices=DELEGATES, what="delegate"),
    "cpu": _Field("table"),
    "cpu.model": _Field("str", special=(AUTO,)),
    "cpu.soc": _Field("str", required=False),
    "cpu.isa": _Field("str", required=False),
    "cpu.cores": _Field("int", minimum=1, maximum=4096, special=(AUTO, UNKNOWN)),
    "cpu.max_clock_mhz": _Field("int", minimum=1, maximum=100_000, special=(AUTO, UNKNOWN)),
    "cpu.features": _Field(
        "list", special=(AUTO,), what="feature"
    ),  # vocabulary depends on arch: checked after merging
    "quantization": _Field("table"),
    "quantization.modes": _Field("list", choices=_QUANT_MODES, non_empty=True, what="mode"),
    "quantization.io_types": _Field("list", choices=_IO_TYPES, non_empty=True, what="I/O type"),
    "quantization.per_channel": _Field("bool"),
    "quantization.notes": _Field("list", required=False),
    "deploy": _Field("table"),
    "deploy.transport": _Field("str", choices=TRANSPORTS, what="transport"),
    "deploy.user": _Field("str", required=False),
    "deploy.port": _Field("int", required=False, minimum=1, maximum=65535),
    "deploy.remote_dir": _Field("str", required=False),
    "deploy.keep_versions": _Field("int", required=False, minimum=1, maximum=1000),
    "deploy.prometheus_dir": _Field("str", required=False),
}
_DEPLOY_DEFAULTS = {"user": None, "port": 22, "remote_dir": "edgeq", "keep_versions": 3, "prometheus_dir": None}


def _is_table(key: str) -> bool:
    """Tables merge key by key under `extends` (a "versions" table too: one runtime's version at a time)."""
    spec = _SCHEMA.get(key)
    return spec is not None and spec.kind in ("table", "versions")


def _inherited(key: str) -> bool:
    spec = _SCHEMA.get(key)
    return spec is None or spec.inherited


def _accepts(key: str, sentinel: str) -> bool:
    spec = _SCHEMA.get(key)
    return spec is not None and sentinel in spec.special


def _children(table: str) -> list[str]:
    """Schema keys directly inside ``table`` ("" for the top level), as full key paths."""
    depth = 0 if not table else table.count(".") + 1
    prefix = f"{table}." if table else ""
    return [k for k in _SCHEMA if k.startswith(prefix) and k.count(".") == depth]


# --------------------------------------------------------------------------- reading and checking one file


class _Problems:
    """Problems found in one file; raised together as one TargetFileError."""

    def __init__(self, path: Path):
        self.path = path
        self.items: list[tuple[str, str | None]] = []

    def add(self, message: str, hint: str | None = None) -> None:
        self.items.append((message, hint))

    def raise_if_any(self) -> None:
        if not self.items:
            return
        if len(self.items) == 1:
            message, hint = self.items[0]
            raise TargetFileError(f"{self.path}: {message}", hint=hint)
        lines = "\n".join(f"  - {message}" for message, _ in self.items)
        raise TargetFileError(f"{self.path}: {len(self.items)} problems:\n{lines}")


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    return type(value).__name__  # TOML dates and times


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = repr(value)
    else:
        text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _suggest(word: str, candidates: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return close[0] if close else None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TargetFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TargetFileError(f"{path}: is a directory, not a target file") from None
    except OSError as exc:
        raise TargetFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TargetFileError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # The message ends with "(at line L, column C)".
        raise TargetFileError(f"{path}: invalid TOML: {exc}", hint="see https://toml.io for the syntax") from None


def _check_file(path: Path, raw: Mapping[str, Any]) -> None:
    """Everything that can be checked in one file alone: keys, types, values, the name."""
    problems = _Problems(path)
    _check_table(raw, "", problems)
    parent = raw.get("extends")
    if isinstance(parent, str) and parent and not _NAME_RE.match(parent):
        problems.add(
            f"extends: {parent!r} is not a target name",
            hint="extends takes the name of another target (its file name without .toml), not a path",
        )
    name = raw.get("name")
    if isinstance(name, str) and name:
        if not _NAME_RE.match(name):
            problems.add(
                f"name: {name!r} is not a valid target name",
                hint="use lowercase letters, digits, '-' and '_', starting with a letter or digit",
            )
        elif name != path.stem:
            problems.add(
                f"name = {name!r} does not match the file name '{path.name}'",
                hint=f"a target's name must equal its file name without .toml: rename the file to {name}.toml or set name = {path.stem!r}",
            )
    problems.raise_if_any()


def _check_table(table: Mapping[str, Any], prefix: str, problems: _Problems) -> None:
    valid = _children(prefix)
    for key, value in table.items():
        full = f"{prefix}.{key}" if prefix else key
        spec = _SCHEMA.get(full)
        if spec is None:
            problems.add(*_unknown_key(full, valid))
            continue
        if spec.kind == "table":
            if not isinstance(value, dict):
                problems.add(f"{full}: expected a table ([{full}]), got {_type_name(value)} {_shown(value)}")
            else:
                _check_table(value, full, problems)
            continue
        problem = _check_value(full, spec, value)
        if problem:
            problems.add(*problem)


def _unknown_key(full: str, valid: list[str]) -> tuple[str, str | None]:
    leaf = full.rsplit(".", 1)[-1]
    close = _suggest(full, valid)
    if close is None:
        # A key in the wrong table: `cores = 4` at the top instead of under [cpu].
        elsewhere = [k for k in _SCHEMA if k.rsplit(".", 1)[-1] == leaf and k != full]
        close = elsewhere[0] if elsewhere else None
    message = f"unknown key '{full}'."
    if close:
        message += f" Did you mean '{close}'?"
    table = full.rsplit(".", 1)[0] if "." in full else ""
    where = f"[{table}]" if table else "the top level"
    names = ", ".join(k.rsplit(".", 1)[-1] for k in valid)
    return message, f"valid keys at {where}: {names}"


def _check_value(key: str, spec: _Field, value: Any) -> tuple[str, str | None] | None:
    if isinstance(value, str) and value in spec.special:
        return None
    specials = " or ".join(repr(s) for s in spec.special)
    also = f" (or {specials})" if specials else ""
    if spec.kind == "str":
        if not isinstance(value, str):
            return f"{key}: expected a string{also}, got {_type_name(value)} {_shown(value)}", None
        if not value.strip():
            return f"{key}: must not be empty", None
        if spec.choices and value not in spec.choices:
            return _bad_choice(key, spec, value)
        return None
    if spec.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{key}: expected an integer{also}, got {_type_name(value)} {_shown(value)}", None
        if spec.minimum is not None and value < spec.minimum:
            return f"{key}: must be at least {spec.minimum}, got {value}", None
        if spec.maximum is not None and value > spec.maximum:
            return f"{key}: must be at most {spec.maximum}, got {value}", None
        return None
    if spec.kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{key}: expected a number, got {_type_name(value)} {_shown(value)}", None
        if not math.isfinite(value):
            return f"{key}: must be a finite number, got {_shown(value)}", None
        if spec.minimum is not None and value <= spec.minimum:
            return f"{key}: must be greater than {spec.minimum}, got {_shown(value)}", None
        if spec.maximum is not None and value > spec.maximum:
            return f"{key}: must be at most {spec.maximum}, got {_shown(value)}", None
        return None
    if spec.kind == "versions":
        if not isinstance(value, dict):
            return (
                f'{key}: expected a table of {spec.what} = "version" ([{key}]), got {_type_name(value)} {_shown(value)}',
                None,
            )
        for name, version in value.items():
            if name not in spec.choices:
                return _bad_choice(key, spec, name)
            if not isinstance(version, str):
                return (
                    f'{key}.{name}: expected a version string such as "2.14.0", got {_type_name(version)} {_shown(version)}',
                    None,
                )
            if not _VERSION_RE.match(version):
                return (
                    f"{key}.{name}: {version!r} is not a version",
                    'write digits separated by dots, such as "2.14.0" (a suffix like .post1 is left out)',
                )
        return None
    if spec.kind == "bool":
        if not isinstance(value, bool):
            return f"{key}: expected true or false, got {_type_name(value)} {_shown(value)}", None
        return None
    if spec.kind == "list":
        if not isinstance(value, list):
            return f"{key}: expected an array of strings{also}, got {_type_name(value)} {_shown(value)}", None
        for item in value:
            if not isinstance(item, str):
                return f"{key}: expected an array of strings, but it holds {_type_name(item)} {_shown(item)}", None
            if spec.choices and item not in spec.choices:
                return _bad_choice(key, spec, item)
        duplicates = sorted({item for item in value if value.count(item) > 1})
        if duplicates:
            return f"{key}: lists {', '.join(repr(d) for d in duplicates)} more than once", None
        if spec.non_empty and not value:
            return f"{key}: must not be empty", None
        return None
    raise InternalError(f"schema kind {spec.kind!r}")  # pragma: no cover


def _bad_choice(key: str, spec: _Field, value: str) -> tuple[str, str]:
    message = f"{key}: unknown {spec.what} {value!r}."
    alias = _ARCH_ALIASES.get(value.lower()) if key == "arch" else None
    close = alias if alias in spec.choices else _suggest(value, spec.choices)
    if close:
        message += f" Did you mean {close!r}?"
    return message, f"valid values: {', '.join(spec.choices)}"
